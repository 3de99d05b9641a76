"""Tests of agentprm.targets with hand-computed numbers (the arithmetic is in the comments)."""

from __future__ import annotations

import inspect
import math
from collections import Counter

import pytest

from agentprm.records import State, Step, Trajectory
from agentprm.targets import (
    PreferencePair,
    QTarget,
    count_failures,
    inverse_transitions,
    mc_q_targets,
    preference_pairs,
    shaped_q_targets,
    split_by_game,
    split_games,
    squash_targets,
    state_values,
)

TASK = "put a mug in cabinet 1."
G = 0.9


def make_traj(
    commands: list[str],
    won: bool,
    game_id: str = "g1",
    *,
    policy_id: str = "pi0",
    failure: str | None = None,
    obs: str = "o",
    tag: str = "",
) -> Trajectory:
    """A toy trajectory: observation ``f"{obs}{t}"`` at step t, response ``f"R:{command}{tag}"``.

    Two trajectories with the same ``obs`` and the same command prefix share their states (the key
    ignores ``game_id``); the last step carries reward 1.0 when won.
    """
    last = len(commands) - 1
    steps = tuple(
        Step(
            observation=f"{obs}{t}",
            admissible_commands=("a", "b", "c", "d"),
            response=f"R:{cmd}{tag}",
            reason="",
            command=cmd,
            feedback=f"{obs}{t + 1}",
            reward=1.0 if won and t == last else 0.0,
        )
        for t, cmd in enumerate(commands)
    )
    return Trajectory(game_id, "pick", TASK, steps, won, policy_id, seed=0, failure=failure)


def by_command(targets: list[QTarget]) -> dict[tuple[int, str], QTarget]:
    """Index targets by (turn, command)."""
    return {(t.state.turn, t.command): t for t in targets}


# ----------------------------------------------------------------------------- Monte-Carlo Q


def test_to_go_won_and_lost():
    won, lost = make_traj(["a", "b", "c"], True), make_traj(["a", "b", "c"], False, obs="x")
    # won, T = 3, r = 1: γ^(T−1−t) = [0.9², 0.9¹, 0.9⁰] = [0.81, 0.9, 1.0]
    assert [t.q for t in mc_q_targets([won], gamma=G)] == pytest.approx([0.81, 0.9, 1.0], abs=1e-12)
    # lost, r = 0: every contribution is 0
    assert [t.q for t in mc_q_targets([lost], gamma=G)] == [0.0, 0.0, 0.0]
    target = mc_q_targets([won], gamma=G)[0]
    assert (target.command, target.responses, target.count, target.game_ids) == ("a", ("R:a",), 1, ("g1",))
    assert target.state == won.state_at(0)


def test_from_start_won_and_lost():
    won, lost = make_traj(["a", "b", "c"], True), make_traj(["a", "b", "c"], False, obs="x")
    # won: γ^t·(2·1 − 1) = [1, 0.9, 0.81] → 0.5·(1 + x) = [1.0, 0.95, 0.905]
    won_q = [t.q for t in mc_q_targets([won], gamma=G, mode="from_start")]
    assert won_q == pytest.approx([1.0, 0.95, 0.905], abs=1e-12)
    # lost: γ^t·(2·0 − 1) = [−1, −0.9, −0.81] → 0.5·(1 − γ^t) = [0.0, 0.05, 0.095]
    lost_q = [t.q for t in mc_q_targets([lost], gamma=G, mode="from_start")]
    assert lost_q == pytest.approx([0.0, 0.05, 0.095], abs=1e-12)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="gamma"):
        mc_q_targets([], gamma=0.0)
    with pytest.raises(ValueError, match="mode"):
        mc_q_targets([], mode="start")  # type: ignore[arg-type]


