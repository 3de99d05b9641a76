"""The batched environment protocol every stage acts through.

An environment holds B episode slots. ``reset(game_ids)`` starts one episode per game id;
``step(commands)`` advances every slot that is not done (commands for finished slots are ignored).
Each call returns one :class:`EnvStep` per slot. An episode whose engine raised is finished with
``failure`` set to the reason, and the other slots go on: a broken episode is recorded and
counted, never silently dropped.

A stage does not build environments itself: it is given an :class:`EnvFactory` (by ``class_path``
in its config), which names the games of a split and makes a :class:`BatchEnv` with a step budget.
ALFWorld's is :class:`agentprm.envs.alfworld.AlfWorldEnvFactory`; CONTRIBUTING's "Adding an
environment" shows a new one.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from agentprm.plugins import Plugin

__all__ = ["BatchEnv", "EnvFactory", "EnvStep"]


@dataclass(frozen=True)
class EnvStep:
    """What one slot shows after a reset or a step.

    Attributes:
        game_id: The game played in this slot.
        task_type: The game's task type (e.g. ``pick_and_place_simple``).
        task: The task sentence (``put a clean mug in cabinet.``).
        observation: The observation text: after a reset the room description, later the feedback
            of the last command (``Nothing happens.`` for an invalid one).
        admissible_commands: The commands the engine accepts now (empty once done).
        turn: Number of actions taken so far in this episode.
        won: Whether the task is achieved.
        done: Whether the episode is over (won, step budget spent, or failed).
        reward: 1.0 on the step that wins the game, else 0.0.
        failure: None, or why the episode broke (the engine's exception).
    """

    game_id: str
    task_type: str
    task: str
    observation: str
    admissible_commands: tuple[str, ...]
    turn: int
    won: bool = False
    done: bool = False
    reward: float = 0.0
    failure: str | None = None


@runtime_checkable
class BatchEnv(Protocol):
    """A batch of text-game episodes stepped together."""

    max_steps: int

    def game_ids(self, split: str) -> list[str]:
        """The sorted game ids of a split."""
        ...

    def reset(self, game_ids: Sequence[str]) -> list[EnvStep]:
        """Start one episode per game id (the same id may appear several times)."""
        ...

    def step(self, commands: Sequence[str | None]) -> list[EnvStep]:
        """Send one command per slot; slots already done ignore theirs."""
        ...

    def close(self) -> None:
        """Release the engines."""
        ...


class EnvFactory(Plugin, ABC):
    """Where a stage's games come from and how they are played: what ``env:`` names in a config.

    A subclass takes its settings as constructor arguments (so a config gives it by ``class_path``
    and ``init_args``), lists the games of a split and makes a :class:`BatchEnv`. Rollouts,
    evaluation, online DPO's reset states and the env-eval callback all go through it, and the
    factory's :meth:`~agentprm.plugins.Plugin.identity` is what their settings and manifests record.

    Optional capabilities, used only by the stages that ask for them (each says so clearly when the
    environment lacks it): a search expert (``BatchEnv.expert`` and snapshots, for reference values
    and the oracle scorer), snapshots to continue branches without replaying their prefix.

    Attributes:
        task_types: The task categories success is also reported by (``()``: overall only); an
            episode whose ``task_type`` is not among them counts as ``other``.
    """

    task_types: tuple[str, ...] = ()

    @abstractmethod
    def game_ids(self, split: str) -> list[str]:
        """The sorted game ids of a split (an unknown split: a ``ValueError`` naming the choices)."""

    @abstractmethod
    def make(self, max_steps: int) -> BatchEnv:
        """A fresh environment whose episodes end after ``max_steps`` actions."""

    def vocabulary(self) -> list[str]:
        """Texts whose words a word-level tiny model for these games must know (see
        :func:`agentprm.backbone.build_tiny_model`); empty when it needs none beyond the prompts'."""
        return []
