"""Values of a reference policy μ at any state of an episode: the search expert's cost-to-go.

From a state s (a game and the commands played so far) the search expert μ finishes the episode:
its memory is rebuilt from the history (it reads only observations), then it acts until it wins
or the episode's step budget ends. The engine is deterministic, so this is exact, not an estimate:

- V^μ(s) = γ^(k−1) when μ wins k actions after s (within the budget), else 0;
- Q^μ(s, a) = 1 when a wins, else γ·V^μ(s·a) (0 when a spends the last step),

on the same scale as the Monte-Carlo targets γ^(T−1−t)·r. A^μ(s, a) = Q^μ(s, a) − V^μ(s) is the
expert's advantage of a on the learner's own state: AggreVaTe's cost-to-go (Ross & Bagnell, 2014)
and the reference-policy value of the paper's §4.2. Every continuation runs on the game's state
graph (:class:`~agentprm.envs.engine.GameGraph`), so a transition taken before is a lookup, and
every history a continuation passes through is cached with its result (μ rebuilt there would act
the same way), so a loop of the learner or a second query costs nothing.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from dataclasses import dataclass

from agentprm.records import State, Trajectory, register_record

__all__ = ["ExpertValues", "ReferenceLabels", "commands_digest", "label_trajectory", "labelled_turns"]


@register_record
@dataclass(frozen=True)
class ReferenceLabels:
    """The reference policy's values along one trajectory (a line of ``reference-*.jsonl``).

    Attributes:
        game_id: The trajectory's game.
        rollout_index: Its rollout index.
        branch_turn: Its branch turn (None for an episode from the start).
        commands_digest: :func:`commands_digest` of its commands: the labels belong to it alone.
        values: V^μ(s_t) at every turn t (the turns before a branch turn included).
        taken_q: Q^μ(s_t, a_t) of the command the trajectory took at every turn.
        labelled_turns: Turns whose every admissible command was labelled.
        labelled_q: Q^μ(s_t, c) for each of those turns, aligned with the step's admissible commands.
        max_steps: The step budget μ had to win within.
        gamma: The discount.
    """

    game_id: str
    rollout_index: int
    branch_turn: int | None
    commands_digest: str
    values: tuple[float, ...]
    taken_q: tuple[float, ...]
    labelled_turns: tuple[int, ...]
    labelled_q: tuple[tuple[float, ...], ...]
    max_steps: int
    gamma: float


def commands_digest(trajectory: Trajectory) -> str:
    """A short digest of a trajectory's game and commands (what its labels are matched by)."""
    text = "\n".join([trajectory.game_id, *(s.command for s in trajectory.steps)])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def labelled_turns(trajectory: Trajectory, k: int, seed: int) -> list[int]:
    """``k`` distinct turns drawn uniformly (all when ``k < 0`` or fewer exist), from the branch turn on."""
    first = trajectory.branch_turn or 0
    turns = list(range(first, len(trajectory.steps)))
    if k < 0 or k >= len(turns):
        return turns
    rng = random.Random(f"{seed}|{commands_digest(trajectory)}|{trajectory.rollout_index}")
    return sorted(rng.sample(turns, k))


