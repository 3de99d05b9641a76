"""Expected errors are one line with a non-zero exit, found before any work; boundary values are
refused naming the setting; warnings say what was skipped or doubled (issue: reliability)."""

from __future__ import annotations

import errno
import json
import sys
from pathlib import Path

import pytest
import yaml

from agentprm.cli import main
from agentprm.errors import check_range, check_writable, expected_error, one_line
from agentprm.iterate import Stage

ROOT = Path(__file__).resolve().parents[1]
QUIET = "--trainer.enable_progress_bar=false"


def _one_line(capsys, prog: str) -> str:
    """The error printed by ``prog``: its line, with at most the --debug hint after it."""
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    mine = [i for i, line in enumerate(err) if line.startswith(f"{prog}: ")]
    assert mine, err
    rest = err[mine[-1] + 1 :]
    assert len(rest) <= 1 and all("--debug" in r for r in rest), err
    assert not any("Traceback" in line for line in err), err
    return err[mine[-1]]


# -- one line per expected error, for every command ---------------------------------------------
def test_rollout_input_errors_are_one_line(tmp_path, capsys, scripted_rollouts):
    prm = ["fit", "-c", str(ROOT / "configs/prm/absolute.yaml"), f"--trainer.default_root_dir={tmp_path}"]
    assert main([*prm, f"--data.init_args.rollouts=[{tmp_path / 'nope'}]"]) == 2
    assert _one_line(capsys, "agentprm fit").endswith(f"data.rollouts: {tmp_path / 'nope'} does not exist")
    bad = tmp_path / "bad"
    bad.mkdir()
    lines = (scripted_rollouts / "rollouts.jsonl").read_text().splitlines()
    (bad / "batch-00000.rank0.jsonl").write_text("\n".join([lines[0], '{"game_id": "g" "x": 1}']) + "\n")
    assert main([*prm, f"--data.init_args.rollouts=[{bad}]"]) == 2
    line = _one_line(capsys, "agentprm fit")
    assert "batch-00000.rank0.jsonl:2: invalid JSON: Expecting ',' delimiter (column 17)" in line


def test_a_stage_constructor_error_is_its_own_line_not_a_union_report(capsys):
    argv = [
        "fit",
        "-c",
        str(ROOT / "configs/prm/absolute.yaml"),
        "--model.init_args.objective.init_args.gamma=1.5",
    ]
    assert main(argv) == 2
    line = _one_line(capsys, "agentprm fit")
    assert "objective.gamma must be in [0, 1], found 1.5" in line
    assert "Union" not in line


def test_debug_shows_the_traceback(capsys):
    argv = [
        "fit",
        "--debug",
        "-c",
        str(ROOT / "configs/prm/absolute.yaml"),
        "--model.init_args.objective.init_args.gamma=2",
    ]
    with pytest.raises(Exception) as info:
        main(argv)
    assert "objective.gamma must be" in one_line(expected_error(info.value))


def test_test_probe_report_compare_and_games_errors_are_one_line(tmp_path, capsys):
    argv = ["test", "-c", str(ROOT / "configs/eval/quickstart.yaml"), "--model.init_args.model=tiny",
            f"--model.init_args.prm={tmp_path / 'no-prm'}", QUIET]  # fmt: skip
    assert main(argv) == 2
    assert "not a PRM directory" in _one_line(capsys, "agentprm test")
    assert main(["probe", "--prm", "oracle", "--split", "tset"]) == 2
    assert "split 'tset' is not a split of 'builtin:small'" in _one_line(capsys, "agentprm probe")
    assert main(["report", str(tmp_path / "nope")]) == 2
    _one_line(capsys, "agentprm report")
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b")]) == 2
    _one_line(capsys, "agentprm compare")
    assert main(["games", "list", "--split", "tset"]) == 2
    assert "one of train, valid_seen, valid_unseen" in _one_line(capsys, "agentprm games")
    assert main(["games", "generate", "--output", str(tmp_path / "g"), "--train", "-1"]) == 2
    assert "--train must be >= 0, found -1" in _one_line(capsys, "agentprm games")
    assert (
        main(["games", "generate", "--output", str(tmp_path / "g"), "--train", "0", "--valid-unseen", "0"])
        == 2
    )
    assert "nothing to generate" in _one_line(capsys, "agentprm games")
    assert not (tmp_path / "g").exists()


