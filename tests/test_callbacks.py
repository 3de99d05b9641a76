"""Callbacks: the reward-hacking rule, and callbacks/README.md's own-callback example, run as written."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
import torch

from agentprm.callbacks import RewardHackingMonitor
from agentprm.cli import main
from agentprm.prm import PRMModule

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "callbacks" / "README.md"


def _rows(scores, success):
    return [{"prm_score": p, "success_rate": s} for p, s in zip(scores, success, strict=True)]


def test_hacking_needs_rising_score_and_falling_success():
    hacking = RewardHackingMonitor.hacking
    assert hacking(_rows([0.1, 0.2, 0.3], [0.8, 0.75, 0.7]), window=3)
    assert not hacking(_rows([0.1, 0.2, 0.3], [0.6, 0.7, 0.8]), window=3)  # both rise: fine
    assert not hacking(_rows([0.1, 0.3, 0.2], [0.8, 0.75, 0.7]), window=3)  # score not rising throughout
    assert not hacking(_rows([0.1, 0.2], [0.8, 0.7]), window=3)  # too few measurements
    assert not hacking(_rows([0.1, 0.2, 0.3], [0.8, 0.79, 0.78]), window=3, tolerance=0.05)
    assert not hacking([{"prm_score": 1.0, "success_rate": None}] * 4, window=3)  # no success measured
    with pytest.raises(ValueError, match="window must be >= 2"):
        RewardHackingMonitor(window=1)


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_own_callback_example_runs(tmp_path, monkeypatch, scripted_rollouts):
    """The README's module and command, as written, with the test's paths and sizes added."""
    (tmp_path / "my_callbacks.py").write_text(_blocks("python")[0])
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    command = next(b for b in _blocks("bash") if "my_callbacks.PairLogger" in b)
    argv = shlex.split(command.replace("\\\n", " "))
    assert argv[:2] == ["PYTHONPATH=.", "agentprm"]
    (tmp_path / "configs").symlink_to(ROOT / "configs")
    torch.manual_seed(0)
    PRMModule("tiny", head_init_std=1.0)._save(str(tmp_path / "prm"))
    overrides = [
        "--trainer.max_steps=2",
        "--trainer.enable_progress_bar=false",
        "--trainer.limit_val_batches=0",
        "--model.init_args.model=tiny",
        f"--model.init_args.prm={tmp_path / 'prm'}",
        f"--data.init_args.rollouts=[{scripted_rollouts}]",
        "--data.init_args.batch_size=4",
        f"--trainer.default_root_dir={tmp_path / 'run'}",
    ]
    assert main(argv[2:] + overrides) == 0
    written = json.loads((tmp_path / "runs" / "pairs.json").read_text())
    assert written["steps"] == 2 and 0.0 <= written["mean_pair_fraction"] <= 1.0


def _quiet_trainer(root, callback, **limits):
    """A CPU Trainer with only ``callback``: no logger, checkpoints, progress bar or validation."""
    from lightning.pytorch import Trainer

    return Trainer(
        accelerator="cpu",
        callbacks=[callback],
        default_root_dir=root,
        enable_progress_bar=False,
        enable_checkpointing=False,
        limit_val_batches=0,
        logger=False,
        **limits,
    )


def test_env_eval_keeps_the_best_weights_of_an_sft_fit(tmp_path):
    """EnvEvalCallback(keep_best) on SFT (a module without a sampler of its own): every
    evaluation is logged, and the weights of the best one are back in the model at the end."""
    from agentprm.callbacks import EnvEvalCallback
    from agentprm.data import SFTDataModule
    from agentprm.policy import SFTModule

    callback = EnvEvalCallback(
        split="valid_seen", max_games=3, max_steps=4, every_n_steps=2, greedy=False, keep_best=True
    )
    module = SFTModule("tiny", lr=0.01, output_dir=str(tmp_path / "policy"))
    data = SFTDataModule(demonstrations="builtin:small", max_games=6, history_window=1, batch_size=4)
    _quiet_trainer(tmp_path, callback, max_steps=4).fit(module, data)
    assert [row["step"] for row in callback.history] == [0, 2, 4]
    top = max(row["eval/success_rate"] for row in callback.history)
    best = [row for row in callback.history if row["eval/success_rate"] == top][-1]  # the last of equals
    assert callback.best == (best["eval/success_rate"], best["step"])
    for name, value in module.state_dict().items():
        if name in callback._best_weights:
            torch.testing.assert_close(value, callback._best_weights[name], rtol=0, atol=0)
    # By epochs: once at the start and at the end of each of the 2 epochs (3 batches each).
    by_epoch = EnvEvalCallback(split="valid_seen", max_games=2, max_steps=3, every_n_epochs=1)
    _quiet_trainer(tmp_path, by_epoch, max_epochs=2, limit_train_batches=3).fit(SFTModule("tiny"), data)
    assert [row["step"] for row in by_epoch.history] == [0, 3, 6]
