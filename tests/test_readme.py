"""The README is a test: its set-up commands are the ones CI runs, and its commands work."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from agentprm.cli import main

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _block_after(heading: str) -> list[str]:
    section = README.split(heading, 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, flags=re.DOTALL)
    assert block, f"no bash block after {heading!r}"
    return [line.split("#", 1)[0].strip() for line in block.group(1).splitlines() if line.strip()]


def test_setup_is_two_commands_that_ci_runs_verbatim():
    commands = _block_after("## Set-up")
    assert len(commands) == 2
    ci = (ROOT / ".ci" / "run").read_text()
    for command in commands:
        assert command in ci, f"README set-up command not in .ci/run: {command}"


@pytest.mark.parametrize("command", _block_after("## The command line"))
def test_command_line_examples_run(command, tmp_path, monkeypatch, capsys):
    argv = shlex.split(command)
    assert argv[0] == ".venv/bin/agentprm"
    monkeypatch.chdir(tmp_path)
    args = argv[1:]
    if "generate" in args:  # keep the example's shape, make it quick
        args[args.index("--train") + 1] = "1"
        args[args.index("--valid-unseen") + 1] = "1"
    assert main(args) == 0
    assert capsys.readouterr().out.strip()
