"""Training targets computed from trajectories: pure functions (no torch, no I/O).

- :func:`mc_q_targets`: Monte-Carlo Q̂(s, a) for AgentPRM (paper Eq. 1), one :class:`QTarget` per key.
- :func:`preference_pairs`: (s, a⁺, a⁻) with Q̂(s, a⁺) − Q̂(s, a⁻) ≥ δ (relative, Bradley–Terry target).
- :func:`state_values`: V̂(s), the same estimate keyed by state only.
- :func:`shaped_q_targets`: outcome plus the shaping term γV(s') − V(s) of a reference policy's value,
  squashed to soft labels (paper §4.2, reference-policy shaping).
- :func:`reference_targets`: targets from a reference policy's values on the learner's states
  (the expert's advantage A^μ(s, a) = Q^μ(s, a) − V^μ(s), squashed; pairs ordered by Q^μ).
- :func:`inverse_transitions`: InversePRM transitions (s, a, s', a') with an expert/learner label (Eq. 9).
- :func:`split_games`, :func:`split_by_game`: the train/validation split, always by game.

Conventions shared by every function here:

- The outcome of a trajectory is r = 1 if ``trajectory.won`` else 0. A trajectory that ran out of
  actions without winning is a loss (r = 0).
- A trajectory with ``failure is not None`` broke (sampler error, engine crash, …): its outcome is
  unknown, so it is skipped, never counted as a loss. :func:`count_failures` says how many were skipped.
  Trajectories with no steps contribute nothing.
- A branch (``branch_turn = t``) replayed its root's first t turns: only its turns from t on are
  visits of their own, so the earlier ones are not counted again.
- Keys are :meth:`State.key` hashes: ``state.key(command)`` for (s, a), ``state.key()`` for s. A key
  holds the full history, so it occurs at most once per trajectory; ``game_id`` is not part of it, so
  identical states of different games merge. A merged record keeps the first-seen :class:`State`
  (hence its ``game_id``) and lists every contributing game in ``game_ids``.
- Outputs are in first-seen order of their keys, so the same input gives the same output.
- Split first (:func:`split_by_game`), then compute targets on each side separately, so that no key
  merges visits from both sides of the split.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

from agentprm.records import State, Step, Trajectory, register_record
from agentprm.reference import commands_digest

DiscountMode = Literal["to_go", "from_start"]
_TOL = 1e-12


@register_record
@dataclass(frozen=True)
class QTarget:
    """A Monte-Carlo (or shaped) target for one (state, command) key.

    Attributes:
        state: The first-seen state of the key.
        command: The normalized command.
        responses: Every distinct raw response that led to ``command`` in this state, first-seen
            order; each is a training example with the same target ``q``.
        q: The target, in [0, 1] for :func:`mc_q_targets` and squashed :func:`shaped_q_targets`.
        count: The number of trajectory visits merged into ``q``.
        game_ids: The distinct games of those visits, first-seen order.
    """

    state: State
    command: str
    responses: tuple[str, ...]
    q: float
    count: int
    game_ids: tuple[str, ...]


@register_record
@dataclass(frozen=True)
class PreferencePair:
    """Two responses at the same state whose targets differ by at least δ.

    Attributes:
        state: The state (the chosen target's state).
        chosen: The response of the better command (its first response).
        rejected: The response of the worse command (its first response).
        chosen_command: The command of ``chosen``.
        rejected_command: The command of ``rejected``.
        chosen_q: Q̂ of the chosen command.
        rejected_q: Q̂ of the rejected command.
        game_ids: The games of both targets, first-seen order.
    """

    state: State
    chosen: str
    rejected: str
    chosen_command: str
    rejected_command: str
    chosen_q: float
    rejected_q: float
    game_ids: tuple[str, ...]


@register_record
@dataclass(frozen=True)
class ValueTarget:
    """A Monte-Carlo state value V̂(s) in [0, 1].

    Attributes:
        state: The first-seen state of the key.
        v: The target.
        count: The number of trajectory visits merged into ``v``.
        game_ids: The distinct games of those visits, first-seen order.
    """

    state: State
    v: float
    count: int
    game_ids: tuple[str, ...]


@register_record
@dataclass(frozen=True)
class Transition:
    """One InversePRM transition (s, a, s', a') with its label (paper Eq. 9).

    Attributes:
        state: s_t.
        response: a_t, the raw response taken in ``state``.
        next_state: s_{t+1}, or None on the last step.
        next_response: a' at ``next_state`` (a fresh policy sample for positives, the logged next
            response for negatives), or None on the last step.
        terminal: Whether this is the last step of its trajectory.
        label: 1.0 for expert (positive) transitions, 0.0 for learner (negative) ones.
        policy_id: The policy that produced the trajectory.
        game_id: The game of the trajectory.
    """

    state: State
    response: str
    next_state: State | None
    next_response: str | None
    terminal: bool
    label: float
    policy_id: str
    game_id: str


def count_failures(trajectories: Iterable[Trajectory]) -> int:
    """The number of trajectories with ``failure is not None``, i.e. those every target function skips."""
    return sum(1 for traj in trajectories if traj.failure is not None)


def _check(gamma: float, mode: str) -> None:
    if not 0.0 < gamma <= 1.0:
        raise ValueError(f"gamma must be in (0, 1], found {gamma}")
    if mode not in ("to_go", "from_start"):
        raise ValueError(f"mode must be 'to_go' or 'from_start', found {mode!r}")


def _usable(trajectories: Iterable[Trajectory]) -> Iterator[Trajectory]:
    """The trajectories with a known outcome and at least one step."""
    return (traj for traj in trajectories if traj.failure is None and traj.steps)


def _outcome(traj: Trajectory, t: int, gamma: float, mode: DiscountMode) -> float:
    """The Monte-Carlo return credited to step ``t`` of ``traj`` (T = ``len(traj.steps)``).

    ``to_go`` (paper Eq. 1, r ∈ {0, 1} at the last step): γ^(T−1−t)·r.
    ``from_start`` (the reference code): γ^t·(2r − 1) ∈ [−1, 1].
    """
    r = 1.0 if traj.won else 0.0
    if mode == "to_go":
        return gamma ** (len(traj.steps) - 1 - t) * r
    return gamma**t * (2.0 * r - 1.0)


class _Mean:
    """Running mean of the visits of one key: the first state seen, its command, responses and games."""

    def __init__(self, state: State, command: str | None) -> None:
        self.state, self.command, self.total, self.count = state, command, 0.0, 0
        self.responses: dict[str, None] = {}
        self.games: dict[str, None] = {}

    def q_target(self, q: float) -> QTarget:
        return QTarget(
            self.state, self.command or "", tuple(self.responses), q, self.count, tuple(self.games)
        )


_Credit = Callable[[Trajectory, int, tuple[State, ...]], float]


def _merge(trajectories: Iterable[Trajectory], credit: _Credit, by_command: bool) -> list[_Mean]:
    """Accumulate ``credit(traj, t, traj.states())`` per key, in first-seen order."""
    means: dict[str, _Mean] = {}
    for traj in _usable(trajectories):
        states = traj.states()
        for t, (state, step) in enumerate(zip(states, traj.steps, strict=True)):
            if t < (traj.branch_turn or 0):
                continue  # a branch replays its root's turns before the branch turn: not new visits
            command = step.command if by_command else None
            key = state.key(command)
            if key not in means:
                means[key] = _Mean(state, command)
            m = means[key]
            m.total += credit(traj, t, states)
            m.count += 1
            m.games.setdefault(traj.game_id)
            m.responses.setdefault(step.response)
    return list(means.values())


def _remap(mode: DiscountMode) -> Callable[[float], float]:
    """The final map of a merged mean: 0.5·(x + 1) for ``from_start`` (±1 outcomes), else identity."""
    return (lambda x: 0.5 * (x + 1.0)) if mode == "from_start" else float


def mc_q_targets(
    trajectories: Iterable[Trajectory], gamma: float = 0.95, mode: DiscountMode = "to_go"
) -> list[QTarget]:
    """Monte-Carlo Q̂(s, a) for every (state, command) key of the trajectories (paper Eq. 1).

    Q̂(s, a) = (1/|G(s,a)|) Σ_{τ ∈ G(s,a)} c_τ(t), where G(s, a) is the set of trajectories whose
    step t (of T) is (s, a), i.e. the mean over visits, merged across all trajectories, and

    - ``to_go`` (default, the paper's): c_τ(t) = γ^(T−1−t)·r with r ∈ {0, 1}; Q̂ ∈ [0, 1] as is,
      and shorter paths to success score higher.
    - ``from_start`` (replicates the reference code): c_τ(t) = γ^t·(2r − 1), and the mean x is
      mapped to 0.5·(x + 1) ∈ [0, 1]; within a state the ranking is by success rate alone.

    Args:
        trajectories: Rollouts; failed ones (``failure`` set) and empty ones are skipped.
        gamma: The discount γ ∈ (0, 1].
        mode: The discounting convention above.

    Returns:
        One :class:`QTarget` per distinct key, in first-seen order.
    """
    _check(gamma, mode)
    remap = _remap(mode)
    merged = _merge(trajectories, lambda traj, t, _: _outcome(traj, t, gamma, mode), by_command=True)
    return [m.q_target(remap(m.total / m.count)) for m in merged]


def state_values(
    trajectories: Iterable[Trajectory], gamma: float = 0.95, mode: DiscountMode = "to_go"
) -> list[ValueTarget]:
    """Monte-Carlo V̂(s): :func:`mc_q_targets` keyed by ``state.key()`` instead of (state, command).

    V̂(s) = (1/|G(s)|) Σ_{τ ∈ G(s)} c_τ(t), with c_τ(t) and the ``from_start`` map as in
    :func:`mc_q_targets`.

    Returns:
        One :class:`ValueTarget` per distinct state, in first-seen order.
    """
    _check(gamma, mode)
    remap = _remap(mode)
    merged = _merge(trajectories, lambda traj, t, _: _outcome(traj, t, gamma, mode), by_command=False)
    return [ValueTarget(m.state, remap(m.total / m.count), m.count, tuple(m.games)) for m in merged]


def preference_pairs(targets: Sequence[QTarget], delta: float = 0.015) -> list[PreferencePair]:
    """Ordered pairs of commands at the same state whose targets differ by at least δ.

    For targets i ≠ j of the same state (grouped by ``state.key()``), emit (chosen = i, rejected = j)
    when Q̂_i − Q̂_j ≥ δ (the paper's condition; a difference equal to δ within 1e-12 counts).
    States with fewer than two commands give no pair. Each command contributes its first response
    (``responses[0]``); its other responses are not paired.

    Units: δ is on the scale of ``QTarget.q``, i.e. [0, 1]. The reference code's δ = 0.03 on its
    [−1, 1] scale equals δ = 0.015 here (the default).

    Args:
        targets: Q targets with distinct (state, command) keys, e.g. from :func:`mc_q_targets`.
        delta: The margin δ > 0.

    Returns:
        The pairs, by state in first-seen order, then by (i, j) in the order of ``targets``.

    Raises:
        ValueError: If δ ≤ 0 or two targets share a (state, command) key.
    """
    if not delta > 0.0:
        raise ValueError(f"delta must be > 0, found {delta}")
    groups: dict[str, list[QTarget]] = {}
    seen: set[str] = set()
    for target in targets:
        key = target.state.key(target.command)
        if key in seen:
            raise ValueError(f"two targets share the (state, command) key of command {target.command!r}")
        seen.add(key)
        groups.setdefault(target.state.key(), []).append(target)
    pairs = []
    for group in groups.values():
        for a in group:
            for b in group:
                diff = a.q - b.q
                if a is not b and diff > 0.0 and diff >= delta - _TOL:
                    games = tuple(dict.fromkeys(a.game_ids + b.game_ids))
                    pairs.append(
                        PreferencePair(
                            a.state, a.responses[0], b.responses[0], a.command, b.command, a.q, b.q, games
                        )
                    )
    return pairs


def shaped_q_targets(
    trajectories: Iterable[Trajectory],
    values: Callable[[Sequence[State]], Sequence[float]],
    gamma: float = 0.95,
    c: float = 3.0,
    center: Literal["mean", "median"] = "mean",
    *,
    mode: DiscountMode = "to_go",
    squash: bool = True,
) -> list[QTarget]:
    """Q targets shaped by the value V of a reference policy (paper §4.2, reference-policy shaping).

    Per step t of a trajectory of T steps, with o_t the outcome term of :func:`mc_q_targets`
    (``to_go``: γ^(T−1−t)·r; ``from_start``: γ^t·(2r − 1), without the [0, 1] map, as the
    reference code does):

        y_t = o_t + γ·V(s_{t+1}) − V(s_t)   for t < T − 1,      y_t = o_t   for t = T − 1,

    i.e. the outcome plus the potential-based shaping term F = γV(s') − V(s). The y_t are averaged
    per (state, command) key, then (``squash=True``) mapped to soft labels by :func:`squash_targets`.

    Args:
        trajectories: Rollouts; failed and empty ones are skipped.
        values: V on a batch of states, e.g. a value model's logits; called once, on every distinct
            state (first-seen order), and must return one finite number per state.
        gamma: The discount γ ∈ (0, 1].
        c: The squashing constant (slope c / IQR).
        center: The squashing centre T: the mean (as the reference code does) or the median.
        mode: The outcome convention.
        squash: Return the squashed labels (True) or the raw averages y (False); ``squash_targets``
            of the raw targets equals the squashed ones, so both can be had with one call of ``values``.

    Returns:
        One :class:`QTarget` per distinct key, in first-seen order.

    Raises:
        ValueError: If ``values`` returns the wrong number of values or a non-finite one.
    """
    _check(gamma, mode)
    trajs = list(_usable(trajectories))
    unique: dict[str, State] = {}
    for traj in trajs:
        for state in traj.states():
            unique.setdefault(state.key(), state)
    v = [float(x) for x in values(list(unique.values()))] if unique else []
    if len(v) != len(unique) or not all(math.isfinite(x) for x in v):
        raise ValueError(f"values must return {len(unique)} finite numbers, found {len(v)}: {v[:5]}")
    value_of = dict(zip(unique, v, strict=True))

    def credit(traj: Trajectory, t: int, states: tuple[State, ...]) -> float:
        y = _outcome(traj, t, gamma, mode)
        if t < len(states) - 1:
            y += gamma * value_of[states[t + 1].key()] - value_of[states[t].key()]
        return y

    raw = [m.q_target(m.total / m.count) for m in _merge(trajs, credit, by_command=True)]
    return squash_targets(raw, c, center) if squash else raw


def _percentile(sorted_values: Sequence[float], p: float) -> float:
    """The p-quantile (0 ≤ p ≤ 1) with linear interpolation between order statistics (numpy's default)."""
    pos = (len(sorted_values) - 1) * p
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (pos - lo) * (sorted_values[hi] - sorted_values[lo])


def squash_targets(
    targets: Sequence[QTarget], c: float = 3.0, center: Literal["mean", "median"] = "mean"
) -> list[QTarget]:
    """Map raw targets y to soft labels σ(k·(y − T)) ∈ (0, 1), as the reference shaping code does.

    T is the mean (or median) of all y, and k = c / IQR(y), with IQR = Q3 − Q1 (linear
    interpolation); k = 1 when IQR = 0.

    Args:
        targets: Raw targets, e.g. ``shaped_q_targets(..., squash=False)``.
        c: The slope constant c > 0.
        center: How T is computed.

    Returns:
        The targets with ``q`` replaced, same order.
    """
    if not c > 0.0:
        raise ValueError(f"c must be > 0, found {c}")
    if center not in ("mean", "median"):
        raise ValueError(f"center must be 'mean' or 'median', found {center!r}")
    if not targets:
        return []
    ys = sorted(t.q for t in targets)
    middle = sum(ys) / len(ys) if center == "mean" else _percentile(ys, 0.5)
    iqr = _percentile(ys, 0.75) - _percentile(ys, 0.25)
    k = c / iqr if iqr > 0.0 else 1.0
    return [
        QTarget(
            t.state,
            t.command,
            t.responses,
            0.5 * (1.0 + math.tanh(0.5 * k * (t.q - middle))),
            t.count,
            t.game_ids,
        )
        for t in targets
    ]


def inverse_transitions(
    expert: Iterable[Trajectory],
    learners: Iterable[Trajectory],
    sample_next: Callable[[Sequence[State]], Sequence[str]],
    *,
    balance: bool = True,
    seed: int = 0,
) -> list[Transition]:
    """InversePRM transitions: expert positives and learner negatives (paper Eqs. 7-9).

    Every kept trajectory of T steps gives (s_t, a_t, s_{t+1}, a_{t+1}, terminal=False) for t < T − 1
    and (s_{T−1}, a_{T−1}, None, None, terminal=True); a_t is ``steps[t].response``.

    - Positives (label 1.0): ``expert`` trajectories that were won and have no failure (others are
      skipped). Their a_{t+1} is replaced by a' ~ π_{i−1}(·|s*_{t+1}): ``sample_next`` is called once,
      on the next states of all non-terminal positives in output order, and its i-th answer goes to
      the i-th of them (not called when there is none).
    - Negatives (label 0.0): ``learners`` trajectories without failure, e.g. rollouts of every past
      policy π_{0:i−1}; they keep their logged next response (on-policy for their learner).

    ``balance=True`` subsamples whole trajectories (seeded) so that both sides keep n = min(#pos, #neg)
    trajectories; transitions are not balanced (trajectories differ in length). Negatives are drawn
    evenly across their distinct ``policy_id`` s: each gets ⌊n/m⌋ (the remainder one each, in sorted
    ``policy_id`` order); a source with too few gives all it has and the rest is shared the same way.

    Args:
        expert: Expert demonstrations.
        learners: Learner rollouts, possibly of several policies.
        sample_next: The current policy: one response per given state.
        balance: Subsample as above.
        seed: Seed of the subsampling.

    Returns:
        The positives then the negatives, each in input order of their trajectories and steps.

    Raises:
        ValueError: If ``sample_next`` does not return one response per state.
    """
    positives = [t for t in expert if t.won and t.failure is None and t.steps]
    negatives = [t for t in learners if t.failure is None and t.steps]
    if balance:
        positives, negatives = _balance(positives, negatives, random.Random(seed))
    pos = [tr for traj in positives for tr in _transitions(traj, 1.0)]
    pending = [(i, tr.next_state) for i, tr in enumerate(pos) if tr.next_state is not None]
    if pending:
        samples = list(sample_next([state for _, state in pending]))
        if len(samples) != len(pending):
            raise ValueError(f"sample_next returned {len(samples)} responses for {len(pending)} states")
        for (i, _), response in zip(pending, samples, strict=True):
            pos[i] = dataclasses.replace(pos[i], next_response=response)
    return pos + [tr for traj in negatives for tr in _transitions(traj, 0.0)]


def _transitions(traj: Trajectory, label: float) -> list[Transition]:
    states, steps, last = traj.states(), traj.steps, len(traj.steps) - 1
    return [
        Transition(
            states[t],
            steps[t].response,
            states[t + 1] if t < last else None,
            steps[t + 1].response if t < last else None,
            t == last,
            label,
            traj.policy_id,
            traj.game_id,
        )
        for t in range(traj.branch_turn or 0, last + 1)  # a branch's replayed prefix is its root's
    ]


def _balance(
    pos: list[Trajectory], neg: list[Trajectory], rng: random.Random
) -> tuple[list[Trajectory], list[Trajectory]]:
    """Keep n = min(#pos, #neg) trajectories on each side; negatives evenly per ``policy_id``."""
    n = min(len(pos), len(neg))
    if len(pos) > n:
        pos = [pos[i] for i in sorted(rng.sample(range(len(pos)), n))]
    if len(neg) > n:
        sources: dict[str, list[int]] = {}
        for i, traj in enumerate(neg):
            sources.setdefault(traj.policy_id, []).append(i)
        quota = dict.fromkeys(sorted(sources), 0)
        left, open_ = n, list(quota)
        while left > 0:
            share, extra = divmod(left, len(open_))
            for j, source in enumerate(open_):
                take = min(share + (j < extra), len(sources[source]) - quota[source])
                quota[source] += take
                left -= take
            open_ = [s for s in open_ if quota[s] < len(sources[s])]
        keep = sorted(i for s in quota for i in rng.sample(sources[s], quota[s]))
        neg = [neg[i] for i in keep]
    return pos, neg


@dataclass(frozen=True)
class _LabelledTurn:
    """One learner turn with its reference labels: V^μ(s), Q^μ of the taken command and, at a
    labelled turn, Q^μ and the response of every admissible command (else None)."""

    state: State
    step: Step
    game_id: str
    value: float
    taken_q: float
    qs: tuple[float, ...] | None
    responses: tuple[str, ...] | None


def _labelled_turns(
    trajectories: Iterable[Trajectory], labels: Iterable, response_of: Callable[[str], str]
) -> Iterator[_LabelledTurn]:
    """Every turn of the usable trajectories that have a label (matched by game, rollout index,
    branch turn and commands), a branch from its branch turn on."""
    by_key = {(lb.game_id, lb.rollout_index, lb.branch_turn, lb.commands_digest): lb for lb in labels}
    for traj in _usable(trajectories):
        label = by_key.get((traj.game_id, traj.rollout_index, traj.branch_turn, commands_digest(traj)))
        if label is None:
            continue
        states = traj.states()
        labelled = dict(zip(label.labelled_turns, label.labelled_q, strict=True))
        for t in range(traj.branch_turn or 0, len(traj.steps)):
            state, step = states[t], traj.steps[t]
            qs = labelled.get(t)
            responses = None
            if qs is not None:
                responses = tuple(
                    step.response if cmd == step.command else response_of(cmd)
                    for cmd in state.admissible_commands
                )
            yield _LabelledTurn(
                state,
                step,
                traj.game_id,
                label.values[t],
                label.taken_q[t],
                None if qs is None else tuple(qs),
                responses,
            )


@register_record
@dataclass(frozen=True)
class CommandList:
    """Every admissible command of one state with the reference policy's Q^μ of each (a listwise
    target: :class:`agentprm.objectives.ListwiseObjective`).

    Attributes:
        state: The state (first seen).
        commands: Its admissible commands.
        responses: The response text of each command (the learner's own where it took it).
        qs: Q^μ(s, c) of each command, averaged over the state's labelled visits.
        count: The number of labelled visits merged.
        game_ids: The distinct games of those visits.
    """

    state: State
    commands: tuple[str, ...]
    responses: tuple[str, ...]
    qs: tuple[float, ...]
    count: int
    game_ids: tuple[str, ...]


def reference_lists(
    trajectories: Iterable[Trajectory], labels: Iterable, response_of: Callable[[str], str]
) -> list[CommandList]:
    """Per labelled state, every admissible command and its Q^μ (the listwise view of
    :func:`reference_targets`: one softmax over a state's commands instead of its pairs).

    A state labelled on several visits (loops revisit states; Q^μ is deterministic, so they agree)
    is one list, its Q^μ averaged. Branches count from their branch turn.
    """
    merged: dict[str, list] = {}
    for turn in _labelled_turns(trajectories, labels, response_of):
        if turn.qs is None:
            continue
        key = turn.state.key()
        if key not in merged:
            merged[key] = [turn, [0.0] * len(turn.qs), 0, {}]
        entry = merged[key]
        entry[1] = [a + b for a, b in zip(entry[1], turn.qs, strict=True)]
        entry[2] += 1
        entry[3].setdefault(turn.game_id)
    return [
        CommandList(
            first.state,
            tuple(first.state.admissible_commands),
            first.responses,
            tuple(q / count for q in total),
            count,
            tuple(games),
        )
        for first, total, count, games in merged.values()
    ]


def reference_targets(
    trajectories: Iterable[Trajectory],
    labels: Iterable,
    response_of: Callable[[str], str],
    *,
    c: float = 3.0,
    delta: float = 0.015,
    squash: bool = True,
) -> tuple[list[QTarget], list[PreferencePair]]:
    """Targets from a reference policy μ's values on the learner's own states (paper §4.2 with μ
    the search expert; AggreVaTe's cost-to-go).

    ``labels`` (:class:`~agentprm.reference.ReferenceLabels`, one per trajectory, matched by game,
    rollout index, branch turn and commands) give V^μ(s_t) and Q^μ(s_t, a_t) at every turn and
    Q^μ(s_t, c) of every admissible command c at some turns. Then:

    - Q targets: the shaped advantage y = r + γV^μ(s') − V^μ(s) = Q^μ(s, a) − V^μ(s) of the taken
      command at every turn and of every labelled command, averaged per (state, command) key and
      (``squash``) mapped to soft labels by :func:`squash_targets`. The state's own value is the
      baseline, so the targets rank actions instead of valuing states.
    - Preference pairs: at every labelled turn, every two commands whose Q^μ differ by ≥ δ.

    Args:
        trajectories: Rollouts; failed and empty ones are skipped, branches count from their branch turn.
        labels: Their labels; a trajectory without one is skipped.
        response_of: The response text of a command the trajectory did not take (the taken one
            keeps its own response).
        c: The squashing constant (slope c / IQR).
        delta: The pair margin, on Q^μ's [0, 1] scale.
        squash: Map the Q targets to soft labels (else the raw advantages).

    Returns:
        The Q targets (first-seen key order) and the pairs.
    """
    means: dict[str, _Mean] = {}
    pairs: list[PreferencePair] = []

    def add(state: State, command: str, response: str, y: float, game: str) -> None:
        key = state.key(command)
        if key not in means:
            means[key] = _Mean(state, command)
        m = means[key]
        m.total += y
        m.count += 1
        m.games.setdefault(game)
        m.responses.setdefault(response)

    for turn in _labelled_turns(trajectories, labels, response_of):
        state, step, v = turn.state, turn.step, turn.value
        add(state, step.command, step.response, turn.taken_q - v, turn.game_id)
        if turn.qs is None:
            continue
        for cmd, response, q in zip(state.admissible_commands, turn.responses, turn.qs, strict=True):
            if cmd != step.command:
                add(state, cmd, response, q - v, turn.game_id)
        for i, qi in enumerate(turn.qs):
            for j, qj in enumerate(turn.qs):
                if qi - qj >= delta - _TOL:
                    cmd_i, cmd_j = state.admissible_commands[i], state.admissible_commands[j]
                    pairs.append(
                        PreferencePair(
                            state,
                            turn.responses[i],
                            turn.responses[j],
                            cmd_i,
                            cmd_j,
                            qi,
                            qj,
                            (turn.game_id,),
                        )
                    )
    raw = [m.q_target(m.total / m.count) for m in means.values()]
    return (squash_targets(raw, c) if squash else raw), pairs


def split_games(
    game_ids: Iterable[str], val_fraction: float = 0.15, seed: int = 42
) -> tuple[list[str], list[str]]:
    """Split distinct game ids into train and validation sides, deterministically.

    The distinct ids are sorted, shuffled with ``random.Random(seed)``, and the first
    round(val_fraction · n) go to validation, at least one when ``val_fraction > 0`` and n ≥ 2, and
    never all n. The result does not depend on the order or repetition of ``game_ids``.

    Args:
        game_ids: Game ids, repeats allowed.
        val_fraction: The fraction of games for validation, in [0, 1).
        seed: The shuffle seed.

    Returns:
        (train, val): sorted game ids; every distinct id is on exactly one side.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), found {val_fraction}")
    games = sorted(set(game_ids))
    n_val = 0
    if val_fraction > 0.0 and len(games) >= 2:
        n_val = min(max(1, math.floor(val_fraction * len(games) + 0.5)), len(games) - 1)
    shuffled = list(games)
    random.Random(seed).shuffle(shuffled)
    val = set(shuffled[:n_val])
    return [g for g in games if g not in val], [g for g in games if g in val]


def split_by_game(
    trajectories: Iterable[Trajectory], val_fraction: float = 0.15, seed: int = 42
) -> tuple[list[Trajectory], list[Trajectory]]:
    """Split trajectories into train and validation by game (:func:`split_games`), never by (s, a).

    Compute targets on each side separately, after this split, so that no (state, command) key
    merges visits from both sides.

    Returns:
        (train, val), each in input order; all trajectories of a game are on the same side.
    """
    trajectories = list(trajectories)
    _, val_games = split_games((t.game_id for t in trajectories), val_fraction, seed)
    val = set(val_games)
    return [t for t in trajectories if t.game_id not in val], [t for t in trajectories if t.game_id in val]
