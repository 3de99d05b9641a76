"""PRM data: rollouts → the rows the PRM's objective builds, split by game, tokenised with the
PRM's tokenizer (all handed over by :meth:`PRMDataModule.connect`)."""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence

from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader

from agentprm.data.batches import PRMExample, PRMRow, RowContext
from agentprm.data.common import read_trajectories
from agentprm.errors import check_range, check_sources

__all__ = ["PRMDataModule"]

log = logging.getLogger(__name__)


class PRMDataModule(LightningDataModule):
    """Rollouts → PRM training data, split by game, as the PRM's objective asks.

    The PRM it trains hands it its objective (``model.init_args.objective``,
    :mod:`agentprm.objectives`), tokenizer, renderer and encoder through :meth:`connect`. The
    objective reads any extra trajectories it needs (InversePRM's expert demonstrations), every
    game is split once (a game's demonstrations and rollouts land on the same side), each side's
    rows are built and tokenised, and batches are the objective's typed batches.

    Args:
        rollouts: Directories (or files) of Trajectory JSONL, e.g. ``runs/x/rollouts/iter_0``. For
            InversePRM these are the learner (negative) trajectories, e.g. every past policy's.
        val_fraction: Share of games held out for validation.
        batch_size: Examples per batch (a pair or a transition counts once).
        max_length: Longest sequence in tokens; longer ones are skipped and counted.
        seed: Seed of the game split and of the objective's sampling (InversePRM's balancing and a').
    """

    def __init__(
        self,
        rollouts: list[str],
        val_fraction: float = 0.15,
        batch_size: int = 16,
        max_length: int = 1024,
        seed: int = 42,
    ) -> None:
        super().__init__()
        check_range("data.val_fraction", val_fraction, 0, 1, below_high=True)
        check_range("data.batch_size", batch_size, 1)
        check_range("data.max_length", max_length, 1)
        check_sources("data.rollouts", rollouts)  # inputs checked before any model is loaded
        self.save_hyperparameters()
        self.train_set: list[PRMExample] = []
        self.val_set: list[PRMExample] = []
        self.skipped_too_long = 0
        self._inputs: tuple | None = None

    def _examples(self, rows: Sequence[PRMRow], encode) -> list[PRMExample]:
        out: list[PRMExample] = []
        for row in rows:
            encoded = [encode(state, x) for state, x in row.sequences]
            seqs = tuple(tuple(p + r) for p, r in encoded)
            if max(map(len, seqs)) > self.hparams.max_length:
                self.skipped_too_long += 1
                continue
            keys = tuple(state.key() for state, _ in row.sequences)
            starts = tuple(len(p) for p, _ in encoded)
            out.append(PRMExample(seqs, row.target, row.game_id, row.state_key, keys, row.targets, starts))
        return out

    def connect(self, tokenizer, renderer, objective, encode, values=None, next_actions=None) -> None:
        """What the PRM hands its data (:meth:`agentprm.prm.PRMModule.data_inputs`, in the stage's
        ``setup``): its tokenizer, renderer, objective, ``encode(state, response) -> (prompt ids,
        response ids)``, for shaped targets ``values(states) -> V(s)`` and for InversePRM
        ``next_actions(states, seed) -> a'``. The rows are built here, once."""
        self._inputs = (tokenizer, renderer, objective, encode, values, next_actions)
        self._build()

    def _build(self) -> None:
        if self.train_set:  # connected again (e.g. validate after fit): built already
            return
        from agentprm.targets import split_games

        tokenizer, renderer, objective, encode, values, next_actions = self._inputs
        h = self.hparams
        self.objective = objective
        learners = read_trajectories(h.rollouts)
        context = RowContext(renderer, tuple(h.rollouts), h.seed, values, next_actions)
        experts = objective.prepare(learners, context)
        # One split over every game, so a game's demonstrations and rollouts land on the same side.
        _, val_games = split_games([t.game_id for t in [*learners, *experts]], h.val_fraction, h.seed)
        held = set(val_games)
        for side, keep in (
            ("train_set", lambda t: t.game_id not in held),
            ("val_set", lambda t: t.game_id in held),
        ):
            rows = objective.rows([t for t in learners if keep(t)], [t for t in experts if keep(t)], context)
            setattr(self, side, self._examples(rows, encode))
        self.pad_id = tokenizer.pad_token_id
        name = type(objective).__name__
        if not self.train_set:
            raise ValueError(f"no {name} PRM examples in {h.rollouts}")
        log.info("PRM (%s): %d train / %d val examples", name, len(self.train_set), len(self.val_set))

    def _loader(self, data: list[PRMExample], shuffle: bool) -> DataLoader:
        if self._inputs is None:
            raise ValueError(
                "PRMDataModule is not connected to its PRM: call connect(**prm.data_inputs()) "
                "(agentprm's PRMModule does in setup)"
            )
        return DataLoader(
            data,
            batch_size=self.hparams.batch_size,
            shuffle=shuffle,
            collate_fn=functools.partial(self.objective.collate, pad_id=self.pad_id),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False)