def test_shared_prefix_merges_across_trajectories_and_games():
    a = make_traj(["a", "b", "c"], True, "g1", tag="#1")
    b = make_traj(["a", "d"], False, "g2", tag="#2")
    c = make_traj(["a", "d"], False, "g3", tag="#2")  # same responses as b: not repeated
    targets = mc_q_targets([a, b, c], gamma=G)
    # first-seen key order: (s0,a) (s1,b) (s2,c) from a, then (s1,d) from b
    assert [(t.state.turn, t.command) for t in targets] == [(0, "a"), (1, "b"), (2, "c"), (1, "d")]
    q = by_command(targets)
    # (s0, a): a gives γ² = 0.81, b and c give 0 (lost) → mean 0.81 / 3 = 0.27, count 3
    assert q[0, "a"].q == pytest.approx(0.27, abs=1e-12)
    assert q[0, "a"].count == 3
    assert q[0, "a"].responses == ("R:a#1", "R:a#2")
    assert q[0, "a"].game_ids == ("g1", "g2", "g3")
    assert q[0, "a"].state.game_id == "g1"  # the first-seen state
    # later keys stay separate: (s1, b) only from a → 0.9; (s1, d) from b and c → 0, count 2
    assert (q[1, "b"].q, q[1, "b"].count) == (pytest.approx(0.9), 1)
    assert (q[1, "d"].q, q[1, "d"].count, q[1, "d"].game_ids) == (0.0, 2, ("g2", "g3"))
    # from_start: (s0, a) contributions 1, −1, −1 → x = −1/3 → 0.5·(1 − 1/3) = 1/3
    fs = by_command(mc_q_targets([a, b, c], gamma=G, mode="from_start"))
    assert fs[0, "a"].q == pytest.approx(1 / 3, abs=1e-12)
    # the same turn-0 state under another command merges as another key of the same state
    assert q[1, "b"].state.key() == q[1, "d"].state.key()


def test_failures_skipped_not_counted_as_losses():
    won = make_traj(["a", "b"], True, "g1")
    broken = make_traj(["a", "b"], False, "g2", failure="sampler error")
    empty = Trajectory("g3", "pick", TASK, (), False, "pi0", seed=0)
    targets = mc_q_targets([won, broken, empty], gamma=G)
    # a loss would halve (s0, a): mean(0.9, 0) = 0.45; skipped, it stays 0.9 with count 1
    assert [(t.q, t.count) for t in targets] == [(pytest.approx(0.9), 1), (1.0, 1)]
    assert count_failures([won, broken, empty]) == 1
    values = state_values([won, broken, empty], gamma=G)
    assert [(v.v, v.count) for v in values] == [(pytest.approx(0.9), 1), (1.0, 1)]


def test_state_values():
    a = make_traj(["a", "b", "c"], True, "g1")
    b = make_traj(["a", "d"], False, "g2")
    values = state_values([a, b], gamma=G)
    # s0: a gives 0.81, b gives 0 → 0.405 (count 2); s1 (shared: same history (o0, a)): a gives 0.9,
    # b gives 0 → 0.45 (count 2); s2: a only → 1.0
    assert [v.state.turn for v in values] == [0, 1, 2]
    assert [v.v for v in values] == pytest.approx([0.405, 0.45, 1.0], abs=1e-12)
    assert [v.count for v in values] == [2, 2, 1]
    assert values[0].game_ids == ("g1", "g2")
    # from_start: s0: (1 − 1)/2 = 0 → 0.5; s1: (0.9 − 0.9)/2 = 0 → 0.5; s2: 0.81 → 0.905
    fs = state_values([a, b], gamma=G, mode="from_start")
    assert [v.v for v in fs] == pytest.approx([0.5, 0.5, 0.905], abs=1e-12)


# ----------------------------------------------------------------------------- preference pairs


def qt(state: State, command: str, q: float, game: str = "g1") -> QTarget:
    return QTarget(state, command, (f"R:{command}", f"R2:{command}"), q, 1, (game,))


def test_preference_pairs_delta_boundary_and_units():
    s = make_traj(["a"], True).state_at(0)
    assert inspect.signature(preference_pairs).parameters["delta"].default == 0.015  # = 0.03 on ±1
    # 0.7 − 0.685 = 0.014999999999999902 in floating point: exactly δ, so it counts (tolerance 1e-12)
    pairs = preference_pairs([qt(s, "a", 0.7), qt(s, "b", 0.685, "g2")], delta=0.015)
    assert pairs == [PreferencePair(s, "R:a", "R:b", "a", "b", 0.7, 0.685, ("g1", "g2"))]
    # 0.7 − 0.6851 = 0.0149 < δ: no pair, in either direction
    assert preference_pairs([qt(s, "a", 0.7), qt(s, "b", 0.6851)], delta=0.015) == []
    # equal targets never pair, even with a tiny δ
    assert preference_pairs([qt(s, "a", 0.5), qt(s, "b", 0.5)], delta=1e-15) == []


