"""The batched environment protocol every stage acts through.

An environment holds B episode slots. ``reset(game_ids)`` starts one episode per game id;
``step(commands)`` advances every slot that is not done (commands for finished slots are ignored).
Each call returns one :class:`EnvStep` per slot. An episode whose engine raised is finished with
``failure`` set to the reason, and the other slots go on: a broken episode is recorded and
counted, never silently dropped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

__all__ = ["TASK_TYPES", "BatchEnv", "EnvStep"]

TASK_TYPES = (
    "pick_and_place_simple",
    "look_at_obj_in_light",
    "pick_clean_then_place_in_recep",
    "pick_heat_then_place_in_recep",
    "pick_cool_then_place_in_recep",
    "pick_two_obj_and_place",
)
"""The six ALFWorld task types, in ALFWorld's order (task ids 1-6)."""


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
