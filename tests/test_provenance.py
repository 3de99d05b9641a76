"""A rerun never passes off old results as new: settings fingerprints, iterate's stage commands,
and model saves that always leave one complete model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from agentprm.cli import main
from agentprm.provenance import SettingsChanged, check_settings, model_identity

ROOT = Path(__file__).resolve().parents[1]


def _predict(tmp_path: Path, out: Path, *extra: str) -> int:
    return main([
        "predict", "-c", str(ROOT / "configs/rollout/quickstart.yaml"), "--model.init_args.model=tiny",
        f"--model.init_args.output_dir={out}", f"--trainer.default_root_dir={tmp_path}",
        "--trainer.enable_progress_bar=false", "--data.init_args.max_games=4",
        "--data.init_args.rollouts_per_game=1", "--data.init_args.batch_size=2",
        "--data.init_args.max_steps=3",
        *extra,
    ])  # fmt: skip


def test_a_rollout_rerun_with_other_settings_stops_and_names_them(tmp_path, capsys, caplog):
    out = tmp_path / "rollouts"
    assert _predict(tmp_path, out) == 0
    before = {p.name: p.read_bytes() for p in out.glob("batch-*.jsonl")}
    assert _predict(tmp_path, out) == 0  # the same settings resume: every batch kept
    assert "2 finished batch(es) kept" in caplog.text  # through logging, wherever it prints
    changed = [
        "--model.init_args.seed=1",
        "--model.init_args.policy_id=pi_X",
        "--model.init_args.temperature=0.3",
    ]
    assert _predict(tmp_path, out, *changed) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # one line (after Lightning's own logs)
    assert err.startswith("agentprm predict: ") and "other settings" in err and "Traceback" not in err
    assert "seed: 0 → 1" in err and "temperature: 1.0 → 0.3" in err and "overwrite=true" in err
    assert {p.name: p.read_bytes() for p in out.glob("batch-*.jsonl")} == before  # nothing touched
    assert _predict(tmp_path, out, "--data.init_args.max_games=2") == 2  # other games: refused too
    assert _predict(tmp_path, out, *changed, "--model.init_args.overwrite=true") == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["policy"] == "pi_X" and manifest["seed"] == 1 and manifest["episodes"] == 4
    trajectories = [
        json.loads(line) for p in out.glob("batch-*.jsonl") for line in p.read_text().splitlines()
    ]
    assert {t["policy_id"] for t in trajectories} == {"pi_X"} and {t["seed"] for t in trajectories} == {1}


def test_an_evaluation_rerun_with_another_model_or_scorer_stops(tmp_path, capsys):
    from agentprm.backbone import load_causal_lm, load_tokenizer, save_hf

    out = tmp_path / "eval"
    base = ["test", "-c", str(ROOT / "configs/eval/quickstart.yaml"),
            f"--trainer.default_root_dir={tmp_path}", "--trainer.enable_progress_bar=false",
            f"--model.init_args.output_dir={out}", "--data.init_args.max_games=3",
            "--data.init_args.max_steps=3"]  # fmt: skip
    torch.manual_seed(0)
    save_hf(load_causal_lm("tiny"), load_tokenizer("tiny"), str(tmp_path / "pi"))
    alone = [f"--model.init_args.model={tmp_path / 'pi'}", "--model.init_args.prm=null"]
    assert main([*base, *alone]) == 0
    summary = (out / "summary.json").read_text()
    assert main([*base, *alone[:1], "--model.init_args.prm=oracle", "--model.init_args.best_of_n=2"]) == 2
    assert "best_of_n: 1 → 2" in capsys.readouterr().err
    # Retrained weights at the same path are another model.
    model = load_causal_lm(str(tmp_path / "pi"))
    with torch.no_grad():
        model.lm_head.weight.add_(1.0)
    save_hf(model, load_tokenizer(str(tmp_path / "pi")), str(tmp_path / "pi"))
    assert main([*base, *alone]) == 2
    assert "model:" in capsys.readouterr().err
    assert (out / "summary.json").read_text() == summary


def test_check_settings_writes_resumes_refuses_and_overwrites(tmp_path):
    folder = tmp_path / "out"
    assert check_settings(folder, {"seed": 0}, overwrite=False, results=["*.jsonl"]) is False
    (folder / "a.jsonl").write_text("x")
    assert check_settings(folder, {"seed": 0}, overwrite=False, results=["*.jsonl"]) is True
    with pytest.raises(SettingsChanged, match=r"seed: 0 → 1"):
        check_settings(folder, {"seed": 1}, overwrite=False, results=["*.jsonl"])
    assert check_settings(folder, {"seed": 1}, overwrite=True, results=["*.jsonl"]) is False
    assert not (folder / "a.jsonl").exists()
    assert json.loads((folder / "settings.json").read_text()) == {"seed": 1}
    (folder / "settings.json").unlink()  # results from before settings were recorded
    (folder / "b.jsonl").write_text("x")
    with pytest.raises(SettingsChanged, match=r"no settings\.json recorded"):
        check_settings(folder, {"seed": 1}, overwrite=False, results=["*.jsonl"])
    assert model_identity("tiny") == "tiny" and model_identity(None) is None


def test_save_hf_keeps_the_old_model_when_a_write_fails(tmp_path):
    from agentprm.backbone import load_causal_lm, load_tokenizer, save_hf

    torch.manual_seed(0)
    model, tokenizer = load_causal_lm("tiny"), load_tokenizer("tiny")
    out = tmp_path / "model"
    save_hf(model, tokenizer, str(out))
    files = {p.name: p.read_bytes() for p in out.iterdir()}

    class FullDisk:
        def save_pretrained(self, folder):
            (Path(folder) / "partial.bin").write_bytes(b"x" * 1000)
            raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        save_hf(model, FullDisk(), str(out))
    assert {p.name: p.read_bytes() for p in out.iterdir()} == files  # the old model, whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no temporary folder left
    with torch.no_grad():
        model.lm_head.weight.add_(1.0)
    save_hf(model, tokenizer, str(out))  # a successful save replaces it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    assert {p.name for p in out.iterdir()} == set(files)
    assert (out / "model.safetensors").read_bytes() != files["model.safetensors"]