def test_preference_pairs_groups_by_state_and_orders():
    s0, s1 = make_traj(["a", "b"], True).states()
    only_one = qt(s1, "x", 0.0)  # the single command of s1: no pair, although far from s0's
    targets = [qt(s0, "a", 0.5), qt(s0, "b", 0.9), only_one, qt(s0, "c", 0.1)]
    pairs = preference_pairs(targets, delta=0.3)
    # b−a = 0.4, b−c = 0.8, a−c = 0.4 ≥ 0.3; in the order of the targets: (a,c), (b,a), (b,c)
    assert [(p.chosen_command, p.rejected_command) for p in pairs] == [("a", "c"), ("b", "a"), ("b", "c")]
    assert all(p.state == s0 for p in pairs)
    assert pairs[1].chosen == "R:b" and pairs[1].rejected == "R:a"  # first responses only
    with pytest.raises(ValueError, match="delta"):
        preference_pairs(targets, delta=0.0)
    with pytest.raises(ValueError, match="share"):
        preference_pairs([qt(s0, "a", 0.5), qt(s0, "a", 0.1)])


def test_preference_pairs_from_mc_targets():
    a = make_traj(["a", "b", "c"], True, "g1")
    b = make_traj(["a", "d"], False, "g2")
    pairs = preference_pairs(mc_q_targets([a, b], gamma=G))
    # s1 holds b (0.9) and d (0.0): one pair; s0 and s2 have a single command
    assert [(p.chosen_command, p.rejected_command, p.chosen_q, p.rejected_q) for p in pairs] == [
        ("b", "d", pytest.approx(0.9), 0.0)
    ]


# ----------------------------------------------------------------------------- inverse transitions


def sampler(calls: list[list[State]]):
    def sample_next(states):
        calls.append(list(states))
        return [f"a'@{s.observation}" for s in states]

    return sample_next


def test_inverse_transitions_alignment_terminal_and_labels():
    e1 = make_traj(["a", "b", "c"], True, "g1", policy_id="expert", obs="e")
    e2 = make_traj(["a", "b"], True, "g2", policy_id="expert", obs="f")
    lost = make_traj(["a", "b"], False, "g3", policy_id="expert", obs="l")
    broken = make_traj(["a", "b"], True, "g4", policy_id="expert", obs="k", failure="crash")
    learner = make_traj(["c", "d"], False, "g5", policy_id="pi0", obs="n")
    calls: list[list[State]] = []
    out = inverse_transitions([e1, lost, e2, broken], [learner], sampler(calls), balance=False)
    pos, neg = out[:5], out[5:]
    # one call, on the non-terminal next states of the positives only (lost and broken excluded)
    assert [[s.observation for s in c] for c in calls] == [["e1", "e2", "f1"]]
    assert [t.terminal for t in pos] == [False, False, True, False, True]
    assert [t.game_id for t in pos] == ["g1", "g1", "g1", "g2", "g2"]
    assert [t.response for t in pos] == ["R:a", "R:b", "R:c", "R:a", "R:b"]
    for t in pos:
        assert t.label == 1.0
        if t.terminal:
            assert t.next_state is None and t.next_response is None
        else:  # a' belongs to its own next state, also after e1's episode end
            assert t.next_state is not None
            assert t.next_response == f"a'@{t.next_state.observation}"
            assert t.next_state.turn == t.state.turn + 1
    # negatives keep their logged next response
    assert [(t.response, t.next_response, t.terminal, t.label) for t in neg] == [
        ("R:c", "R:d", False, 0.0),
        ("R:d", None, True, 0.0),
    ]
    assert neg[0].next_state == learner.state_at(1) and neg[0].policy_id == "pi0"


def test_inverse_transitions_sampler_length_checked():
    e1 = make_traj(["a", "b"], True, obs="e")
    with pytest.raises(ValueError, match="sample_next"):
        inverse_transitions([e1], [], lambda states: [], balance=False)


def counts(transitions, label: float) -> Counter:
    """Trajectories per policy id: each trajectory has exactly one terminal transition."""
    return Counter(t.policy_id for t in transitions if t.terminal and t.label == label)


