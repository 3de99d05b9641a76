"""What the callbacks share: when to run, where to write, how to log outside ``self.log``."""

from __future__ import annotations

from pathlib import Path

import torch
from lightning.pytorch import Trainer


class Periodic:
    """Runs ``measure`` at the start of training, every ``every_n_steps`` optimiser steps (or, with
    ``every_n_epochs``, at the end of every n-th training epoch) and at the end.

    Subclasses implement ``measure(trainer, pl_module)``; the step of the last run is remembered
    so a step is never measured twice (e.g. the last step and the end of training).
    """

    def __init__(self, every_n_steps: int, every_n_epochs: int | None = None) -> None:
        if every_n_steps < 1:
            raise ValueError(f"every_n_steps must be >= 1, found {every_n_steps}")
        if every_n_epochs is not None and every_n_epochs < 1:
            raise ValueError(f"every_n_epochs must be >= 1 (or None), found {every_n_epochs}")
        self.every_n_steps, self.every_n_epochs = every_n_steps, every_n_epochs
        self._last_step: int | None = None

    def _maybe(self, trainer: Trainer, pl_module, force: bool = False) -> None:
        step = trainer.global_step
        if step == self._last_step or trainer.sanity_checking:
            return
        if force or (self.every_n_epochs is None and step % self.every_n_steps == 0):
            from agentprm.distributed import gathered

            self._last_step = step
            with gathered(pl_module):  # FSDP2: ranks play episodes of different lengths
                self.measure(trainer, pl_module)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if self.every_n_epochs is not None and (trainer.current_epoch + 1) % self.every_n_epochs == 0:
            self._maybe(trainer, pl_module, force=True)

    def measure(self, trainer: Trainer, pl_module) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def on_train_start(self, trainer, pl_module) -> None:
        self._maybe(trainer, pl_module, force=True)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._maybe(trainer, pl_module)

    def on_train_end(self, trainer, pl_module) -> None:
        self._maybe(trainer, pl_module, force=True)


def log_metrics(trainer: Trainer, metrics: dict[str, float]) -> None:
    """Send metrics to every logger at the current step (any hook, rank 0) and expose them to
    the other callbacks through ``trainer.callback_metrics``."""
    for key, value in metrics.items():
        trainer.callback_metrics[key] = torch.tensor(float(value))
    if trainer.is_global_zero:
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)


def run_dir(trainer: Trainer) -> Path:
    """The directory a callback writes its files to: the logger's version directory, else the root.

    The same folder as ``trainer.log_dir`` without its broadcast: ``trainer.log_dir`` is a
    collective under DDP, so reading it on rank 0 alone (where callbacks write) deadlocks."""
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    if trainer.loggers:
        logger = trainer.loggers[0]
        folder = logger.log_dir if isinstance(logger, (TensorBoardLogger, CSVLogger)) else logger.save_dir
    else:
        folder = None
    return Path(folder or trainer.default_root_dir)


def require(pl_module, *names: str, who: str) -> None:
    """Fail with a clear message when the module lacks what the callback uses."""
    missing = [n for n in names if not hasattr(pl_module, n)]
    if missing:
        raise TypeError(
            f"{who} needs a LightningModule with {', '.join(missing)} (e.g. agentprm.dpo.OnlineDPOModule); "
            f"{type(pl_module).__name__} has none"
        )
