"""A new environment in one file: a corridor of rooms, walk east to the last one.

Every stage plays it through ``env:`` in its config (rollouts, evaluation, online DPO's reset
states, the env-eval callback)::

    data:
      init_args:
        data: null
        env:
          class_path: corridor.CorridorEnvFactory    # this file on PYTHONPATH
          init_args: {games: 6}

A tiny model for its words: ``build_tiny_model(folder, corpus=[*prompt_corpus(),
*CorridorEnvFactory().vocabulary()])`` (``agentprm.backbone``). tests/test_env_seam.py runs
rollouts, targets, a PRM fit, online DPO and Best-of-N evaluation on it end to end.
"""

from __future__ import annotations

from collections.abc import Sequence

from agentprm.envs.base import EnvFactory, EnvStep

COMMANDS = ("go east", "go west", "look")


class CorridorEnv:
    """B corridors stepped together; game ``<split>/corridor-<length>`` is won in room ``length``."""

    def __init__(self, max_steps: int) -> None:
        self.max_steps = max_steps
        self._rooms: list[int] = []
        self._last: list[EnvStep] = []

    def game_ids(self, split: str) -> list[str]:
        return CorridorEnvFactory().game_ids(split)

    def reset(self, game_ids: Sequence[str]) -> list[EnvStep]:
        self._rooms = [0] * len(game_ids)
        self._last = [
            EnvStep(g, "corridor", f"reach room {_length(g)}.", "You are in room 0.", COMMANDS, 0)
            for g in game_ids
        ]
        return list(self._last)

    def step(self, commands: Sequence[str | None]) -> list[EnvStep]:
        for i, (last, command) in enumerate(zip(self._last, commands, strict=True)):
            if last.done:
                continue
            move = {"go east": 1, "go west": -1}.get(command or "", 0)
            moved = 0 <= self._rooms[i] + move <= _length(last.game_id) and move != 0
            self._rooms[i] += move if moved else 0
            won = self._rooms[i] == _length(last.game_id)
            text = f"You are in room {self._rooms[i]}." if moved or command == "look" else "Nothing happens."
            turn = last.turn + 1
            done = won or turn >= self.max_steps
            self._last[i] = EnvStep(
                last.game_id, last.task_type, last.task, text, () if done else COMMANDS, turn,
                won=won, done=done, reward=float(won),
            )  # fmt: skip
        return list(self._last)

    def close(self) -> None:
        self._rooms, self._last = [], []


def _length(game_id: str) -> int:
    return int(game_id.rsplit("-", 1)[1])


class CorridorEnvFactory(EnvFactory):
    """Corridors of 1 to ``games`` rooms past the first: ``train`` has ``games`` of them, ``test``
    3 longer ones.

    Args:
        games: Training games.
    """

    task_types = ("corridor",)

    def __init__(self, games: int = 6) -> None:
        self.games = games

    def game_ids(self, split: str) -> list[str]:
        lengths = {"train": range(1, self.games + 1), "test": range(self.games + 1, self.games + 4)}
        if split not in lengths:
            raise ValueError(f"unknown split {split!r}; expected one of train, test")
        return sorted(f"{split}/corridor-{n}" for n in lengths[split])

    def make(self, max_steps: int) -> CorridorEnv:
        return CorridorEnv(max_steps)

    def vocabulary(self) -> list[str]:
        return ["You are in room . Nothing happens.", " ".join(COMMANDS), "reach room", "corridor"]
