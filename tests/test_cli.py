"""The console script: help texts, `agentprm games list` and `agentprm games generate`."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys

import pytest

from agentprm.cli import main
from agentprm.envs.alfworld import AlfWorldEnv


def test_help_lists_the_commands(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for verb in ("fit", "validate", "test", "predict", "games"):
        assert f"\n  {verb}" in out


def test_unknown_command_fails_with_usage(capsys):
    assert main(["frobnicate"]) == 2
    assert "unknown command 'frobnicate'" in capsys.readouterr().err


def test_console_script_is_installed():
    exe = shutil.which("agentprm", path=os.path.dirname(sys.executable))
    assert exe, "the `agentprm` console script is not installed next to the interpreter"
    for args in (["--help"], ["games", "--help"], ["games", "generate", "--help"]):
        proc = subprocess.run([exe, *args], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        assert "usage: agentprm" in proc.stdout


def test_lightning_verbs_reach_lightning_cli(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["fit", "--help"])
    assert exit_.value.code == 0
    assert "--trainer" in capsys.readouterr().out


def test_games_list_prints_one_tab_separated_line_per_game(capsys, small_games):
    assert main(["games", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(small_games)
    rows = [line.split("\t") for line in lines]
    assert all(len(r) == 3 for r in rows)
    assert rows[0] == [small_games[0].split, small_games[0].task_type, small_games[0].game_id]
    assert main(["games", "list", "--set", "standard", "--split", "valid_unseen"]) == 0
    assert {line.split("\t")[0] for line in capsys.readouterr().out.splitlines()} == {"valid_unseen"}


def test_games_generate_writes_a_playable_data_root(tmp_path, capsys):
    out = tmp_path / "more"
    args = ["games", "generate", "--output", str(out), "--train", "2", "--valid-unseen", "1", "--quiet"]
    assert main(args) == 0
    assert "wrote 3 games" in capsys.readouterr().out
    payload = json.loads(gzip.decompress((out / "games.json.gz").read_bytes()))
    assert len(payload["games"]) == 3
    env = AlfWorldEnv(str(out))
    ids = env.game_ids("train")
    assert len(ids) == 2 and len(env.game_ids("valid_unseen")) == 1
    assert all(not s.failure for s in env.reset(ids))
    assert main(args) == 2  # refuses to overwrite
    assert "already exists" in capsys.readouterr().err
