"""SLURM: Lightning detects the cluster from srun's variables, and the sbatch template is valid bash.

The variables are those srun sets for task 5 of a 2-node × 4-task job; no process group is created
(Trainer construction reads the environment, only ``fit`` connects the ranks).
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
import yaml
from lightning.pytorch import Trainer
from lightning.pytorch.plugins.environments import LightningEnvironment, SLURMEnvironment

ROOT = Path(__file__).resolve().parents[1]
SBATCH = ROOT / "scripts" / "slurm" / "agentprm.sbatch"

_SRUN_TASK_5_OF_8 = {
    "SLURM_NTASKS": "8",
    "SLURM_NTASKS_PER_NODE": "4",
    "SLURM_NNODES": "2",
    "SLURM_PROCID": "5",
    "SLURM_LOCALID": "1",
    "SLURM_NODEID": "1",
    "SLURM_JOB_NAME": "agentprm",
    "SLURM_JOB_ID": "4242",
    "SLURM_NODELIST": "gpu[07-08]",
}


@pytest.fixture
def srun_task(monkeypatch):
    """The environment of task 5 (node 1, local rank 1) of an 8-task, 2-node srun job step."""
    for key in ("MASTER_ADDR", "MASTER_PORT", "LOCAL_RANK", "RANK", "WORLD_SIZE", "NODE_RANK", "GROUP_RANK"):
        monkeypatch.delenv(key, raising=False)
    for key, value in _SRUN_TASK_5_OF_8.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # no `srun` on PATH: no "srun exists but unused" warning


def _ddp_fragment() -> dict:
    return yaml.safe_load((ROOT / "configs" / "trainer" / "ddp.yaml").read_text())["trainer"]


def test_trainer_with_the_ddp_fragment_detects_slurm_ranks(srun_task):
    cfg = {**_ddp_fragment(), "accelerator": "cpu", "devices": 4, "num_nodes": 2}
    trainer = Trainer(**cfg, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    env = trainer.strategy.cluster_environment
    assert isinstance(env, SLURMEnvironment)
    assert (env.world_size(), env.global_rank(), env.local_rank(), env.node_rank()) == (8, 5, 1, 1)
    assert (trainer.world_size, trainer.global_rank, trainer.local_rank, trainer.node_rank) == (8, 5, 1, 1)
    assert trainer.num_devices == 4 and trainer.num_nodes == 2
    assert env.main_address == "gpu07"  # first node of the range
    assert env.main_port == 15000 + 4242  # derived from the job id: every task agrees without talking
    assert env.auto_requeue and env.requeue_signal == signal.SIGUSR1  # matches --signal=SIGUSR1@90


def test_launch_rejects_devices_that_disagree_with_the_allocation(srun_task):
    trainer = Trainer(accelerator="cpu", strategy="ddp", devices=2, num_nodes=2, logger=False)
    env = trainer.strategy.cluster_environment
    assert isinstance(env, SLURMEnvironment)
    with pytest.raises(ValueError, match="ntasks-per-node=4"):  # what the launcher checks at fit start
        env.validate_settings(num_devices=trainer.num_devices, num_nodes=trainer.num_nodes)


def test_interactive_job_names_are_not_slurm_managed(srun_task, monkeypatch):
    assert SLURMEnvironment.detect()
    monkeypatch.setenv("SLURM_JOB_NAME", "bash")  # `srun --pty bash`: the user launches processes
    assert not SLURMEnvironment.detect()
    trainer = Trainer(accelerator="cpu", strategy="ddp", devices=4, num_nodes=2, logger=False)
    assert isinstance(trainer.strategy.cluster_environment, LightningEnvironment)


def test_sbatch_template_is_valid_bash_and_requeues():
    bash = shutil.which("bash")
    assert bash is not None
    proc = subprocess.run([bash, "-n", str(SBATCH)], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    text = SBATCH.read_text()
    directives = dict(re.findall(r"^#SBATCH --([\w-]+)(?:=(\S+))?", text, flags=re.M))
    assert {"nodes", "ntasks-per-node", "gpus-per-node", "cpus-per-task", "time"} <= directives.keys()
    assert directives["signal"] == "SIGUSR1@90" and "requeue" in directives
    assert re.search(r'^srun agentprm "\$@"$', text, flags=re.M)


def test_sbatch_template_without_arguments_prints_usage(tmp_path):
    proc = subprocess.run(
        ["bash", str(SBATCH)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 2 and "usage: sbatch scripts/slurm/agentprm.sbatch" in proc.stderr