class ExpertValues:
    """V^μ and Q^μ of the search expert on a game set, from any history.

    Args:
        data: The games (``builtin:small``, ``alfworld``, a data root), as the environment takes it.
        max_steps: The episode's step budget: μ must win within it, counting the history.
        gamma: Discount γ (paper: 0.95).
        env: An :class:`~agentprm.envs.alfworld.AlfWorldEnv` to share (its loaded games); made
            from ``data`` when None.
        memory: The expert remembers objects from its last ``memory`` observations only (None:
            all; see :class:`~agentprm.envs.expert.SearchExpert`). Set it to the policy's history
            window + 1 for values the policy can learn from what its prompt shows.

    Attributes:
        continuations: Expert continuations run (each one caches every history it passes).
        expert_steps: Engine steps those continuations took.
    """

    def __init__(
        self,
        data: str = "builtin:small",
        max_steps: int = 30,
        gamma: float = 0.95,
        env=None,
        memory: int | None = None,
    ) -> None:
        from agentprm.envs.alfworld import AlfWorldEnv

        if not 0.0 < gamma <= 1.0:
            raise ValueError(f"gamma must be in (0, 1], found {gamma}")
        if max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, found {max_steps}")
        # States come from any game in any order: keep every game loaded (about 2 MB each).
        self.env = env if env is not None else AlfWorldEnv(data, max_steps=max_steps, cache_games=4096)
        if memory is not None and memory < 1:
            raise ValueError(f"memory must be >= 1 observation (or None), found {memory}")
        self.max_steps, self.gamma, self.memory = max_steps, gamma, memory
        self._turns: dict[tuple[str, tuple[str, ...]], int | None] = {}
        self.continuations = self.expert_steps = 0

    # -- the expert's continuation ------------------------------------------------------------
    def _replay(self, game_id: str, commands: Sequence[str]):
        """(graph, node, expert, won) after playing ``commands`` from the start of the game."""
        from agentprm.envs.alfworld import translate_command

        graph, node = self.env.graph(game_id), 0
        expert = self.env.expert(game_id)
        expert.memory = self.memory
        expert.observe(None, graph.intro)
        won = False
        for command in commands:
            if won:
                raise ValueError(f"game {game_id}: the history goes on after the game was won")
            sent = translate_command(command, graph.nodes[node].admissible)
            feedback, node = graph.step(node, sent)
            expert.observe(command, feedback)
            won = graph.nodes[node].won
        return graph, node, expert, won

    def turns_to_win(self, game_id: str, commands: Sequence[str]) -> int | None:
        """Actions μ needs to win after ``commands`` (0 if already won), None if not within the budget."""
        key = (game_id, tuple(commands))
        if key in self._turns:
            return self._turns[key]
        graph, node, expert, won = self._replay(game_id, commands)
        return 0 if won else self._continue(game_id, list(commands), graph, node, expert)

    def _continue(self, game_id: str, history: list[str], graph, node: int, expert) -> int | None:
        """Let μ play from the history; cache every history it passes with its outcome."""
        self.continuations += 1
        passed: list[tuple[str, ...]] = []
        turns: int | None = None
        while True:
            key = (game_id, tuple(history))
            if key in self._turns:  # joined a continuation computed before
                known = self._turns[key]
                turns = None if known is None else len(passed) + known
                break
            passed.append(key[1])
            if len(history) >= self.max_steps:  # no step left: not won within the budget
                break
            command = expert.decide(graph.nodes[node].admissible)
            feedback, node = graph.step(node, command)
            self.expert_steps += 1
            history.append(command)
            expert.observe(command, feedback)
            if graph.nodes[node].won:
                turns = len(passed)
                break
        for j, h in enumerate(passed):
            self._turns[(game_id, h)] = None if turns is None else turns - j
        return None if turns is None else turns

    # -- values -------------------------------------------------------------------------------
    def _discount(self, turns: int | None) -> float:
        if turns is None:
            return 0.0
        return 1.0 if turns == 0 else self.gamma ** (turns - 1)

    def value(self, state: State) -> float:
        """V^μ(s) = γ^(k−1) when μ wins k actions after s, else 0."""
        return self._discount(self.turns_to_win(state.game_id, [t.command for t in state.history]))

    def q_values(self, state: State, commands: Sequence[str]) -> list[float]:
        """Q^μ(s, a) of each command at ``state`` (1 when it wins; γ·V^μ(s·a) otherwise)."""
        from agentprm.envs.alfworld import translate_command

        history = [t.command for t in state.history]
        todo = [c for c in dict.fromkeys(commands) if (state.game_id, (*history, c)) not in self._turns]
        if todo:  # replay the history once, then branch every new command off it
            graph, node, expert, won = self._replay(state.game_id, history)
            if won:
                raise ValueError(f"game {state.game_id}: the state is after the game was won")
            for command in todo:
                feedback, after = graph.step(node, translate_command(command, graph.nodes[node].admissible))
                if graph.nodes[after].won:
                    self._turns[(state.game_id, (*history, command))] = 0
                    continue
                branch = expert.copy()
                branch.observe(command, feedback)
                self._continue(state.game_id, [*history, command], graph, after, branch)
        out = []
        for command in commands:
            turns = self._turns[(state.game_id, (*history, command))]
            out.append(0.0 if turns is None else self.gamma**turns if turns else 1.0)
        return out


def label_trajectory(values: ExpertValues, trajectory: Trajectory, turns: Sequence[int]) -> ReferenceLabels:
    """V^μ and Q^μ of the taken command at every turn, and Q^μ of every command at ``turns``."""
    if trajectory.failure is not None:
        raise ValueError(f"game {trajectory.game_id}: a failed episode has no states to label")
    states = trajectory.states()
    return ReferenceLabels(
        game_id=trajectory.game_id,
        rollout_index=trajectory.rollout_index,
        branch_turn=trajectory.branch_turn,
        commands_digest=commands_digest(trajectory),
        values=tuple(values.value(s) for s in states),
        taken_q=tuple(
            values.q_values(s, [step.command])[0] for s, step in zip(states, trajectory.steps, strict=True)
        ),
        labelled_turns=tuple(turns),
        labelled_q=tuple(tuple(values.q_values(states[t], states[t].admissible_commands)) for t in turns),
        max_steps=values.max_steps,
        gamma=values.gamma,
    )