def test_iterate_names_the_failed_stage_and_the_command_that_reruns_it(tmp_path, capsys):
    from agentprm.backbone import load_causal_lm, load_tokenizer, save_hf

    policy = tmp_path / "pi0"
    save_hf(load_causal_lm("tiny"), load_tokenizer("tiny"), str(policy))
    cfg = yaml.safe_load((ROOT / "configs/quickstart.yaml").read_text())
    cfg.update(name="broken", runs_dir=str(tmp_path / "runs"), policy=str(policy))
    for stage in cfg["stages"].values():
        stage["config"] = [str(ROOT / c) for c in Stage(stage["config"]).configs]
    cfg["stages"]["eval"]["args"] = ["--data.init_args.max_games=-3"]
    config = tmp_path / "broken.yaml"
    config.write_text(yaml.safe_dump(cfg))
    assert main(["iterate", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "agentprm test: data.max_games must be >= 1 (or null), found -3" in err
    assert (
        "agentprm iterate: stage iter_0/eval failed (exit status 2); rerun alone with: agentprm test -c"
        in err
    )
    assert "Traceback" not in err
    # --policy is checked before any stage runs
    cfg["policy"] = str(tmp_path / "no-policy")
    config.write_text(yaml.safe_dump(cfg))
    assert main(["iterate", "--config", str(config)]) == 2
    assert "policy: " in _one_line(capsys, "agentprm iterate")


# -- checks up front ---------------------------------------------------------------------------
def test_online_dpo_checks_the_prm_before_loading_the_policy(tmp_path, monkeypatch):
    import agentprm.dpo as dpo

    def no_policy(*args, **kwargs):
        raise AssertionError("the policy was loaded before the PRM was checked")

    monkeypatch.setattr(dpo, "load_causal_lm", no_policy)
    with pytest.raises(FileNotFoundError, match="not a PRM directory"):
        dpo.OnlineDPOModule(model="tiny", prm=str(tmp_path / "missing"))


def test_unwritable_output_folders_are_refused_at_construction(tmp_path):
    from agentprm.dpo import OnlineDPOModule
    from agentprm.policy import SFTModule
    from agentprm.prm import PRMModule
    from agentprm.rollout import RolloutModule

    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    out = str(blocker / "model")
    for build in (
        lambda: SFTModule(model="tiny", output_dir=out),
        lambda: PRMModule(model="tiny", output_dir=out),
        lambda: OnlineDPOModule(model="tiny", prm="oracle", output_dir=out),
        lambda: RolloutModule(model="tiny", output_dir=out),
    ):
        with pytest.raises(NotADirectoryError, match=r"model.output_dir: .*a-file is a file, not a folder"):
            build()
    with pytest.raises(FileNotFoundError, match=r"model.model: no model at runs/nope"):
        SFTModule(model="runs/nope")
    check_writable("x", tmp_path / "new" / "deeper")  # a folder still to be made is fine


def test_a_fit_that_cannot_save_fails_before_training(tmp_path, capsys):
    blocker = tmp_path / "root-file"
    blocker.write_text("x")
    argv = ["fit", "-c", str(ROOT / "configs/sft/quickstart.yaml"), f"--trainer.default_root_dir={tmp_path}",
            f"--model.init_args.output_dir={blocker}/policy", "--trainer.max_steps=1", QUIET]  # fmt: skip
    assert main(argv) == 2
    assert "model.output_dir" in _one_line(capsys, "agentprm fit")


# -- boundary values ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("build", "message"),
    [
        ("RolloutDataModule(batch_size=0)", "data.batch_size must be >= 1, found 0"),
        ("RolloutDataModule(max_games=-3)", r"data.max_games must be >= 1 \(or null\), found -3"),
        ("RolloutDataModule(rollouts_per_game=0)", "data.rollouts_per_game must be >= 1, found 0"),
        ("SFTDataModule(val_fraction=1.0)", r"data.val_fraction must be in \[0, 1\), found 1.0"),
        ("AbsoluteObjective(gamma=1.5)", r"objective.gamma must be in \[0, 1\], found 1.5"),
        ("PolicyDataModule(rollouts=['x'], batch_size=0)", "data.batch_size must be >= 1, found 0"),
    ],
)
def test_boundary_values_are_refused_naming_the_setting(build, message):
    from agentprm.data import RolloutDataModule, SFTDataModule  # noqa: F401
    from agentprm.dpo import PolicyDataModule  # noqa: F401
    from agentprm.objectives import AbsoluteObjective  # noqa: F401

    with pytest.raises(ValueError, match=message):
        eval(build)


def test_check_range_messages():
    assert check_range("n", 3, 1) == 3 and check_range("n", None, 1, optional=True) is None
    with pytest.raises(ValueError, match=r"^p must be in \[0, 1\], found 2$"):
        check_range("p", 2, 0, 1)
    with pytest.raises(ValueError, match=r"^q must be <= 5, found 6$"):
        check_range("q", 6, None, 5)


# -- small ones ---------------------------------------------------------------------------------
def test_a_failed_write_names_the_file(tmp_path, monkeypatch):
    from agentprm.records import _atomic_write

    def full(f):
        raise OSError(errno.ENOSPC, "No space left on device")

    target = tmp_path / "out" / "summary.json"
    with pytest.raises(OSError) as info:
        _atomic_write(target, full)
    assert info.value.errno == errno.ENOSPC and str(target) in one_line(info.value)
    assert not list((tmp_path / "out").iterdir())  # no temporary file left behind


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX paths")
def test_expected_errors_are_found_inside_wrappers():
    try:
        try:
            raise ValueError("data.batch_size must be >= 1, found 0")
        except ValueError as inner:
            raise TypeError("Does not validate against any of the Union subtypes\n...") from inner
    except TypeError as wrapped:
        found = expected_error(wrapped)
    assert one_line(found) == "data.batch_size must be >= 1, found 0"
    assert expected_error(RuntimeError("a bug")) is None


# -- warnings: nothing dropped or doubled silently ----------------------------------------------
def test_read_trajectories_reads_shards_once_and_warns_on_doubles(tmp_path, scripted_rollouts):
    from agentprm.data import read_trajectories

    run = tmp_path / "run"
    run.mkdir()
    text = (scripted_rollouts / "rollouts.jsonl").read_text()
    (run / "batch-00000.rank0.jsonl").write_text(text)
    (run / "results.jsonl").write_text('{"not": "a trajectory"}\n')  # an evaluation's per-game file
    once = read_trajectories([str(run)])
    assert len(once) == len(text.splitlines())
    with pytest.warns(UserWarning, match="1 trajectory file\\(s\\) given more than once"):
        twice = read_trajectories([str(run), str(run)])
    assert len(twice) == len(once)


def test_a_game_folder_without_a_game_file_is_named(tmp_path, small_root):
    import shutil

    from agentprm.envs.alfworld import AlfWorldEnv

    root = tmp_path / "data"
    shutil.copytree(small_root / "json_2.1.1" / "valid_unseen", root / "json_2.1.1" / "valid_unseen")
    first = sorted((root / "json_2.1.1" / "valid_unseen").glob("*/*/game.tw-pddl"))[0]
    first.unlink()
    with pytest.warns(UserWarning, match="1 game folder\\(s\\) without a game.tw-pddl are skipped"):
        ids = AlfWorldEnv(str(root)).game_ids("valid_unseen")
    assert len(ids) == len(AlfWorldEnv(str(small_root)).game_ids("valid_unseen")) - 1
    second = root / "json_2.1.1" / ids[0] / "game.tw-pddl"
    second.write_text(second.read_text()[:100])
    with pytest.raises(FileNotFoundError, match="the game file is corrupt") as info:
        AlfWorldEnv(str(root)).game_data(ids[0])
    assert "download" not in str(info.value)


def test_a_resumed_rollout_sums_its_wall_time_and_counts_commands(tmp_path):
    out = tmp_path / "rollouts"
    argv = ["predict", "-c", str(ROOT / "configs/rollout/quickstart.yaml"), "--model.init_args.model=tiny",
            f"--model.init_args.output_dir={out}", f"--trainer.default_root_dir={tmp_path}", QUIET,
            "--data.init_args.max_games=2", "--data.init_args.rollouts_per_game=1",
            "--data.init_args.batch_size=2", "--data.init_args.max_steps=3"]  # fmt: skip
    assert main(argv) == 0
    first = json.loads((out / "manifest.json").read_text())
    assert first["steps"] == 6 and first["empty_commands"] == 0 and first["inadmissible_commands"] == 0
    assert first["failed_games"] == []
    assert main(argv) == 0
    second = json.loads((out / "manifest.json").read_text())
    assert second["wall_time_s"] >= first["wall_time_s"]


def test_rollouts_without_a_win_given_to_a_prm_are_named(tmp_path, scripted_rollouts):
    from agentprm.records import read_jsonl, write_jsonl

    lost = tmp_path / "lost"
    write_jsonl(lost / "batch-00000.rank0.jsonl", [t for t in read_jsonl(scripted_rollouts / "rollouts.jsonl")
                                                   if not t.won])  # fmt: skip
    argv = ["fit", "-c", str(ROOT / "configs/prm/absolute.yaml"), "--model.init_args.model=tiny",
            f"--data.init_args.rollouts=[{lost}]", f"--trainer.default_root_dir={tmp_path}",
            "--trainer.max_steps=1", "--trainer.limit_val_batches=0", QUIET]  # fmt: skip
    with pytest.warns(UserWarning, match="none of the 12 episodes in .* was won"):
        assert main(argv) == 0


def test_a_fit_that_fails_in_setup_leaves_no_empty_log_folder(tmp_path, capsys):
    (tmp_path / "empty").mkdir()  # exists (checked at construction), holds no episodes (found in setup)
    argv = ["fit", "-c", str(ROOT / "configs/prm/absolute.yaml"), "--model.init_args.model=tiny",
            f"--data.init_args.rollouts=[{tmp_path / 'empty'}]",
            f"--trainer.default_root_dir={tmp_path / 'run'}",
            f"--model.init_args.output_dir={tmp_path / 'run' / 'prm'}", QUIET]  # fmt: skip
    assert main(argv) == 2
    assert "no .jsonl trajectory files in" in _one_line(capsys, "agentprm fit")
    assert not (tmp_path / "run" / "lightning_logs").exists()
    argv[4] = f"--data.init_args.rollouts=[{tmp_path / 'nope'}]"  # a missing folder: refused up front
    assert main(argv) == 2
    assert f"data.rollouts: {tmp_path / 'nope'} does not exist" in _one_line(capsys, "agentprm fit")
