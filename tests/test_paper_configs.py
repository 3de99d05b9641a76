"""The paper-scale configs (configs/alfworld/llama-3.2-3b/): they parse, carry the paper's settings,
run end to end with a tiny-model override, and `agentprm iterate` loads their loop config."""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path

import pytest
import yaml

from agentprm.cli import main

ROOT = Path(__file__).resolve().parents[1]
PAPER = Path("configs/alfworld/llama-3.2-3b")
VERBS = {
    "sft.yaml": "fit",
    "rollout.yaml": "predict",
    "prm.yaml": "fit",
    "prm_inverse.yaml": "fit",
    "policy.yaml": "fit",
    "eval_valid_unseen.yaml": "test",
}
STAGES = list(VERBS)
QUIET = "--trainer.enable_progress_bar=false"


@pytest.fixture(autouse=True)
def _at_root(monkeypatch):
    monkeypatch.chdir(ROOT)  # the configs name each other by paths relative to the repository root


def _header_commands(name: str) -> list[list[str]]:
    """Every `agentprm …` command line of a config's header comment, split into arguments."""
    lines = (ROOT / PAPER / name).read_text().splitlines()
    header = [line.lstrip("#").strip() for line in lines if line.startswith("#")]
    return [shlex.split(line) for line in header if line.startswith("agentprm ")]


def _print_config(argv: list[str], capsys) -> dict:
    with pytest.raises(SystemExit) as done:
        main([*argv, "--print_config"])
    assert done.value.code in (0, None)
    return yaml.safe_load(capsys.readouterr().out)


def _load(name: str) -> dict:
    return yaml.safe_load((ROOT / PAPER / name).read_text())


def test_the_directory_holds_exactly_the_paper_configs():
    assert sorted(p.name for p in (ROOT / PAPER).glob("*.yaml")) == sorted([*STAGES, "iterate.yaml"])


@pytest.mark.parametrize("name", STAGES)
def test_header_commands_parse(name, capsys):
    commands = _header_commands(name)
    assert commands, f"{name}: the header comment must hold the command that runs it"
    assert commands[0] == ["agentprm", VERBS[name], "--config", str(PAPER / name)], commands[0]
    for command in commands:  # the single-GPU command, the DDP one and any variant
        printed = _print_config(command[1:], capsys)
        assert printed["model"]["class_path"].startswith("agentprm.")
        init = {**printed["data"]["init_args"], **printed["model"]["init_args"]}  # SFT renders in its data
        assert init["template"] == "paper" and init["response_format"] == "reason_action"
        assert init["history_window"] is None
        if "-c" in command:  # composed with a trainer fragment: still GPU, still bf16
            assert printed["trainer"]["strategy"] == "ddp"
            assert printed["trainer"]["precision"].startswith("bf16")


def test_paper_hyper_parameters():
    """The numbers method.md gives (§4.1, §6.3, §7.3, §7.7, §8.2), as the files state them."""
    sft, rollout, prm, inverse = (_load(n) for n in STAGES[:4])
    policy, evaluation = _load("policy.yaml"), _load("eval_valid_unseen.yaml")
    for cfg in (sft, prm, inverse, policy):
        assert cfg["trainer"]["accelerator"] == "gpu" and cfg["trainer"]["precision"] == "bf16-mixed"
        assert cfg["model"]["init_args"]["model"] != "tiny"
    assert sft["model"]["init_args"]["model"] == "meta-llama/Llama-3.2-3B-Instruct"
    assert prm["model"]["init_args"]["model"] == "meta-llama/Llama-3.2-3B-Instruct"

    def global_batch(cfg: dict) -> int:
        return cfg["data"]["init_args"]["batch_size"] * cfg["trainer"]["accumulate_grad_batches"]

    s = sft["model"]["init_args"]
    assert (s["lr"], s["warmup_steps"], s["min_lr_ratio"]) == (3e-5, 10, 0.0)
    assert sft["trainer"]["gradient_clip_val"] == 0.3 and sft["data"]["init_args"]["max_length"] == 4000
    assert global_batch(sft) == 64 and sft["trainer"]["max_epochs"] == 1

    r, rd = rollout["model"]["init_args"], rollout["data"]["init_args"]
    assert (r["mode"], r["temperature"], r["max_new_tokens"]) == ("generate", 0.3, 256)
    assert (rd["data"], rd["split"], rd["max_steps"]) == ("alfworld", "train", 30)
    assert rd["max_games"] * rd["rollouts_per_game"] == 10_240

    assert prm["model"]["init_args"]["lr"] == 5e-5 and prm["trainer"]["max_epochs"] == 1
    assert global_batch(prm) == 128
    objective = prm["model"]["init_args"]["objective"]
    assert objective["class_path"] == "agentprm.objectives.AbsoluteObjective"
    assert objective["init_args"]["gamma"] == 0.95 and objective["init_args"]["discount"] == "to_go"
    i = inverse["model"]["init_args"]
    o = i["objective"]
    assert (o["class_path"], i["lr"], o["init_args"]["gamma"], global_batch(inverse)) == (
        "agentprm.objectives.InverseObjective",
        4.9e-5,
        0.95,
        384,
    )

    p = policy["model"]["init_args"]
    assert (p["beta"], p["lr"], p["temperature"], p["samples_per_state"]) == (0.03, 8e-7, 0.7, 2)
    assert (p["max_new_tokens"], p["non_stop_penalty"], p["mode"]) == (64, -1.0, "generate")
    assert policy["trainer"]["max_steps"] == 400 and global_batch(policy) == 30

    e, ed = evaluation["model"]["init_args"], evaluation["data"]["init_args"]
    assert (e["best_of_n"], e["temperature"], e["max_new_tokens"], e["mode"]) == (16, 0.3, 256, "generate")
    assert (ed["data"], ed["split"], ed["max_steps"]) == ("alfworld", "valid_unseen", 30)
    assert ed["rollouts_per_game"] == 1


