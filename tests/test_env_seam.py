"""The environment seam: a new environment (examples/corridor.py, not ALFWorld) plugged in by
class_path and played by every stage end to end: rollouts, targets, a PRM fit, online DPO with the
env-eval callback, and Best-of-N evaluation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from agentprm.cli import main
from agentprm.envs import env_factory
from agentprm.envs.base import EnvFactory

ROOT = Path(__file__).resolve().parents[1]
ENV = "corridor.CorridorEnvFactory"


@pytest.fixture(autouse=True)
def _examples_on_path(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "examples"))


@pytest.fixture(scope="module")
def corridor_model(tmp_path_factory):
    """A tiny model whose word-level vocabulary holds the corridor's words (no ALFWorld words)."""
    import sys

    sys.path.insert(0, str(ROOT / "examples"))
    try:
        from corridor import CorridorEnvFactory
    finally:
        sys.path.remove(str(ROOT / "examples"))
    from agentprm.backbone import build_tiny_model, prompt_corpus

    out = tmp_path_factory.mktemp("corridor") / "tiny"
    return build_tiny_model(out, corpus=[*prompt_corpus(), *CorridorEnvFactory().vocabulary()], num_layers=2)


def _env_args(key: str = "data.init_args", games: int = 4) -> list[str]:
    return [f"--{key}.data=null", f"--{key}.env.class_path={ENV}", f"--{key}.env.init_args.games={games}"]


def test_the_corridor_is_a_batch_env_and_the_factory_names_its_games():
    from corridor import CorridorEnv, CorridorEnvFactory

    from agentprm.envs.base import BatchEnv

    factory = CorridorEnvFactory(games=3)
    assert factory.game_ids("train") == ["train/corridor-1", "train/corridor-2", "train/corridor-3"]
    env = factory.make(max_steps=3)
    assert isinstance(env, BatchEnv) and isinstance(env, CorridorEnv)
    first = env.reset(["train/corridor-2", "train/corridor-3"])
    assert [s.task for s in first] == ["reach room 2.", "reach room 3."]
    assert [s.observation for s in first] == ["You are in room 0.", "You are in room 0."]
    env.step(["go east", "go west"])
    last = env.step(["go east", "go east"])
    assert [(s.won, s.done, s.reward) for s in last] == [(True, True, 1.0), (False, False, 0.0)]
    assert env.step([None, "look"])[1].done  # the budget of 3 actions is spent
    assert factory.identity() == {"class_path": "corridor.CorridorEnvFactory", "init_args": {"games": 3}}
    assert factory == CorridorEnvFactory(games=3) and factory != CorridorEnvFactory(games=4)
    with pytest.raises(ValueError, match="unknown split 'valid_unseen'; expected one of train, test"):
        factory.game_ids("valid_unseen")


def test_data_is_the_alfworld_shorthand_and_both_at_once_is_refused():
    from corridor import CorridorEnvFactory

    from agentprm.data import RolloutDataModule
    from agentprm.envs.alfworld import AlfWorldEnvFactory

    assert env_factory(None, None) == AlfWorldEnvFactory("builtin:small")
    assert RolloutDataModule(data="builtin:small").env == RolloutDataModule(env=AlfWorldEnvFactory()).env
    with pytest.raises(ValueError, match=r"data.data \('builtin:small'\) and data.env are both given"):
        RolloutDataModule(data="builtin:small", env=CorridorEnvFactory())
    with pytest.raises(TypeError, match=r"data\.env must be an EnvFactory, found str"):
        env_factory(None, "builtin:small")  # type: ignore[arg-type]
    assert issubclass(CorridorEnvFactory, EnvFactory)


def test_reference_labels_need_an_environment_with_an_expert(tmp_path, corridor_model, capsys):
    args = ["predict", "-c", str(ROOT / "configs/rollout/quickstart.yaml"), *_env_args()]
    args += [f"--model.init_args.model={corridor_model}", f"--model.init_args.output_dir={tmp_path / 'r'}"]
    args += ["--model.init_args.reference_turns=1", "--trainer.enable_progress_bar=false"]
    assert main(args) == 2
    assert "reference_turns=1 needs an environment with a search expert" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()  # stopped before anything was written


