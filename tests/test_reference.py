"""The search expert from any history, its values V^μ / Q^μ, and the oracle scorer."""

from __future__ import annotations

import pytest
import torch

from agentprm.envs.alfworld import AlfWorldEnv
from agentprm.envs.expert import object_type_of
from agentprm.envs.games import game_data, play_expert
from agentprm.records import State, Turn
from agentprm.reference import ExpertValues
from agentprm.scorers import ExpertQScorer, Scorer, load_scorer

GAMMA = 0.95


@pytest.fixture(scope="module")
def values(small_root):
    return ExpertValues(str(small_root), max_steps=30, gamma=GAMMA)


def _state(env: AlfWorldEnv, game_id: str, commands: list[str]) -> State:
    """The State after playing ``commands`` (as a rollout records it)."""
    step = env.reset([game_id])[0]
    history = []
    for command in commands:
        history.append(Turn(step.observation, command))
        step = env.step([command])[0]
    return State(step.task, step.observation, step.admissible_commands, tuple(history), game_id, len(history))


def test_the_expert_replays_its_stored_demonstrations(small_games):
    """observe()/decide() act as the expert that made the built-in demonstrations."""
    games = [g for g in small_games if g.split == "valid_unseen"][:12]
    for g in games:
        assert play_expert(game_data(g), g.traj_data) == g.expert_actions


def test_values_on_a_hand_checked_game(values, one_per_task_type):
    game = one_per_task_type[0]
    n = len(game.expert_actions)
    state = _state(values.env, game.game_id, [])
    assert values.turns_to_win(game.game_id, []) == n
    assert values.value(state) == pytest.approx(GAMMA ** (n - 1))
    q = values.q_values(state, [game.expert_actions[0], "look", "inventory"])
    # The expert's own first command keeps the plan; look and inventory change nothing but cost a step.
    assert q == pytest.approx([GAMMA ** (n - 1), GAMMA**n, GAMMA**n])
    # Every state on the expert's path: it wins in exactly the rest of its demonstration.
    for t in range(n):
        assert values.turns_to_win(game.game_id, list(game.expert_actions[:t])) == n - t
    last = _state(values.env, game.game_id, list(game.expert_actions[:-1]))
    assert values.q_values(last, [game.expert_actions[-1]]) == [1.0]


def test_values_respect_the_step_budget(small_root, one_per_task_type):
    game = one_per_task_type[1]
    n = len(game.expert_actions)
    tight = ExpertValues(str(small_root), max_steps=n - 1)
    exact = ExpertValues(str(small_root), max_steps=n)
    assert tight.turns_to_win(game.game_id, []) is None
    assert exact.turns_to_win(game.game_id, []) == n
    state = _state(exact.env, game.game_id, [])
    assert tight.value(state) == 0.0
    assert exact.q_values(state, ["look"]) == [0.0]  # a wasted step leaves too few


def test_the_expert_puts_down_a_wrong_object_and_still_wins(values):
    game_id = "train/look_at_obj_in_light-BaseballBat-None-None-316/trial_s0_00043_0"
    commands = ["go to shelf 1", "take box 1 from shelf 1"]
    graph, node, expert, _ = values._replay(game_id, commands)
    assert expert._holding == "box 1" and object_type_of("box 1") != expert.obj
    assert expert.decide(graph.nodes[node].admissible) == "move box 1 to shelf 1"
    assert values.turns_to_win(game_id, commands) is not None


def test_a_target_placed_before_it_was_cleaned_is_taken_again(values, small_games):
    game = next(g for g in small_games if g.split == "train" and g.task_type.startswith("pick_clean"))
    plan = list(game.expert_actions)
    take = next(i for i, c in enumerate(plan) if c.startswith("take "))
    obj, where = plan[take][len("take ") :].split(" from ")
    # Take the target and put it straight back: the expert must take it again and clean it.
    commands = [*plan[: take + 1], f"move {obj} to {where}"]
    _, _, expert, _ = values._replay(game.game_id, commands)
    assert expert._holding is None and expert._seen[obj] == where and obj not in expert._placed
    assert values.turns_to_win(game.game_id, commands) is not None


def test_the_expert_rebuilt_from_a_history_acts_as_one_that_played_it(values, one_per_task_type):
    game = one_per_task_type[5]  # pick two
    env = values.env
    expert = env.expert(game.game_id)
    step = env.reset([game.game_id])[0]
    turns = []
    while not step.done:
        command = expert.act(step.observation, step.admissible_commands)
        turns.append((step.observation, command))
        step = env.step([command])[0]
        observations = [o for o, _ in turns]
        if step.done:
            break
        rebuilt = type(expert).from_history(
            expert.task_type, expert.obj, expert.recep, expert.toggle, turns, step.observation
        )
        assert rebuilt.decide(step.admissible_commands) == expert.copy().act(
            step.observation, step.admissible_commands
        ), observations
    assert step.won


def test_the_oracle_scores_responses_by_their_command(values, one_per_task_type):
    game = one_per_task_type[0]
    scorer = ExpertQScorer(str(values.env.root), max_steps=30, gamma=GAMMA)
    assert isinstance(scorer, Scorer)
    state = _state(scorer.values.env, game.game_id, [])
    responses = [f"ACTION: {game.expert_actions[0]}", "ACTION: look", "REASON: x\nACTION: look", "nonsense"]
    (scores,) = scorer.score_batch([state], [responses])
    n = len(game.expert_actions)
    # "nonsense" parses to the empty command: the environment answers "Nothing happens.".
    assert torch.allclose(scores, torch.tensor([GAMMA ** (n - 1), GAMMA**n, GAMMA**n, GAMMA**n]))


