"""Tests of agentprm.prompts: the parser, the normalizer, windowing, snapshots and determinism.

The snapshot files in ``tests/snapshots/`` hold the exact rendering of :func:`snapshot_state` (plus
one trailing newline, so end-of-file fixers leave them alone). After an intended template change,
regenerate them with ``python tests/test_prompts.py --update``, read the diff, and commit it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import agentprm
from agentprm.prompts import ParsedResponse, Renderer, normalize_command, parse_response
from agentprm.records import State, Turn, from_dict, to_dict

SNAPSHOTS = Path(__file__).parent / "snapshots"
SNAPSHOT_CASES: dict[str, tuple[str, int | None]] = {
    "paper_full.txt": ("paper", None),
    "paper_window1.txt": ("paper", 1),
    "compact_full.txt": ("compact", None),
    "compact_window1.txt": ("compact", 1),
}


def snapshot_state() -> State:
    """A fixed state at turn 3 of a 'clean' game, with a multi-line first observation."""
    history = (
        Turn(
            "-= Welcome to TextWorld, ALFRED! =-\n\nYou are in the middle of a room. Looking quickly around "
            "you, you see a cabinet 1, a countertop 1, a fridge 1 and a sinkbasin 1.\n\n"
            "Your task is to: put a clean mug in cabinet 1.",
            "go to countertop 1",
        ),
        Turn(
            "You arrive at countertop 1. On the countertop 1, you see a mug 1.",
            "take mug 1 from countertop 1",
        ),
        Turn("You pick up the mug 1 from the countertop 1.", "go to sinkbasin 1"),
    )
    return State(
        task="put a clean mug in cabinet 1.",
        observation="You arrive at sinkbasin 1. On the sinkbasin 1, you see nothing.",
        admissible_commands=("clean mug 1 with sinkbasin 1", "go to cabinet 1", "inventory", "look"),
        history=history,
        game_id="pick_clean_then_place_in_recep-Mug-None-Cabinet-1/trial_0",
        turn=3,
    )


def render_snapshot(name: str) -> str:
    template, window = SNAPSHOT_CASES[name]
    return Renderer(template, window).prompt(snapshot_state()) + "\n"


# ---------------------------------------------------------------------------------------------
# parser


@pytest.mark.parametrize(
    ("text", "reason", "command"),
    [
        (
            "REASON: the mug is here\nACTION: take mug 1 from countertop 1",
            "the mug is here",
            "take mug 1 from countertop 1",
        ),
        (
            "REASON:\n  multi\nline reason \nACTION:\ngo to cabinet 1\n",
            "multi\nline reason",
            "go to cabinet 1",
        ),
        ("I should look around.\nACTION: look", "I should look around.", "look"),
        ("ACTION: look", "", "look"),
        ("REASON: no action given here", "REASON: no action given here", ""),
        ("  just words  ", "just words", ""),
        ("", "", ""),
        ("REASON: r\nACTION:\n\n   go to desk 1", "r", "go to desk 1"),
        ('REASON: r\nACTION: "Go to Cabinet 1."', "r", "go to cabinet 1"),
        ("REASON: r\nACTION: put mug 1 in/on cabinet 1.", "r", "put mug 1 in/on cabinet 1"),
        ("REASON: r\nACTION: TAKE MUG 1 FROM COUNTERTOP 1", "r", "take mug 1 from countertop 1"),
        ("REASON: r\nACTION: go to desk 1\nACTION: look", "r", "go to desk 1"),
        (
            "REASON: r\nACTION: open drawer 2\nThis will reveal its content. REASON: more",
            "r",
            "open drawer 2",
        ),
        ("REASON: r\r\nACTION: look\r\nthen more", "r", "look"),
        ("REASON: r\nACTION:", "r", ""),
        ("Reason: lower-case markers\naction: look", "Reason: lower-case markers\naction: look", ""),
    ],
)
def test_parse_response(text: str, reason: str, command: str) -> None:
    assert parse_response(text) == ParsedResponse(reason=reason, command=command)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("go to cabinet 1", "go to cabinet 1"),
        ("  Go   to\tCabinet 1. ", "go to cabinet 1"),
        ("'take' mug-1, please!", "take mug1 please"),
        ("put mug 1 in/on shelf 2", "put mug 1 in/on shelf 2"),
        ("go to . cabinet", "go to cabinet"),
        ("Über café", "ber caf"),
        ("", ""),
        ("...", ""),
    ],
)
def test_normalize_command(raw: str, expected: str) -> None:
    assert normalize_command(raw) == expected


# ---------------------------------------------------------------------------------------------
# renderer


def test_response_formats_round_trip_through_the_parser() -> None:
    both = Renderer(response_format="reason_action")
    assert (
        both.response("first line\nsecond", "go to desk 1")
        == "REASON: first line\nsecond\nACTION: go to desk 1"
    )
    assert parse_response(both.response("first line\nsecond", "go to desk 1")) == ParsedResponse(
        "first line\nsecond", "go to desk 1"
    )
    assert Renderer(response_format="action").response("ignored", "look") == "ACTION: look"


def test_messages_and_conversation() -> None:
    renderer = Renderer("paper")
    state = snapshot_state()
    prompt = renderer.prompt(state)
    assert renderer.messages(state) == [{"role": "user", "content": prompt}]
    assert renderer.conversation(state, "ACTION: look") == [
        {"role": "user", "content": prompt},
        {"role": "assistant", "content": "ACTION: look"},
    ]


def test_window_truncation_counts_and_earlier_commands() -> None:
    state = snapshot_state()
    renderer = Renderer("compact", history_window=1)
    context = renderer.context(state)
    assert context["earlier_commands"] == ["go to countertop 1", "take mug 1 from countertop 1"]
    assert context["history"] == [
        {"observation": "You pick up the mug 1 from the countertop 1.", "command": "go to sinkbasin 1"}
    ]
    assert context["omitted_turns"] == 2 and context["turn"] == 3
    assert (renderer.truncations, renderer.omitted_turns_total) == (0, 0)  # context() counts nothing
    renderer.prompt(state)
    renderer.messages(state)
    renderer.prompt(State("t", "o", ("look",), (), "g", 0))  # nothing to omit: not counted
    assert (renderer.truncations, renderer.omitted_turns_total) == (2, 4)
    renderer.reset_counters()
    assert (renderer.truncations, renderer.omitted_turns_total) == (0, 0)


@pytest.mark.parametrize(
    ("window", "kept", "omitted"), [(None, 3, 0), (5, 3, 0), (3, 3, 0), (2, 2, 1), (0, 0, 3)]
)
def test_window_sizes(window: int | None, kept: int, omitted: int) -> None:
    renderer = Renderer("paper", history_window=window)
    context = renderer.context(snapshot_state())
    assert (len(context["history"]), len(context["earlier_commands"]), context["omitted_turns"]) == (
        kept,
        omitted,
        omitted,
    )
    renderer.prompt(snapshot_state())
    assert renderer.truncations == (1 if omitted else 0) and renderer.omitted_turns_total == omitted


def test_window_zero_still_lists_every_command() -> None:
    text = Renderer("compact", history_window=0).prompt(snapshot_state())
    assert "done: go to countertop 1 ; take mug 1 from countertop 1 ; go to sinkbasin 1" in text
    assert "act:" not in text
    paper = Renderer("paper", history_window=0, response_format="action").prompt(snapshot_state())
    assert "Earlier turns not shown: 3." in paper and "(none" not in paper
    assert "REASON:" not in paper and paper.endswith("ACTION: <one candidate action>")


def test_first_turn_renders() -> None:
    state = State("put a mug in cabinet 1.", "Welcome.\n\nYour task is to: x", ("look",), (), "g", 0)
    assert "(none: this is your first action)" in Renderer("paper").prompt(state)
    assert (
        Renderer("compact").prompt(state)
        == "task: put a mug in cabinet 1.\nobs: Welcome. Your task is to: x\nactions: look"
    )


@pytest.mark.parametrize("name", sorted(SNAPSHOT_CASES))
def test_snapshot(name: str) -> None:
    expected = (SNAPSHOTS / name).read_bytes().decode("utf-8")
    assert render_snapshot(name) == expected


def test_render_is_deterministic_across_calls_and_processes() -> None:
    state = snapshot_state()
    code = (
        "import json, sys\n"
        "from agentprm.prompts import Renderer\n"
        "from agentprm.records import State, from_dict\n"
        "state = from_dict(State, json.loads(sys.argv[1]))\n"
        "out = [Renderer(t, w).prompt(state) for t in ('paper', 'compact') for w in (None, 1)]\n"
        "sys.stdout.write(json.dumps(out))\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    src = str(Path(agentprm.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
    done = subprocess.run(
        [sys.executable, "-c", code, json.dumps(to_dict(state))],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    assert from_dict(State, to_dict(state)) == state
    here = [Renderer(t, w).prompt(state) for t in ("paper", "compact") for w in (None, 1)]
    assert here == [Renderer(t, w).prompt(state) for t in ("paper", "compact") for w in (None, 1)]
    assert json.loads(done.stdout) == here


# ---------------------------------------------------------------------------------------------
# user templates and errors


def test_user_template_file(tmp_path: Path) -> None:
    path = tmp_path / "mine.j2"
    path.write_text(
        "{{ task }}|{{ turn }}|{{ omitted_turns }}|{{ earlier_commands | join(',') }}|"
        "{% for h in history %}{{ h.command }}<{{ h.observation | oneline }}>{% endfor %}|"
        "{{ observation }}|{{ admissible_commands | join(',') }}|{{ response_format }}\n",
        encoding="utf-8",
    )
    text = Renderer(str(path), history_window=1, response_format="action").prompt(snapshot_state())
    assert text == (
        "put a clean mug in cabinet 1.|3|2|go to countertop 1,take mug 1 from countertop 1|"
        "go to sinkbasin 1<You pick up the mug 1 from the countertop 1.>|"
        "You arrive at sinkbasin 1. On the sinkbasin 1, you see nothing.|"
        "clean mug 1 with sinkbasin 1,go to cabinet 1,inventory,look|action"
    )


def test_bad_template_name_lists_choices() -> None:
    with pytest.raises(
        ValueError, match=r"template 'papper' is neither .* valid choices: 'paper', 'compact', or"
    ):
        Renderer("papper")


def test_jinja_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.j2"
    path.write_text(
        "task: {{ task }}\n{% for h in history %}\n{{ h.command }\n{% endfor %}\n", encoding="utf-8"
    )
    with pytest.raises(ValueError, match=rf"^{re.escape(str(path))}:3: Jinja2 syntax error: "):
        Renderer(str(path))


def test_unknown_variable_fails_at_construction(tmp_path: Path) -> None:
    path = tmp_path / "typo.j2"
    path.write_text("{{ task }} {{ candidate_actions }}", encoding="utf-8")
    with pytest.raises(ValueError, match=r"undefined variable\(s\) candidate_actions; available: task, "):
        Renderer(str(path))


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="history_window"):
        Renderer(history_window=-1)
    with pytest.raises(ValueError, match="response_format"):
        Renderer(response_format="json")  # type: ignore[arg-type]


if __name__ == "__main__":
    if sys.argv[1:] != ["--update"]:
        sys.exit("usage: python tests/test_prompts.py --update   (rewrites tests/snapshots/*.txt)")
    SNAPSHOTS.mkdir(exist_ok=True)
    for snapshot in SNAPSHOT_CASES:
        (SNAPSHOTS / snapshot).write_bytes(render_snapshot(snapshot).encode("utf-8"))
        print(f"wrote {SNAPSHOTS / snapshot}")
