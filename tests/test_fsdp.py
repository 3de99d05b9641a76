"""FSDP2 for real: SFT, the PRM and online DPO each fit as 2 CPU processes (gloo, fp32) under
Lightning's ModelParallelStrategy (configs/trainer/fsdp_cpu.yaml), their loss falls and the model
they save reloads; SFT under FSDP2 ends with the weights SFT under DDP ends with."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
FSDP = str(ROOT / "configs/trainer/fsdp_cpu.yaml")
QUIET = ("--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false")

pytestmark = pytest.mark.distributed


def _run(tmp_path: Path, *args: str) -> None:
    launch = ("LOCAL_RANK", "WORLD_SIZE", "RANK", "MASTER_PORT")
    env = {k: v for k, v in os.environ.items() if k not in launch}
    command = [str(Path(sys.executable).with_name("agentprm")), *args, *QUIET]
    proc = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]


def _losses(root: Path, column: str) -> list[float]:
    (path,) = root.glob("lightning_logs/version_*/metrics.csv")
    rows = list(csv.DictReader(path.open()))
    return [float(r[column]) for r in rows if r.get(column)]


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    from agentprm.backbone import load_causal_lm

    return {k: v.detach().clone() for k, v in load_causal_lm(str(folder)).state_dict().items()}


@pytest.fixture(scope="module")
def rollouts(tmp_path_factory) -> Path:
    """Rollouts of the tiny random policy on 6 training games (one process)."""
    base = tmp_path_factory.mktemp("fsdp-rollouts")
    out = base / "rollouts"
    _run(base, "predict", "-c", str(ROOT / "configs/rollout/quickstart.yaml"), "--model.init_args.model=tiny",
         f"--model.init_args.output_dir={out}", f"--trainer.default_root_dir={base}",
         "--data.init_args.max_games=6", "--data.init_args.rollouts_per_game=2",
         "--data.init_args.max_steps=6")  # fmt: skip
    return out


@pytest.fixture(scope="module")
def sft(tmp_path_factory) -> Path:
    """SFT under FSDP2 (with the quickstart's valid_seen evaluation callback, which gathers the
    weights to play), 12 steps."""
    base = tmp_path_factory.mktemp("fsdp-sft")
    _run(base, "fit", "-c", str(ROOT / "configs/sft/quickstart.yaml"), "-c", FSDP, *_sft_args(base))
    return base


def _sft_args(base: Path) -> list[str]:
    return [f"--trainer.default_root_dir={base}", "--trainer.max_epochs=1",
            "--trainer.limit_train_batches=12", "--trainer.limit_val_batches=2",
            "--trainer.log_every_n_steps=1", "--seed_everything=0",
            "--data.init_args.batch_size=8"]  # fmt: skip


def test_sft_under_fsdp_learns_saves_and_matches_ddp(sft, tmp_path):
    from torch.distributed.checkpoint import FileSystemReader

    losses = _losses(sft, "train/loss")
    assert len(losses) >= 10 and sum(losses[-3:]) / 3 < sum(losses[:3]) / 3
    sharded = _weights(sft / "policy")
    # Lightning's checkpoint of a sharded module is a distributed checkpoint (a folder of shards).
    (ckpt,) = sft.glob("lightning_logs/version_*/checkpoints/last.ckpt")
    assert ckpt.is_dir() and FileSystemReader(str(ckpt)).read_metadata().state_dict_metadata
    # The same fit under DDP (same seed, same shards of data per rank) ends with the same weights.
    ddp = tmp_path / "ddp"
    _run(tmp_path, "fit", "-c", str(ROOT / "configs/sft/quickstart.yaml"), "-c",
         str(ROOT / "configs/trainer/ddp.yaml"), "--trainer.accelerator=cpu", *_sft_args(ddp))  # fmt: skip
    replicated = _weights(ddp / "policy")
    assert sharded.keys() == replicated.keys()
    for key, value in sharded.items():
        torch.testing.assert_close(value, replicated[key], rtol=1e-4, atol=1e-5, msg=key)


def test_prm_under_fsdp_learns_saves_trunk_and_head_and_matches_ddp(rollouts, tmp_path):
    from agentprm.prm import PRMModule

    def fit(root: Path, fragment: str, *extra: str) -> PRMModule:
        _run(tmp_path, "fit", "-c", str(ROOT / "configs/prm/absolute.yaml"), "-c", fragment, *extra,
             f"--data.init_args.rollouts=[{rollouts}]", f"--trainer.default_root_dir={root}",
             f"--model.init_args.output_dir={root / 'prm'}", "--model.init_args.lr=0.003",
             "--trainer.max_epochs=3", "--trainer.log_every_n_steps=1", "--data.init_args.val_fraction=0.34",
             "--seed_everything=0")  # fmt: skip
        return PRMModule.load(str(root / "prm"))

    sharded = fit(tmp_path / "fsdp", FSDP)
    losses = _losses(tmp_path / "fsdp", "train/loss")
    assert len(losses) >= 3 and losses[-1] < losses[0]
    assert float(sharded.head.weight.detach().abs().sum()) > 0  # the head was gathered and saved
    # The same fit under DDP: the same trunk and head (the value head is an FSDP2 unit of its own).
    replicated = fit(tmp_path / "ddp", str(ROOT / "configs/trainer/ddp.yaml"), "--trainer.accelerator=cpu")
    theirs = replicated.state_dict()
    assert sharded.state_dict().keys() == theirs.keys()
    for key, value in sharded.state_dict().items():
        torch.testing.assert_close(value, theirs[key], rtol=1e-4, atol=1e-5, msg=key)


def test_online_dpo_under_fsdp_learns_and_saves(sft, rollouts, tmp_path):
    out = tmp_path / "pi1"
    _run(tmp_path, "fit", "-c", str(ROOT / "configs/policy/quickstart.yaml"), "-c", FSDP,
         f"--model.init_args.model={sft / 'policy'}", "--model.init_args.prm=oracle",
         "--model.init_args.candidates=distinct", "--model.init_args.lr=0.001",
         f"--data.init_args.rollouts=[{rollouts}]", f"--trainer.default_root_dir={tmp_path}",
         f"--model.init_args.output_dir={out}", "--trainer.max_steps=8", "--data.init_args.batch_size=4",
         "--trainer.log_every_n_steps=1", "--trainer.limit_val_batches=1")  # fmt: skip
    losses = _losses(tmp_path, "dpo/loss")
    assert len(losses) >= 4
    assert losses[0] == pytest.approx(0.6931, abs=1e-3)  # the policy starts as its reference
    assert sum(losses[-3:]) / 3 < losses[0]
    before, after = _weights(sft / "policy"), _weights(out)
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert all(torch.isfinite(v).all() for v in after.values())