def test_oracle_noise_reverses_a_fixed_share_of_states(small_root, values, small_games):
    env = values.env
    games = [g.game_id for g in small_games if g.split == "valid_unseen"][:24]
    states = [_state(env, g, []) for g in games]
    noisy = load_scorer(f"oracle?noise=0.35&seed=3&data={small_root}")
    flips = [noisy.flipped(s) for s in states]
    assert 0.1 <= sum(flips) / len(flips) <= 0.6
    assert flips == [load_scorer(f"oracle?noise=0.35&seed=3&data={small_root}").flipped(s) for s in states]
    clean = load_scorer(f"oracle?data={small_root}")
    for state, flipped in zip(states[:4], flips[:4], strict=True):
        responses = [f"ACTION: {c}" for c in state.admissible_commands]
        a, b = noisy.score(state, responses), clean.score(state, responses)
        assert torch.equal(a, -b if flipped else b)


def test_bad_oracle_specs_are_refused():
    with pytest.raises(ValueError, match="unknown oracle setting"):
        load_scorer("oracle?nois=0.2")
    with pytest.raises(ValueError, match="could not convert"):
        load_scorer("oracle?noise=high")
    with pytest.raises(ValueError, match=r"noise must be in \[0, 1\]"):
        load_scorer("oracle?noise=2")
    with pytest.raises(FileNotFoundError, match="not a PRM directory"):
        load_scorer("no/such/prm")


def test_a_history_that_spends_the_budget_has_no_value(small_root, one_per_task_type):
    game = one_per_task_type[0]
    values = ExpertValues(str(small_root), max_steps=3)
    state = _state(values.env, game.game_id, ["look", "look"])
    assert values.q_values(state, ["look", "inventory"]) == [0.0, 0.0]
    assert values.turns_to_win(game.game_id, ["look"] * 3) is None


def test_reference_labels_and_targets_on_a_hand_checked_episode(values, one_per_task_type):
    from agentprm.prompts import Renderer
    from agentprm.reference import label_trajectory, labelled_turns
    from agentprm.rollout import play, scripted
    from agentprm.targets import reference_lists, reference_targets

    game = one_per_task_type[0]
    n = len(game.expert_actions)
    # A look first, then the expert's plan: won in n + 1 actions.
    (traj,) = play(values.env, [game.game_id], scripted({0: ["look", *game.expert_actions]}), policy_id="p")
    assert traj.won and traj.num_actions == n + 1
    assert labelled_turns(traj, -1, seed=0) == list(range(n + 1))
    assert len(labelled_turns(traj, 2, seed=0)) == 2
    label = label_trajectory(values, traj, [0])
    v = [GAMMA ** (n - 1)] + [GAMMA ** (n - 1 - t) for t in range(n)]  # after the look, on the plan
    assert label.values == pytest.approx(tuple(v))
    assert label.taken_q == pytest.approx((GAMMA**n, *v[1:]))  # look costs one γ; then Q = V
    q0 = dict(zip(traj.steps[0].admissible_commands, label.labelled_q[0], strict=True))
    assert q0["look"] == pytest.approx(GAMMA**n) and q0[game.expert_actions[0]] == pytest.approx(v[0])

    render = Renderer(response_format="action").response
    raw, pairs = reference_targets([traj], [label], lambda c: render("", c), squash=False)
    at0 = {t.command: t.q for t in raw if t.state.turn == 0}
    # Advantages A = Q − V at s0: the expert's command 0, a look −γ^(n−1)(1 − γ).
    assert at0[game.expert_actions[0]] == pytest.approx(0.0)
    assert at0["look"] == pytest.approx(-(GAMMA ** (n - 1)) * (1 - GAMMA))
    assert all(t.q == pytest.approx(0.0) for t in raw if t.state.turn > 0)  # on the plan: A = 0
    best = {(p.chosen_command, p.rejected_command) for p in pairs}
    assert (game.expert_actions[0], "look") in best and all(p.state.turn == 0 for p in pairs)
    assert all(p.chosen_q - p.rejected_q >= 0.015 - 1e-12 for p in pairs)
    # Listwise: one list per labelled state (a revisit merged), every command with its Q^μ.
    (listed,) = reference_lists([traj, traj], [label], lambda c: render("", c))
    assert listed.state == traj.states()[0] and listed.count == 2 and listed.game_ids == (game.game_id,)
    assert listed.commands == tuple(traj.steps[0].admissible_commands)
    assert listed.qs == pytest.approx(label.labelled_q[0])
    taken = listed.commands.index("look")
    assert listed.responses[taken] == traj.steps[0].response
    pairs = enumerate(zip(listed.commands, listed.responses, strict=True))
    assert all(r == render("", c) for i, (c, r) in pairs if i != taken)
    # The labels belong to their trajectory: another trajectory's are not used.
    (other,) = play(values.env, [game.game_id], scripted({0: ["inventory"]}), policy_id="p")
    assert reference_targets([other], [label], lambda c: render("", c)) == ([], [])
    assert reference_lists([other], [label], lambda c: render("", c)) == []