def test_sft_config_trains_with_a_tiny_model(tmp_path):
    """The paper's SFT config itself (paper template, REASON/ACTION, clip 0.3, checkpointing), tiny model."""
    out = tmp_path / "sft"
    args = ["fit", "--config", str(PAPER / "sft.yaml"), "--model.init_args.model=tiny"]
    args += ["--trainer.accelerator=cpu", "--trainer.precision=32-true", "--trainer.max_steps=2"]
    args += ["--trainer.accumulate_grad_batches=1", "--trainer.limit_val_batches=1", QUIET]
    args += ["--data.init_args.demonstrations=builtin:small", "--data.init_args.max_games=8"]
    args += [f"--trainer.default_root_dir={out}", f"--model.init_args.output_dir={out / 'policy'}"]
    assert main(args) == 0
    assert (out / "policy" / "config.json").is_file() and list((out / "policy").glob("*.safetensors"))
    saved = yaml.safe_load(next(out.glob("lightning_logs/version_*/config.yaml")).read_text())
    assert saved["data"]["init_args"]["template"] == "paper"
    assert saved["model"]["init_args"]["gradient_checkpointing"] is True


def test_rollout_config_predicts_with_a_tiny_model(tmp_path):
    """The paper's rollout config (generate mode, REASON/ACTION) on 2 built-in games, 3 steps."""
    out = tmp_path / "rollouts"
    args = ["predict", "--config", str(PAPER / "rollout.yaml"), "--model.init_args.model=tiny"]
    args += ["--model.init_args.dtype=float32", "--trainer.accelerator=cpu", "--trainer.precision=32-true"]
    args += ["--data.init_args.data=builtin:small", "--data.init_args.max_games=2"]
    args += ["--data.init_args.max_steps=3", "--data.init_args.rollouts_per_game=1", QUIET]
    # The untrained tiny model never ends its turn: cap the response so the test stays fast.
    args += ["--model.init_args.max_new_tokens=16", f"--model.init_args.output_dir={out}"]
    args += [f"--trainer.default_root_dir={out}"]
    assert main(args) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["episodes"] == manifest["expected_episodes"] == 2
    assert (manifest["mode"], manifest["temperature"], manifest["policy"]) == ("generate", 0.3, "pi_0")
    assert manifest["failures"] == 0 and 0 < manifest["mean_actions"] <= 3


def test_iterate_config_loads(monkeypatch, capsys):
    """`agentprm iterate` reads iterate.yaml into IterateConfig; every stage file exists."""
    import agentprm.iterate as iterate_module

    captured = {}
    monkeypatch.setattr(iterate_module, "iterate", lambda cfg, log=print: captured.setdefault("cfg", cfg))
    assert iterate_module.main(["--config", str(PAPER / "iterate.yaml")]) == 0
    cfg = captured["cfg"]
    assert isinstance(cfg, iterate_module.IterateConfig)
    assert (cfg.runs_dir, cfg.name, cfg.iterations, cfg.bon_n) == ("runs", "alfworld-llama-3.2-3b", 3, 16)
    assert cfg.prm_init == "policy" and cfg.method == "agentprm" and cfg.policy is None
    expected = {
        "sft": "sft.yaml",
        "rollout": "rollout.yaml",
        "prm": "prm.yaml",
        "policy": "policy.yaml",
        "eval": "eval_valid_unseen.yaml",
    }
    assert {k: Path(s.config) for k, s in cfg.stages.items()} == {k: PAPER / v for k, v in expected.items()}
    for stage in cfg.stages.values():
        assert isinstance(stage, iterate_module.Stage) and (ROOT / stage.config).is_file()
    # --print_config works too, and the policy-alone evaluation iterate builds samples at T = 0.3.
    with pytest.raises(SystemExit):
        iterate_module.main(["--config", str(PAPER / "iterate.yaml"), "--print_config"])
    assert yaml.safe_load(capsys.readouterr().out)["name"] == "alfworld-llama-3.2-3b"
    alone = ["test", "-c", cfg.stages["eval"].config, "--model.init_args.prm=null"]
    printed = _print_config([*alone, "--model.init_args.greedy=true", *cfg.stages["eval"].args], capsys)
    assert printed["model"]["init_args"]["greedy"] is False


@pytest.mark.alfworld_data
def test_paper_splits_have_the_paper_game_counts():
    """With the real data: 134 valid_unseen games (method.md §2.1) and enough train games for 640."""
    from agentprm.data import RolloutDataModule

    root = Path(os.environ.get("ALFWORLD_DATA", "~/.cache/alfworld")).expanduser() / "json_2.1.1"
    if not any((root / "valid_unseen").glob("*/*/game.tw-pddl")):
        pytest.skip(f"no ALFWorld data under {root} (run `alfworld-download`)")
    evaluation = RolloutDataModule(**_load("eval_valid_unseen.yaml")["data"]["init_args"])
    evaluation.setup()
    assert evaluation.num_episodes == 134
    rollout = RolloutDataModule(**_load("rollout.yaml")["data"]["init_args"])
    rollout.setup()
    assert rollout.num_episodes == 10_240
