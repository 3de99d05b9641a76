"""`agentprm iterate`: the whole loop at toy sizes, resume after a kill, the same result twice."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from agentprm.cli import main
from agentprm.iterate import Stage
from agentprm.report import load_run

ROOT = Path(__file__).resolve().parents[1]
QUIET = "--trainer.enable_progress_bar=false"


def tiny_config(tmp_path: Path, name: str = "tiny", **changes) -> Path:
    """configs/quickstart.yaml with every stage shrunk to seconds (one iteration)."""
    cfg = yaml.safe_load((ROOT / "configs/quickstart.yaml").read_text())
    cfg.update(name=name, iterations=1, runs_dir=str(tmp_path / "runs"), bon_n=2, **changes)
    args = {
        "sft": ["--trainer.max_epochs=1", "--trainer.limit_train_batches=3", "--trainer.limit_val_batches=1"],
        "rollout": ["--data.init_args.max_games=6", "--data.init_args.rollouts_per_game=2"],
        "prm": ["--trainer.max_epochs=1", "--data.init_args.val_fraction=0.34"],
        "policy": ["--trainer.max_steps=2", "--data.init_args.batch_size=4", "--trainer.limit_val_batches=1"],
        "eval": ["--data.init_args.max_games=3"],
    }
    for stage, extra in args.items():
        configs = Stage(cfg["stages"][stage]["config"]).configs
        cfg["stages"][stage]["config"] = [str(ROOT / c) for c in configs]
        steps = ["--data.init_args.max_steps=5"] if stage in ("rollout", "eval") else []
        cfg["stages"][stage]["args"] = [*extra, *steps, QUIET]
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _comparable(summary: dict) -> list[dict]:
    drop = {"stage_seconds", "policy"}
    return [{k: v for k, v in row.items() if k not in drop} for row in summary["iterations"]]


@pytest.mark.slow
def test_iterate_runs_the_loop_and_a_rerun_skips_every_stage(tmp_path, capsys):
    config = tiny_config(tmp_path, eval_episodes=2, eval_train_games=2)
    assert main(["iterate", "--config", str(config)]) == 0
    run = tmp_path / "runs" / "tiny"
    summary = json.loads((run / "summary.json").read_text())
    rows = summary["iterations"]
    assert [r["iteration"] for r in rows] == [0, 1]
    for key in ("policy_success_rate", "bon_success_rate", "mean_actions", "prm_pair_acc"):
        assert key in rows[0] and key in rows[1]
    assert rows[0]["bon_success_rate"] is None and rows[1]["bon_n"] == 2
    assert 0.0 <= rows[1]["bon_success_rate"] <= 1.0 and rows[1]["mean_actions"] > 0
    # Paired with the previous policy on the same episodes (3 games x 2 sampled episodes).
    paired = rows[1]["paired_vs_previous"]
    assert paired["episodes"] == rows[1]["episodes"] == 6 and rows[0]["paired_vs_previous"] is None
    assert paired["difference"] == pytest.approx(
        rows[1]["policy_success_rate"] - rows[0]["policy_success_rate"]
    )
    assert rows[1]["bon_vs_policy"]["episodes"] == 6 and rows[1]["train_paired_vs_previous"]["episodes"] == 4
    for stage in ("rollouts", "prm", "policy", "eval/policy", "eval/bon"):
        assert (run / "iter_1" / stage / "done.json").is_file(), stage
        command = (run / "iter_1" / stage / "command.txt").read_text()
        assert command.startswith("agentprm ") and "--trainer.default_root_dir=" in command
    assert (run / "iter_1/policy/model/config.json").is_file()
    assert (run / "iter_1/prm/model/head.pt").is_file()
    # Each stage's resolved config is saved beside its outputs.
    assert list((run / "iter_1/prm").glob("lightning_logs/version_*/config.yaml"))
    assert (run / "iter_1/rollouts/config.yaml").is_file()
    table = capsys.readouterr().out
    assert "iter  policy" in table and "Δ vs previous (paired)" in table and "train games:" in table

    start = time.time()
    assert main(["iterate", "--config", str(config)]) == 0
    assert time.time() - start < 30  # nothing recomputed
    assert "done already, skipped" in capsys.readouterr().out
    assert _comparable(json.loads((run / "summary.json").read_text())) == _comparable(summary)

    assert main(["report", str(run)]) == 0
    assert list((run / "report").glob("*.png")) and (run / "report" / "report.md").is_file()
    # The quickstart's DPO stage brings the reward-hacking bundle: both panels of paper Fig. 3.
    curves = load_run(run).curves[1]
    assert curves["eval/success_rate"] and curves["monitor/prm_score"]
    assert "not logged" not in (run / "report" / "report.md").read_text()

    # Another seed under the same name: refused before any work, naming the difference.
    capsys.readouterr()
    assert main(["iterate", "--config", str(config), "--seed", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("agentprm iterate: ") and "seed: 0 → 1" in err and "--overwrite true" in err
    assert json.loads((run / "iterate.json").read_text())["seed"] == 0


def test_a_stage_is_skipped_only_for_the_same_command(tmp_path):
    from agentprm.iterate import StageRunner
    from agentprm.provenance import SettingsChanged

    def runner(log, **kwargs):  # any agentprm command, in this process
        return StageRunner(False, log, run=main, **kwargs)

    folder, log = tmp_path / "stage", []
    argv = ["games", "list", "--split", "valid_seen"]
    assert runner(log.append)("s", folder, argv) is True
    assert runner(log.append)("s", folder, argv) is False  # done, same command
    other = ["games", "list", "--split", "valid_unseen"]
    with pytest.raises(
        SettingsChanged, match=r"stage s: .* was made by another command \(was valid_seen, now valid_unseen\)"
    ):
        runner(log.append)("s", folder, other)
    (folder / "stale.txt").write_text("old output")
    assert runner(log.append, overwrite=True)("s", folder, other) is True
    assert not (folder / "stale.txt").exists()
    # Once a stage ran, the later ones run again: their inputs were remade.
    stages = runner(log.append)
    later = tmp_path / "later"
    assert stages("t", later, argv) is True
    assert stages("s", folder, other) is True  # done with this command, but after a stage that ran


def test_iterate_names_missing_stage_configs(tmp_path, capsys):
    config = tiny_config(tmp_path)
    cfg = yaml.safe_load(config.read_text())
    cfg["stages"]["prm"]["config"] = str(tmp_path / "nope.yaml")
    config.write_text(yaml.safe_dump(cfg))
    assert main(["iterate", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert re.search(r"^agentprm iterate: stages.prm.config: .*nope.yaml does not exist", err, re.M)


@pytest.mark.parametrize(
    ("arg", "said"),
    [
        ("--model.init_args.lrr=0.1", "stages.prm: model: Option 'lrr' is not accepted"),
        (
            "--model.init_args.objective.init_args.delta=0.1",
            "stages.prm: model.objective: Option 'delta' is not accepted",
        ),
        ("--trainer.max_epochs=abc", "stages.prm: trainer.max_epochs: expected int or None, given 'abc'"),
    ],
)
def test_iterate_checks_every_stage_command_before_running_any(tmp_path, capsys, arg, said):
    config = tiny_config(tmp_path)
    cfg = yaml.safe_load(config.read_text())
    cfg["stages"]["prm"]["args"].append(arg)
    config.write_text(yaml.safe_dump(cfg))
    assert main(["iterate", "--config", str(config)]) == 2
    assert f"agentprm iterate: {said}" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()  # nothing ran, nothing was written


def test_every_key_iterate_sets_is_a_parameter_of_a_stage_class():
    """The loop wires stages through --model.init_args.* / --data.init_args.* strings: each must
    name a parameter of a class the stage configs use, or a rename would fail only mid-loop."""
    import importlib
    import inspect

    source = (ROOT / "src/agentprm/iterate.py").read_text()
    keys = set(re.findall(r"--(model|data)\.init_args\.(\w+)", source))
    assert len(keys) >= 10
    accepted: dict[str, set[str]] = {"model": set(), "data": set()}
    for stage in yaml.safe_load((ROOT / "configs/quickstart.yaml").read_text())["stages"].values():
        configs = Stage(stage["config"]).configs
        for part in ("model", "data"):
            path = yaml.safe_load((ROOT / configs[0]).read_text())[part]["class_path"]
            module, name = path.rsplit(".", 1)
            cls = getattr(importlib.import_module(module), name)
            accepted[part] |= set(inspect.signature(cls).parameters)
    missing = sorted(f"--{part}.init_args.{key}" for part, key in keys if key not in accepted[part])
    assert not missing, missing


def _agentprm(*args: str) -> list[str]:
    return [sys.executable, "-m", "agentprm.cli", *args]


@pytest.mark.slow
def test_killed_iterate_resumes_to_the_same_result(tmp_path):
    """Kill the loop with SIGKILL in the middle of the PRM stage; the rerun ends where an
    uninterrupted run ends, without redoing the finished stages."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    straight = tiny_config(tmp_path, name="straight")
    subprocess.run(_agentprm("iterate", "--config", str(straight)), check=True, env=env, capture_output=True)

    resumed = tiny_config(tmp_path, name="resumed")
    run = tmp_path / "runs" / "resumed"
    command = _agentprm("iterate", "--config", str(resumed))
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)
    marker = run / "iter_1" / "prm" / "command.txt"
    while not marker.is_file() and proc.poll() is None:
        time.sleep(0.2)
    assert proc.poll() is None, "the run ended before the PRM stage started"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (run / "iter_1" / "prm" / "done.json").is_file()
    finished_before = (run / "iter_1" / "rollouts" / "done.json").read_text()

    out = subprocess.run(
        _agentprm("iterate", "--config", str(resumed)), check=True, env=env, capture_output=True, text=True
    ).stdout
    assert "[iter_1/rollout] done already, skipped" in out and "[iter_0/sft] done already, skipped" in out
    assert (run / "iter_1" / "rollouts" / "done.json").read_text() == finished_before
    a = json.loads((tmp_path / "runs/straight/summary.json").read_text())
    b = json.loads((run / "summary.json").read_text())
    assert _comparable(a) == _comparable(b)


@pytest.mark.distributed
def test_iterate_under_ddp_on_two_cpu_processes(tmp_path):
    """Every stage runs as 2 gloo processes (the ddp fragment); the loop finishes and summarises."""
    config = tiny_config(tmp_path, name="ddp", trainer=[str(ROOT / "configs/trainer/ddp.yaml")])
    cfg = yaml.safe_load(config.read_text())
    for stage in ("rollout", "eval"):  # at least one batch of episodes per process
        cfg["stages"][stage]["args"].append("--data.init_args.batch_size=2")
    config.write_text(yaml.safe_dump(cfg))
    subprocess.run(_agentprm("iterate", "--config", str(config)), check=True, timeout=900)
    summary = json.loads((tmp_path / "runs/ddp/summary.json").read_text())
    assert [r["iteration"] for r in summary["iterations"]] == [0, 1]
    shards = sorted(p.name for p in (tmp_path / "runs/ddp/iter_1/rollouts").glob("batch-*.jsonl"))
    assert any(".rank1." in s for s in shards)  # the second process rolled out its share
