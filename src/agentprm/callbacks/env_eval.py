"""EnvEvalCallback: the policy's success rate on held-out games while it trains."""

from __future__ import annotations

import json

import torch
from lightning.pytorch import Callback, Trainer
from lightning.pytorch.utilities import rank_zero_info

from agentprm.callbacks.base import Periodic, log_metrics, require, run_dir
from agentprm.envs import env_factory
from agentprm.envs.base import EnvFactory
from agentprm.sampling import draw_key


class EnvEvalCallback(Periodic, Callback):
    """Plays the current policy on held-out games every ``every_n_steps`` optimiser steps.

    Logs ``eval/success_rate``, ``eval/mean_actions`` and ``eval/success_rate/<task type>``, and
    appends one row per evaluation to ``<log dir>/env_eval.jsonl``. Games are split across ranks
    and the counts summed, so every rank does 1/world of the work. It also runs before the first
    step (the starting policy) and after the last.

    With ``keep_best`` the trainable weights of the best evaluation so far are kept (in memory)
    and put back at the end of training, before the module saves its model: early stopping by
    success instead of by loss (the first evaluation, of the starting policy, counts too).

    Args:
        data: ALFWorld games (``builtin:small``, a data root): the shorthand for ``env``.
        env: The environment, by ``class_path`` (an :class:`~agentprm.envs.base.EnvFactory`);
            give it or ``data``, not both (neither: ``builtin:small``). Success is also logged per
            task type of its ``task_types``.
        split: Held-out split, e.g. ``valid_unseen``.
        max_games: Games played, spread over the split's sorted ids (every task type kept).
        max_steps: Action budget per game.
        every_n_steps: Evaluation period in optimiser steps.
        every_n_epochs: Evaluate at the end of every n-th training epoch instead (None: by steps).
        greedy: Play the most likely action (else sample at the module's temperature).
        seed: Sampling seed when not greedy (the same at every evaluation: paired measurements).
        rollouts_per_game: Episodes per game (sampled evaluations need several).
        keep_best: Restore the weights of the best evaluation at the end of training.
    """

    def __init__(
        self,
        data: str | None = None,
        split: str = "valid_unseen",
        max_games: int | None = 24,
        max_steps: int = 20,
        every_n_steps: int = 10,
        every_n_epochs: int | None = None,
        greedy: bool = True,
        seed: int = 0,
        rollouts_per_game: int = 1,
        keep_best: bool = False,
        env: EnvFactory | None = None,
    ) -> None:
        Periodic.__init__(self, every_n_steps, every_n_epochs)
        self.env = env_factory(data, env, "EnvEvalCallback.data", "EnvEvalCallback.env")
        if rollouts_per_game < 1:
            raise ValueError(f"rollouts_per_game must be >= 1, found {rollouts_per_game}")
        self.split, self.max_games, self.max_steps = split, max_games, max_steps
        self.greedy, self.seed, self.rollouts_per_game = greedy, seed, rollouts_per_game
        self.keep_best = keep_best
        self.history: list[dict] = []
        self.best: tuple[float, int] | None = None  # (success rate, step)
        self._best_weights: dict | None = None
        self._env = None

    def _games(self) -> list[str]:
        from agentprm.data import spread

        if self._env is None:
            self._env = self.env.make(self.max_steps)
        return spread(sorted(self.env.game_ids(self.split)), self.max_games)

    def measure(self, trainer: Trainer, pl_module) -> None:
        from agentprm.rollout import play

        episodes = [(g, r) for g in self._games() for r in range(self.rollouts_per_game)]
        episodes = episodes[trainer.global_rank :: trainer.world_size]
        games, names = [g for g, _ in episodes], [f"{g}|{r}" for g, r in episodes]
        sampler = (
            pl_module.sampler(self.seed)
            if hasattr(pl_module, "sampler")
            else self._sampler(trainer, pl_module)
        )
        greedy = self.greedy

        def choose(states, slots):  # common random numbers: every evaluation draws alike
            keys = [draw_key(self.seed, names[i], s.turn) for s, i in zip(states, slots, strict=True)]
            keys = keys if sampler.mode == "admissible" else None
            return [s[0] for s in sampler.sample(states, 1, greedy=greedy, keys=keys)]

        types = tuple(self.env.task_types)
        counts = torch.zeros(len(types) + 1, 3)  # won, played, actions per task type (+ other)
        if games:
            for traj in play(self._env, games, choose, policy_id=f"step-{trainer.global_step}"):
                row = types.index(traj.task_type) if traj.task_type in types else len(types)
                counts[row] += torch.tensor([float(traj.won), 1.0, float(traj.num_actions)])
        counts = trainer.strategy.reduce(counts.to(pl_module.device), reduce_op="sum").cpu()
        won, played, actions = counts.sum(0).tolist()
        metrics = {"eval/success_rate": won / max(played, 1), "eval/mean_actions": actions / max(played, 1)}
        for task, (w, n, _) in zip((*types, "other"), counts.tolist(), strict=True):
            if n and types:
                metrics[f"eval/success_rate/{task}"] = w / n
        log_metrics(trainer, metrics)
        row = {"step": trainer.global_step, "games": int(played), **metrics}
        self.history.append(row)
        # ties go to the later evaluation: at equal success, the more trained weights
        if self.best is None or metrics["eval/success_rate"] >= self.best[0]:
            self.best = (metrics["eval/success_rate"], trainer.global_step)
            if self.keep_best:
                trained = {k for k, p in pl_module.named_parameters() if p.requires_grad}
                self._best_weights = {
                    k: v.detach().clone() for k, v in pl_module.state_dict().items() if k in trained
                }
        if trainer.is_global_zero:
            path = run_dir(trainer) / "env_eval.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("a") as f:
                f.write(json.dumps(row) + "\n")
            rank_zero_info(
                f"[env eval] step {trainer.global_step}: success {metrics['eval/success_rate']:.3f} "
                f"on {int(played)} {self.split} games"
            )

    @staticmethod
    def _sampler(trainer: Trainer, pl_module):
        """An admissible-mode sampler over a module that has ``model`` and ``tokenizer`` but no
        ``sampler`` (SFT), reading states as its datamodule renders them."""
        from agentprm.prompts import Renderer
        from agentprm.sampling import HFSampler

        require(pl_module, "model", "tokenizer", who="EnvEvalCallback")
        data = getattr(getattr(trainer, "datamodule", None), "hparams", {}) or {}
        renderer = Renderer(
            data.get("template", "compact"),
            data.get("history_window", 1),
            data.get("response_format", "action"),
        )
        return HFSampler(pl_module.model, pl_module.tokenizer, renderer, "admissible")

    def on_train_end(self, trainer, pl_module) -> None:
        super().on_train_end(trainer, pl_module)  # the final evaluation
        if self.keep_best and self._best_weights is not None and self.best is not None:
            pl_module.load_state_dict(self._best_weights, strict=False)
            log_metrics(trainer, {"eval/best_success_rate": self.best[0], "eval/best_step": self.best[1]})
            rank_zero_info(f"[env eval] kept the weights of step {self.best[1]} (success {self.best[0]:.3f})")

    def teardown(self, trainer, pl_module, stage: str) -> None:
        if self._env is not None:
            self._env.close()
            self._env = None
