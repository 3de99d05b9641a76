"""The sampler seam: a sampler from outside the package (examples/random_policy.py, the random
agent) plugged in by class_path and used by rollouts, evaluation and online DPO; what it cannot do
is refused with one line before any work."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from agentprm.cli import main
from agentprm.records import read_jsonl

ROOT = Path(__file__).resolve().parents[1]
SAMPLER = "--model.init_args.sampler.class_path=random_policy.RandomSamplerFactory"
TINY = "--model.init_args.model=tiny"


@pytest.fixture(autouse=True)
def _examples_on_path(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "examples"))


def _rollout(tmp_path: Path, out: Path, extra: list[str] = ()) -> int:
    args = [
        "predict",
        "-c",
        str(ROOT / "configs/rollout/quickstart.yaml"),
        SAMPLER,
        "--model.init_args.model=tiny",
    ]
    args += [f"--model.init_args.output_dir={out}", f"--trainer.default_root_dir={tmp_path}"]
    args += ["--trainer.enable_progress_bar=false", "--data.init_args.max_games=4"]
    args += ["--data.init_args.rollouts_per_game=2", "--data.init_args.max_steps=5", *extra]
    return main(args)


def test_rollouts_act_with_the_plugged_sampler_reproducibly(tmp_path):
    out = tmp_path / "random"
    assert _rollout(tmp_path, out, ["--model.init_args.branches=1"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["sampler"] == "RandomSamplerFactory()" and manifest["episodes"] == 8
    assert manifest["branch_episodes"] == 8  # branches replay a prefix, then sample again
    settings = json.loads((out / "settings.json").read_text())
    assert settings["sampler"] == {"class_path": "random_policy.RandomSamplerFactory", "init_args": {}}
    steps = [s for t in read_jsonl(next(out.glob("batch-*.jsonl"))) for s in t.steps]
    assert steps and all(s.command in s.admissible_commands for s in steps)
    assert all(s.logprob == pytest.approx(-math.log(len(s.admissible_commands))) for s in steps)
    again = tmp_path / "again"
    assert _rollout(tmp_path, again, ["--model.init_args.branches=1"]) == 0
    assert [p.read_text() for p in sorted(out.glob("batch-*"))] == [
        p.read_text() for p in sorted(again.glob("batch-*"))
    ]


def test_a_capability_the_sampler_lacks_is_refused_before_any_work(tmp_path, capsys):
    out = tmp_path / "distinct"
    extra = ["--model.init_args.branches=1", "--model.init_args.branch_actions=distinct"]
    assert _rollout(tmp_path, out, extra) == 2
    err = capsys.readouterr().err
    assert "model.branch_actions=distinct needs a sampler that scores every admissible command" in err
    assert "RandomSampler does not" in err and not out.exists()

    args = ["test", "-c", str(ROOT / "configs/eval/quickstart.yaml"), SAMPLER, TINY]
    args += [
        "--model.init_args.prm=oracle",
        "--model.init_args.candidates=all",
        "--data.init_args.max_games=2",
    ]
    args += [f"--model.init_args.output_dir={tmp_path / 'eval'}", f"--trainer.default_root_dir={tmp_path}"]
    assert main(args) == 2
    assert (
        "model.candidates=all needs a sampler that scores every admissible command" in capsys.readouterr().err
    )


def test_best_of_n_evaluation_draws_its_candidates_from_the_plugged_sampler(tmp_path):
    out = tmp_path / "eval"
    args = ["test", "-c", str(ROOT / "configs/eval/quickstart.yaml"), SAMPLER, TINY]
    args += ["--model.init_args.prm=oracle", "--model.init_args.best_of_n=4", "--data.init_args.max_games=6"]
    args += ["--model.init_args.candidates=distinct", "--data.init_args.max_steps=10"]
    args += [f"--model.init_args.output_dir={out}", f"--trainer.default_root_dir={tmp_path}"]
    assert main([*args, "--trainer.enable_progress_bar=false"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["setting"]["sampler"] == "RandomSamplerFactory()" and summary["episodes"] == 6
    assert summary["success_rate"] > 0  # four random candidates ranked by the oracle win some games


def test_online_dpo_samples_its_candidates_with_the_plugged_sampler(tmp_path, scripted_rollouts):
    from random_policy import RandomSamplerFactory

    from agentprm.data import policy_states, read_trajectories
    from agentprm.dpo import OnlineDPOModule

    module = OnlineDPOModule("tiny", prm="oracle", sampler=RandomSamplerFactory(), candidates="distinct")
    states = policy_states(read_trajectories([str(scripted_rollouts)]))[:4]
    scored = module.score_states(states, seed=0)
    for state, s in zip(states, scored, strict=True):
        assert len({x.command for x in s.samples}) == min(4, len(state.admissible_commands))
        assert all(x.logprob == pytest.approx(-math.log(len(state.admissible_commands))) for x in s.samples)

    out = tmp_path / "policy"
    args = [
        "fit",
        "-c",
        str(ROOT / "configs/policy/quickstart.yaml"),
        SAMPLER,
        "--model.init_args.model=tiny",
    ]
    args += ["--model.init_args.prm=oracle", "--model.init_args.candidates=distinct", "--trainer.max_steps=3"]
    args += [f"--trainer.default_root_dir={out}", f"--model.init_args.output_dir={out / 'policy'}"]
    args += [f"--data.init_args.rollouts=[{scripted_rollouts}]", "--data.init_args.batch_size=4"]
    args += ["--trainer.enable_progress_bar=false", "--trainer.log_every_n_steps=1"]
    assert main(args) == 0
    rows = (out / "lightning_logs" / "version_0" / "metrics.csv").read_text().splitlines()
    assert "dpo/loss" in rows[0] and len(rows) > 1 and (out / "policy" / "config.json").is_file()