def learners(sizes: dict[str, int]) -> list[Trajectory]:
    return [
        make_traj(["a", "b"], False, f"{p}-{i}", policy_id=p, obs=f"{p}{i}-")
        for p, n in sizes.items()
        for i in range(n)
    ]


def test_inverse_balance_per_source():
    experts = [make_traj(["a"], True, f"e{i}", policy_id="expert", obs=f"e{i}-") for i in range(7)]
    negs = learners({"p2": 2, "p0": 8, "p1": 1})
    out = inverse_transitions(experts, negs, sampler([]), seed=3)
    # n = min(7, 11) = 7; sorted sources p0, p1, p2: share 7 // 3 = 2, remainder 1 → p0 3, p1 1
    # (all it has), p2 2 (all it has); the 1 left goes to p0 → p0 4, p1 1, p2 2
    assert counts(out, 1.0) == Counter({"expert": 7})
    assert counts(out, 0.0) == Counter({"p0": 4, "p1": 1, "p2": 2})
    neg_games = [t.game_id for t in out if t.label == 0.0 and t.terminal]
    assert len(set(neg_games)) == 7  # no duplicated trajectory
    assert out == inverse_transitions(experts, negs, sampler([]), seed=3)  # deterministic
    chosen = {
        tuple(t.game_id for t in inverse_transitions(experts, negs, sampler([]), seed=s) if t.terminal)
        for s in range(10)
    }
    assert len(chosen) > 1  # the seed matters
    # more experts than learners: positives are subsampled to n = 3
    few = inverse_transitions(experts, learners({"p0": 3}), sampler([]), seed=0)
    assert counts(few, 1.0) == Counter({"expert": 3}) and counts(few, 0.0) == Counter({"p0": 3})
    # balance=False keeps all
    assert counts(inverse_transitions(experts, negs, sampler([]), balance=False), 0.0)["p0"] == 8


def test_inverse_balance_even_split():
    experts = [make_traj(["a"], True, f"e{i}", policy_id="expert", obs=f"e{i}-") for i in range(4)]
    out = inverse_transitions(experts, learners({"p0": 5, "p1": 5}), sampler([]), seed=0)
    # n = 4 over two sources of 5: 2 each (the reference drew from a duplicated union instead)
    assert counts(out, 0.0) == Counter({"p0": 2, "p1": 2})


# ----------------------------------------------------------------------------- shaped targets


V = {"o0": 0.2, "o1": 0.5, "o2": 0.1}


def test_shaped_q_targets_raw_and_squashed():
    a = make_traj(["a", "b", "c"], True, "g1")
    b = make_traj(["a", "d"], False, "g2")
    calls: list[list[str]] = []

    def values(states):
        calls.append([s.observation for s in states])
        return [V[s.observation] for s in states]

    raw = shaped_q_targets([a, b], values, gamma=G, squash=False)
    assert calls == [["o0", "o1", "o2"]]  # once, on the distinct states in first-seen order
    # a: outcomes [0.81, 0.9, 1.0]; y0 = 0.81 + 0.9·0.5 − 0.2 = 1.06; y1 = 0.9 + 0.9·0.1 − 0.5 = 0.49;
    #    y2 = 1.0 (terminal)
    # b: outcomes [0, 0]; y0 = 0 + 0.45 − 0.2 = 0.25; y1 = 0 (terminal)
    # keys: (s0,a) = mean(1.06, 0.25) = 0.655; (s1,b) = 0.49; (s2,c) = 1.0; (s1,d) = 0.0
    assert [(t.command, t.count) for t in raw] == [("a", 2), ("b", 1), ("c", 1), ("d", 1)]
    ys = [0.655, 0.49, 1.0, 0.0]
    assert [t.q for t in raw] == pytest.approx(ys, abs=1e-12)
    # squash: sorted y = [0, 0.49, 0.655, 1.0]; mean T = 2.145 / 4 = 0.53625
    # Q1 at position 3·0.25 = 0.75: 0 + 0.75·0.49 = 0.3675; Q3 at 2.25: 0.655 + 0.25·0.345 = 0.74125
    # IQR = 0.37375, k = 3 / 0.37375
    k, center = 3 / 0.37375, 0.53625
    expected = [1 / (1 + math.exp(-k * (y - center))) for y in ys]
    squashed = shaped_q_targets([a, b], values, gamma=G)
    assert [t.q for t in squashed] == pytest.approx(expected, abs=1e-12)
    assert squash_targets(raw) == squashed
    # median centre: position 1.5 → 0.49 + 0.5·0.165 = 0.5725
    median = squash_targets(raw, center="median")
    assert median[0].q == pytest.approx(1 / (1 + math.exp(-k * (0.655 - 0.5725))), abs=1e-12)
    # from_start outcome (±1, no [0, 1] map): (s2, c) = γ²·1 = 0.81 (terminal, no shaping)
    fs = shaped_q_targets([a, b], values, gamma=G, mode="from_start", squash=False)
    assert fs[2].q == pytest.approx(0.81, abs=1e-12)


