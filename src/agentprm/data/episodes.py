"""Episode data: which (game, rollout index) pairs a rollout or an evaluation plays, in batches of B,
and the environment they are played in."""

from __future__ import annotations

from dataclasses import dataclass

from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader

from agentprm.data.common import Items, spread
from agentprm.envs import env_factory
from agentprm.envs.base import EnvFactory
from agentprm.errors import check_range

__all__ = ["EpisodeBatch", "RolloutDataModule"]


@dataclass(frozen=True)
class EpisodeBatch:
    """B episodes to play together: (game id, rollout index) pairs, and the environment they are
    played in."""

    index: int
    env: EnvFactory
    max_steps: int
    episodes: tuple[tuple[str, int], ...]


class RolloutDataModule(LightningDataModule):
    """The episodes of a rollout: ``rollouts_per_game`` episodes of each game, in batches of B.

    The episode list depends only on these arguments, so a rerun produces the same batches (and
    skips the finished ones). Under DDP, Lightning's predict sampler gives each rank a disjoint
    share of the batches; no episode is duplicated or missing.

    Args:
        data: ALFWorld games: ``builtin:small`` / ``builtin:standard`` / ``alfworld`` / a data root
            (the shorthand for ``env: AlfWorldEnvFactory(data)``; default ``builtin:small``).
        env: The environment, by ``class_path`` (an :class:`~agentprm.envs.base.EnvFactory`);
            give it or ``data``, not both.
        split: A split of the environment's games (ALFWorld: ``train``, ``valid_seen``,
            ``valid_unseen``).
        games: Explicit game ids (overrides ``split`` selection); None: every game of the split.
        max_games: Only N games, evenly spread over the sorted ids (None: all).
        rollouts_per_game: Episodes per game.
        batch_size: Episodes stepped together (B environments).
        max_steps: Step budget per episode.
    """

    def __init__(
        self,
        data: str | None = None,
        split: str = "train",
        games: list[str] | None = None,
        max_games: int | None = None,
        rollouts_per_game: int = 4,
        batch_size: int = 16,
        max_steps: int = 20,
        env: EnvFactory | None = None,
    ) -> None:
        super().__init__()
        self.env = env_factory(data, env)
        check_range("data.max_games", max_games, 1, optional=True)
        check_range("data.rollouts_per_game", rollouts_per_game, 1)
        check_range("data.batch_size", batch_size, 1)
        check_range("data.max_steps", max_steps, 1)
        self.save_hyperparameters(ignore=["env"])
        self.batches: list[EpisodeBatch] = []

    @property
    def num_episodes(self) -> int:
        return sum(len(b.episodes) for b in self.batches)

    def settings(self) -> dict:
        """What decides the episodes: the arguments, the environment by its identity."""
        return {**{k: v for k, v in self.hparams.items() if k != "data"}, "env": self.env.identity()}

    def setup(self, stage: str | None = None) -> None:
        h = self.hparams
        ids = list(h.games) if h.games else self.env.game_ids(h.split)
        ids = spread(sorted(ids), h.max_games)
        episodes = [(g, r) for r in range(h.rollouts_per_game) for g in ids]
        self.batches = [
            EpisodeBatch(k, self.env, h.max_steps, tuple(episodes[i : i + h.batch_size]))
            for k, i in enumerate(range(0, len(episodes), h.batch_size))
        ]
        world = self.trainer.world_size if self.trainer is not None else 1
        if len(self.batches) < world:
            raise ValueError(
                f"{len(episodes)} episodes make {len(self.batches)} batch(es) of data.batch_size="
                f"{h.batch_size} for {world} processes: every process needs at least one; lower "
                "data.batch_size or add games / rollouts_per_game"
            )

    def predict_dataloader(self) -> DataLoader:
        return DataLoader(Items(self.batches), batch_size=None, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self.predict_dataloader()