def test_every_stage_plays_a_new_environment_end_to_end(tmp_path, corridor_model):
    quiet = ["--trainer.enable_progress_bar=false"]
    # 1. Rollouts of the untrained policy, with branches (replayed prefixes: no snapshots here).
    rollouts = tmp_path / "rollouts"
    args = ["predict", "-c", str(ROOT / "configs/rollout/quickstart.yaml"), *_env_args(), *quiet]
    args += [f"--model.init_args.model={corridor_model}", f"--model.init_args.output_dir={rollouts}"]
    args += [f"--trainer.default_root_dir={tmp_path}", "--model.init_args.branches=1"]
    args += ["--model.init_args.temperature=3.0"]  # the untrained model is peaked on `look`
    args += ["--data.init_args.max_steps=8", "--data.init_args.rollouts_per_game=3"]
    assert main(args) == 0
    manifest = json.loads((rollouts / "manifest.json").read_text())
    assert manifest["episodes"] == 12 and manifest["failures"] == 0 and manifest["branch_episodes"] == 12
    assert manifest["env"] == "CorridorEnvFactory(games=4)" and 0 < manifest["won"] < 12
    assert set(manifest["success_rate_per_task_type"]) == {"corridor"}
    settings = json.loads((rollouts / "settings.json").read_text())
    assert settings["episodes"]["env"] == {"class_path": ENV, "init_args": {"games": 4}}

    # 2. Targets and a PRM from them.
    prm = tmp_path / "prm"
    args = ["fit", "-c", str(ROOT / "configs/prm/absolute.yaml"), *quiet, f"--trainer.default_root_dir={prm}"]
    args += [f"--model.init_args.model={corridor_model}", f"--data.init_args.rollouts=[{rollouts}]"]
    args += [f"--model.init_args.output_dir={prm / 'prm'}", "--trainer.max_epochs=2"]
    assert main(args) == 0
    assert (prm / "prm" / "head.pt").is_file()

    # 3. Online DPO against it, with reset states of the environment and the env-eval callback on it.
    callback = {
        "class_path": "agentprm.callbacks.EnvEvalCallback",
        "init_args": {
            "env": {"class_path": ENV, "init_args": {"games": 4}},
            "split": "test",
            "max_steps": 10,
            "every_n_steps": 2,
        },
    }
    (tmp_path / "cb.yaml").write_text(yaml.safe_dump({"trainer": {"callbacks+": [callback]}}))
    policy = tmp_path / "policy"
    args = ["fit", "-c", str(ROOT / "configs/policy/quickstart.yaml"), "-c", str(tmp_path / "cb.yaml")]
    args += quiet
    args += [f"--trainer.default_root_dir={policy}", "--trainer.max_steps=4", "--trainer.log_every_n_steps=1"]
    args += [f"--model.init_args.model={corridor_model}", f"--model.init_args.prm={prm / 'prm'}"]
    args += [f"--model.init_args.output_dir={policy / 'policy'}", f"--data.init_args.rollouts=[{rollouts}]"]
    args += [f"--data.init_args.reset_env.class_path={ENV}", "--data.init_args.batch_size=4"]
    args += ["--data.init_args.val_fraction=0.25", "--model.init_args.candidates=distinct"]
    assert main(args) == 0
    evals = [json.loads(line) for line in next(policy.rglob("env_eval.jsonl")).read_text().splitlines()]
    assert [e["step"] for e in evals] == [0, 2, 4] and all(e["games"] == 3 for e in evals)
    assert {"eval/success_rate", "eval/success_rate/corridor"} <= set(evals[0])

    # 4. Best-of-N evaluation of the new policy with the PRM on the held-out corridors.
    out = tmp_path / "eval"
    args = ["test", "-c", str(ROOT / "configs/eval/quickstart.yaml"), *_env_args(), *quiet]
    args += [f"--model.init_args.model={policy / 'policy'}", f"--model.init_args.prm={prm / 'prm'}"]
    args += [f"--model.init_args.output_dir={out}", "--model.init_args.best_of_n=3"]
    args += ["--data.init_args.split=test", "--data.init_args.max_steps=10"]
    args += [f"--trainer.default_root_dir={tmp_path}"]
    assert main(args) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["episodes"] == 3 and summary["setting"]["best_of_n"] == 3
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert {r["game_id"] for r in rows} == {"test/corridor-5", "test/corridor-6", "test/corridor-7"}
