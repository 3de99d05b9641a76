"""SampleLogger: a few (state, responses, PRM scores, chosen/rejected) rows per evaluation."""

from __future__ import annotations

import json
from pathlib import Path

from lightning.pytorch import Callback, Trainer

from agentprm.callbacks.base import Periodic, require, run_dir


class SampleLogger(Periodic, Callback):
    """Writes what online DPO sees on a few fixed states: the policy's k responses, the PRM's
    score of each and the chosen/rejected pair, one JSON line per state and measurement.

    Args:
        every_n_steps: Period in optimiser steps (also before the first and after the last step).
        num_states: States logged each time (the first held-out states, else the first training ones).
        path: Output JSONL (default ``<log dir>/samples.jsonl``).
        seed: Sampling seed.
    """

    def __init__(
        self, every_n_steps: int = 20, num_states: int = 4, path: str | None = None, seed: int = 0
    ) -> None:
        Periodic.__init__(self, every_n_steps)
        self.num_states, self.path, self.seed = num_states, path, seed

    def measure(self, trainer: Trainer, pl_module) -> None:
        require(pl_module, "score_states", who="SampleLogger")
        if not trainer.is_global_zero:
            return
        dm = trainer.datamodule
        states = list(getattr(dm, "val_states", []) or getattr(dm, "train_states", []))[: self.num_states]
        rows = [
            {"step": trainer.global_step, **s.to_row()}
            for s in pl_module.score_states(states, seed=self.seed)
        ]
        path = Path(self.path) if self.path else run_dir(trainer) / "samples.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