def test_squash_zero_iqr_and_bad_values():
    a = make_traj(["a"], True)
    # one target: IQR = 0 → k = 1, T = y → σ(0) = 0.5
    assert shaped_q_targets([a], lambda states: [7.0])[0].q == 0.5
    with pytest.raises(ValueError, match="values"):
        shaped_q_targets([a], lambda states: [])
    with pytest.raises(ValueError, match="values"):
        shaped_q_targets([a], lambda states: [math.nan])


# ----------------------------------------------------------------------------- split by game


def test_split_games_fractions_and_determinism():
    games = [f"game-{i:02d}" for i in range(20)]
    train, val = split_games(games, val_fraction=0.15, seed=42)
    assert len(val) == 3 and len(train) == 17  # round(0.15 · 20) = 3
    assert set(train).isdisjoint(val) and set(train) | set(val) == set(games)
    assert train == sorted(train) and val == sorted(val)
    # independent of input order and repetition
    assert split_games(games[::-1] + games, 0.15, 42) == (train, val)
    assert len({tuple(split_games(games, 0.15, s)[1]) for s in range(5)}) > 1
    assert split_games(["a", "b"], 0.15)[1] != []  # at least one game in val
    assert len(split_games(["a", "b"], 0.9)[0]) == 1  # never all in val
    assert split_games(["a"], 0.5) == (["a"], [])
    assert split_games(games, 0.0) == (sorted(games), [])
    with pytest.raises(ValueError, match="val_fraction"):
        split_games(games, 1.0)


def test_split_by_game_keeps_games_whole():
    trajs = [make_traj(["a", "b"], i % 2 == 0, f"g{i % 7}", tag=str(i)) for i in range(21)]
    train, val = split_by_game(trajs, val_fraction=0.3, seed=1)
    train_games, val_games = {t.game_id for t in train}, {t.game_id for t in val}
    assert train_games.isdisjoint(val_games)
    assert len(val_games) == 2  # round(0.3 · 7) = 2
    assert len(train) + len(val) == 21 and len(val) == 6  # 3 trajectories per game
    assert train == [t for t in trajs if t.game_id in train_games]  # input order kept
    assert split_by_game(trajs, val_fraction=0.3, seed=1) == (train, val)
    # targets after the split: no train target holds a validation game
    assert all(set(t.game_ids).isdisjoint(val_games) for t in mc_q_targets(train))


# ----------------------------------------------------------------------------- branches


def test_a_branch_counts_from_its_branch_turn():
    import dataclasses

    root = make_traj(["a", "b", "c"], True)  # won: γ², γ, 1
    branch = dataclasses.replace(make_traj(["a", "b", "d", "a"], False), branch_turn=2)  # lost from turn 2
    q = by_command(mc_q_targets([root, branch], gamma=G))
    # The replayed prefix (s0, a), (s1, b) is the root's visit only: counted once, not averaged with
    # the branch's outcome (which would have halved them to 0.405 and 0.45).
    assert (q[0, "a"].count, q[0, "a"].q) == (1, pytest.approx(0.81))
    assert (q[1, "b"].count, q[1, "b"].q) == (1, pytest.approx(0.9))
    # From the branch turn on, the branch's own visits: (s2, d) and (s3, a) lost.
    assert (q[2, "c"].q, q[2, "d"].q, q[2, "d"].count) == (pytest.approx(1.0), 0.0, 1)
    assert q[3, "a"].count == 1
    values = {v.state.turn: v for v in state_values([root, branch], gamma=G)}
    assert values[0].count == 1 and values[2].count == 2  # s2: the root's and the branch's own visit
