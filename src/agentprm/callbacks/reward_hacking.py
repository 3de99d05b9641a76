"""RewardHackingMonitor: the PRM's score of the policy's samples beside the true success rate."""

from __future__ import annotations

import json
from itertools import pairwise

from lightning.pytorch import Callback, Trainer
from lightning.pytorch.utilities import rank_zero_warn

from agentprm.callbacks.base import Periodic, log_metrics, require, run_dir


class RewardHackingMonitor(Periodic, Callback):
    """Watches for the PRM score rising while the real success rate falls (the paper's Fig. 3).

    Every ``every_n_steps`` optimiser steps it samples the policy on held-out states (the
    datamodule's ``val_states``), scores the samples with the frozen PRM, and logs
    ``monitor/prm_score`` next to ``monitor/success_rate`` (read from ``eval/success_rate``, so put
    :class:`~agentprm.callbacks.EnvEvalCallback` with the same period before it). When over the last
    ``window`` measurements the PRM score rose at every one while success fell by more than
    ``tolerance`` in total, it warns and logs ``monitor/hacking = 1`` (else 0). Rows go to
    ``<log dir>/reward_hacking.jsonl``.

    Args:
        every_n_steps: Measurement period in optimiser steps.
        num_states: Held-out states scored (the first ones of ``val_states``).
        window: Measurements compared (≥ 2).
        tolerance: Success-rate drop (absolute) that counts as falling.
        seed: Sampling seed (the same states and seed at every measurement).
    """

    def __init__(
        self,
        every_n_steps: int = 10,
        num_states: int = 32,
        window: int = 3,
        tolerance: float = 0.0,
        seed: int = 1234,
    ) -> None:
        Periodic.__init__(self, every_n_steps)
        if window < 2:
            raise ValueError(f"window must be >= 2, found {window}")
        self.num_states, self.window, self.tolerance, self.seed = num_states, window, tolerance, seed
        self.history: list[dict] = []
        self.warnings = 0

    @staticmethod
    def hacking(history: list[dict], window: int, tolerance: float = 0.0) -> bool:
        """True when the last ``window`` rows have a strictly rising PRM score and falling success."""
        rows = [r for r in history if r.get("success_rate") is not None][-window:]
        if len(rows) < window:
            return False
        scores = [r["prm_score"] for r in rows]
        rising = all(b > a for a, b in pairwise(scores))
        return rising and rows[0]["success_rate"] - rows[-1]["success_rate"] > tolerance

    def measure(self, trainer: Trainer, pl_module) -> None:
        require(pl_module, "score_states", who="RewardHackingMonitor")
        states = list(getattr(trainer.datamodule, "val_states", []) or [])[: self.num_states]
        if not states:
            raise ValueError(
                "RewardHackingMonitor needs held-out states: a datamodule with val_states "
                "(agentprm.data.PolicyDataModule with val_fraction > 0)"
            )
        scored = pl_module.score_states(states, seed=self.seed)
        scores = [v for s in scored for v in s.scores]
        prm_score = sum(scores) / len(scores)
        success = trainer.callback_metrics.get("eval/success_rate")
        row = {
            "step": trainer.global_step,
            "prm_score": prm_score,
            "success_rate": None if success is None else float(success),
        }
        self.history.append(row)
        flag = self.hacking(self.history, self.window, self.tolerance)
        metrics = {"monitor/prm_score": prm_score, "monitor/hacking": float(flag)}
        if row["success_rate"] is not None:
            metrics["monitor/success_rate"] = row["success_rate"]
        log_metrics(trainer, metrics)
        if flag:
            self.warnings += 1
            first = self.history[-self.window]
            rank_zero_warn(
                f"possible reward hacking at step {trainer.global_step}: the PRM score of the policy's "
                f"samples rose over the last {self.window} measurements "
                f"({first['prm_score']:.3f} → {prm_score:.3f}) while the success rate fell "
                f"({first['success_rate']:.3f} → {row['success_rate']:.3f}); "
                "consider stopping here (the paper's Fig. 3) or a PRM trained on more rollouts"
            )
        if trainer.is_global_zero:
            path = run_dir(trainer) / "reward_hacking.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("a") as f:
                f.write(json.dumps({**row, "hacking": flag}) + "\n")
