"""Every YAML config parses: each starts with a comment holding its command, which --print_config accepts."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from agentprm.cli import main

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted(p.relative_to(ROOT) for p in (ROOT / "configs").rglob("*.yaml"))


def _command(path: Path) -> list[str]:
    header = [line for line in (ROOT / path).read_text().splitlines() if line.startswith("#")]
    commands = [line.lstrip("#").strip() for line in header if line.lstrip("# ").startswith("agentprm ")]
    assert commands, f"{path}: the header comment must hold the command that runs it"
    return shlex.split(commands[0])


@pytest.mark.parametrize("path", CONFIGS, ids=str)
def test_config_header_command_parses(path, monkeypatch, capsys):
    argv = _command(path)
    monkeypatch.chdir(ROOT)
    if "--config" not in argv and "-c" not in argv:  # fragments: compose with the stage they serve
        pytest.skip(f"{path} is a fragment")
    with pytest.raises(SystemExit) as done:
        main([*argv[1:], "--print_config"])
    assert done.value.code in (0, None)
    printed = capsys.readouterr().out
    if argv[1] == "iterate":  # the loop's config names stage configs, which must exist
        stages = re.findall(r"(?:config: |- )(\S+\.yaml)", printed)  # one file, or a list
        assert stages and all((ROOT / s).is_file() for s in stages), printed[:500]
    else:
        assert re.search(r"class_path: agentprm\.", printed), printed[:500]
