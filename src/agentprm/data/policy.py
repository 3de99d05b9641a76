"""Online-DPO data: the states the policy is improved at (the current iteration's rollouts and,
optionally, fresh environment resets), split by game."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from lightning.pytorch import LightningDataModule

from agentprm.envs.base import EnvFactory
from agentprm.records import State, Trajectory

__all__ = ["PolicyDataModule", "policy_states"]


def policy_states(trajectories: Sequence[Trajectory], dedupe: bool = True) -> list[State]:
    """Every state visited by the trajectories (broken episodes skipped), first visit kept."""
    seen: set[str] = set()
    out: list[State] = []
    for traj in trajectories:
        if traj.failure is not None:
            continue
        for state in traj.states():
            key = state.key()
            if dedupe and key in seen:
                continue
            seen.add(key)
            out.append(state)
    return out


class PolicyDataModule(LightningDataModule):
    """Batches of states (lists of :class:`~agentprm.records.State`) for online DPO, split by game.

    States come from the current iteration's rollouts (s ~ the logged distribution, the paper's
    Eq. 3) and, optionally, from fresh environment resets of the training games.

    Args:
        rollouts: Directories (or files) of Trajectory JSONL.
        resets: ALFWorld games (``builtin:small``, a data root) whose training games' initial states
            are added; None adds none.
        reset_env: Any environment (by ``class_path``) whose games' initial states are added,
            instead of ``resets``.
        reset_split: Split of ``resets``.
        max_resets: Games reset, spread over the split (None: all; each reset loads a game, ~0.4 s).
        states_per_epoch: Train states drawn (without replacement, seeded per epoch) each epoch;
            None uses all of them every epoch.
        refresh: Re-read ``rollouts`` whenever the train loader is rebuilt (set the trainer's
            ``reload_dataloaders_every_n_epochs: 1`` to rebuild it every epoch), e.g. while another
            process appends rollouts.
        val_fraction: Share of games whose states are held out (validation: PRM score on held-out
            states).
        max_val_states: Cap on held-out states (spread evenly over them).
        batch_size: States per batch (each gives at most one preference pair).
        split_seed: Seed of the split and the per-epoch draws (``seed`` is the module's).
    """

    def __init__(
        self,
        rollouts: list[str],
        resets: str | None = None,
        reset_env: EnvFactory | None = None,
        reset_split: str = "train",
        max_resets: int | None = 64,
        states_per_epoch: int | None = None,
        refresh: bool = False,
        val_fraction: float = 0.1,
        max_val_states: int | None = 64,
        batch_size: int = 8,
        split_seed: int = 0,
    ) -> None:
        super().__init__()
        from agentprm.envs import env_factory
        from agentprm.errors import check_range

        # the environment whose games' first states are added (None: none)
        self.reset_env = (
            env_factory(resets, reset_env, "data.resets", "data.reset_env") if resets or reset_env else None
        )
        check_range("data.max_resets", max_resets, 1, optional=True)
        check_range("data.states_per_epoch", states_per_epoch, 1, optional=True)
        check_range("data.val_fraction", val_fraction, 0, 1, below_high=True)
        check_range("data.max_val_states", max_val_states, 1, optional=True)
        check_range("data.batch_size", batch_size, 1)
        if not refresh:  # with refresh, another process may still be writing them
            from agentprm.errors import check_sources

            check_sources("data.rollouts", rollouts)
        self.save_hyperparameters(ignore=["reset_env"])
        self.train_states: list[State] = []
        self.val_states: list[State] = []
        self._loads = 0

    def _load(self) -> None:
        from agentprm.data.common import read_trajectories, spread
        from agentprm.targets import split_games

        h = self.hparams
        trajectories = read_trajectories(h.rollouts)
        states = policy_states(trajectories)
        if self.reset_env is not None:
            states += self._reset_states()
        _, val_games = split_games([s.game_id for s in states], h.val_fraction, h.split_seed)
        held = set(val_games)
        self.train_states = [s for s in states if s.game_id not in held]
        self.val_states = spread([s for s in states if s.game_id in held], h.max_val_states)
        if not self.train_states:
            raise ValueError(f"no states to train on in {h.rollouts} (after holding out {len(held)} games)")

    def _reset_states(self) -> list[State]:
        from agentprm.data.common import spread
        from agentprm.rollout import state_of

        h = self.hparams
        env = self.reset_env.make(1)
        try:
            games = spread(sorted(self.reset_env.game_ids(h.reset_split)), h.max_resets)
            return [state_of(step, ()) for step in env.reset(games)]
        finally:
            env.close()

    def setup(self, stage: str | None = None) -> None:
        if not self.train_states:
            self._load()

    def train_dataloader(self):
        from torch.utils.data import DataLoader

        h = self.hparams
        if h.refresh and self._loads:
            self._load()
        self._loads += 1
        epoch = self.trainer.current_epoch if self.trainer is not None else 0
        generator = torch.Generator().manual_seed(h.split_seed * 1_000_003 + epoch)
        order = torch.randperm(len(self.train_states), generator=generator).tolist()
        if h.states_per_epoch is not None:
            order = order[: h.states_per_epoch]
        states = [self.train_states[i] for i in order]
        return DataLoader(states, batch_size=h.batch_size, shuffle=False, collate_fn=list)

    def val_dataloader(self):
        from torch.utils.data import DataLoader

        return DataLoader(self.val_states, batch_size=self.hparams.batch_size, shuffle=False, collate_fn=list)
