"""Tests of agentprm.records: typed records, state derivation, keys, atomic JSONL files, errors."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import pickle
from pathlib import Path

import pytest

from agentprm.records import (
    SCHEMA_VERSION,
    RecordError,
    State,
    Step,
    Trajectory,
    Turn,
    atomic_write_json,
    atomic_write_text,
    from_dict,
    iter_jsonl,
    read_jsonl,
    to_dict,
    write_jsonl,
)

WELCOME = (
    "-= Welcome to TextWorld, ALFRED! =-\n\nYou are in the middle of a room. You see a cabinet 1 and "
    "a countertop 1.\n\nYour task is to: put a mug in cabinet 1."
)


def make_trajectory(game_id: str = "pick/mug-1", seed: int = 7) -> Trajectory:
    steps = (
        Step(
            WELCOME,
            ("go to cabinet 1", "go to countertop 1"),
            "REASON: look\nACTION: go to countertop 1",
            "look",
            "go to countertop 1",
            "You arrive at countertop 1. On it, you see a mug 1.",
            0.0,
            -1.25,
        ),
        Step(
            "You arrive at countertop 1. On it, you see a mug 1.",
            ("take mug 1 from countertop 1", "look"),
            "REASON: a mug\nACTION: take mug 1 from countertop 1",
            "a mug",
            "take mug 1 from countertop 1",
            "You pick up the mug 1 from the countertop 1.",
            0.0,
        ),
        Step(
            "You pick up the mug 1 from the countertop 1.",
            ("go to cabinet 1",),
            "ACTION: go to cabinet 1",
            "",
            "go to cabinet 1",
            "You arrive at cabinet 1. «é»",
            1.0,
            -0.5,
        ),
    )
    return Trajectory(
        game_id,
        "pick_and_place_simple",
        "put a mug in cabinet 1.",
        steps,
        True,
        "iter0",
        seed,
        rollout_index=2,
    )


def good_line() -> dict:
    return to_dict(make_trajectory())


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------
# records


def test_round_trip_through_jsonl(tmp_path: Path) -> None:
    original = [make_trajectory(), make_trajectory("other", seed=8)]
    path = tmp_path / "deep" / "dir" / "rank0.jsonl"
    assert write_jsonl(path, original) == 2
    loaded = read_jsonl(path)
    assert loaded == original
    assert isinstance(loaded[0].steps, tuple) and isinstance(loaded[0].steps[0].admissible_commands, tuple)
    assert loaded[0].steps[1].logprob is None and loaded[0].steps[2].logprob == -0.5
    assert hash(loaded[0]) == hash(original[0])
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 2 and json.loads(lines[0])["schema_version"] == SCHEMA_VERSION
    assert "«é»" in lines[0]  # UTF-8, not \u escapes


def test_round_trip_of_other_record_types_carries_schema_version(tmp_path: Path) -> None:
    traj = make_trajectory()
    states = list(traj.states())
    write_jsonl(tmp_path / "s.jsonl", states)
    assert read_jsonl(tmp_path / "s.jsonl", State) == states
    write_jsonl(tmp_path / "t.jsonl", [Turn("o", "c")])
    assert json.loads((tmp_path / "t.jsonl").read_text()) == {
        "observation": "o",
        "command": "c",
        "schema_version": 1,
    }
    assert list(iter_jsonl(tmp_path / "t.jsonl", Turn)) == [Turn("o", "c")]


def test_state_at_derives_the_history() -> None:
    traj = make_trajectory()
    state = traj.state_at(2)
    assert state.history == (
        Turn(WELCOME, "go to countertop 1"),
        Turn("You arrive at countertop 1. On it, you see a mug 1.", "take mug 1 from countertop 1"),
    )
    assert state.observation == "You pick up the mug 1 from the countertop 1."
    assert state.admissible_commands == ("go to cabinet 1",)
    assert (state.task, state.game_id, state.turn) == ("put a mug in cabinet 1.", "pick/mug-1", 2)
    assert traj.state_at(0).history == ()
    assert traj.num_actions == 3 and len(traj.states()) == 3 and traj.states()[2] == state
    with pytest.raises(IndexError, match="turn 3 out of range"):
        traj.state_at(3)


def test_key_depends_on_content_and_command_not_game() -> None:
    a = make_trajectory("game-a").state_at(1)
    b = make_trajectory("game-b").state_at(1)
    assert a.game_id != b.game_id and a.key() == b.key()
    assert a.key("go to cabinet 1") == b.key("go to cabinet 1")
    assert a.key("go to cabinet 1") != a.key("look")
    assert a.key() != a.key("") and a.key() != make_trajectory().state_at(2).key()
    assert len(a.key()) == 64 and int(a.key(), 16) >= 0
    swapped = dataclasses.replace(a, admissible_commands=a.admissible_commands[::-1])
    assert swapped.key() != a.key()


def test_key_is_the_documented_canonical_hash() -> None:
    state = State("t", "o", ("a", "b"), (Turn("o0", "c0"),), "g", 1)
    text = (
        '{"admissible_commands":["a","b"],"command":"a","history":[{"command":"c0","observation":"o0"}],'
        '"observation":"o","task":"t"}'
    )
    assert state.key("a") == hashlib.sha256(text.encode()).hexdigest()


def test_validation_in_constructors() -> None:
    with pytest.raises(ValueError, match="turn must equal len"):
        State("t", "o", (), (Turn("o", "c"),), "g", 0)
    with pytest.raises(ValueError, match="reward must be finite"):
        Step("o", (), "r", "", "c", "f", float("nan"))
    with pytest.raises(ValueError, match="rollout_index"):
        dataclasses.replace(make_trajectory(), rollout_index=-1)
    with pytest.raises(ValueError, match="schema_version"):
        dataclasses.replace(make_trajectory(), schema_version=2)
    listed = State("t", "o", ["a"], [], "g", 0)  # type: ignore[arg-type]
    assert listed.admissible_commands == ("a",) and hash(listed)


def test_from_dict_accepts_int_for_float_and_omitted_defaults() -> None:
    data = to_dict(make_trajectory().steps[0])
    data["reward"] = 1
    del data["logprob"]
    step = from_dict(Step, data)
    assert step.reward == 1.0 and isinstance(step.reward, float) and step.logprob is None


# ---------------------------------------------------------------------------------------------
# atomic writes


def test_atomic_write_leaves_no_temp_file(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "a.jsonl", [make_trajectory()])
    atomic_write_text(tmp_path / "b.txt", "héllo\n")
    atomic_write_json(tmp_path / "sub" / "c.json", {"z": 1, "a": [1.5]})
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a.jsonl", "b.txt", "c.json", "sub"]
    assert (tmp_path / "b.txt").read_text(encoding="utf-8") == "héllo\n"
    assert (tmp_path / "sub" / "c.json").read_text() == '{\n  "z": 1,\n  "a": [\n    1.5\n  ]\n}\n'


def test_failing_write_keeps_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "rank0.jsonl"
    write_jsonl(path, [make_trajectory()])
    before = path.read_bytes()

    def records_then_crash():
        yield make_trajectory("x")
        raise RuntimeError("rollout crashed")

    with pytest.raises(RuntimeError, match="rollout crashed"):
        write_jsonl(path, records_then_crash())
    with pytest.raises(TypeError, match="expected a record"):
        write_jsonl(path, [make_trajectory("y"), {"not": "a record"}], append=True)  # type: ignore[list-item]
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["rank0.jsonl"]


def test_append_keeps_old_lines(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    write_jsonl(path, [make_trajectory("a")], append=True)  # append to a missing file creates it
    write_jsonl(path, [make_trajectory("b"), make_trajectory("c")], append=True)
    assert [t.game_id for t in read_jsonl(path)] == ["a", "b", "c"]
    write_jsonl(path, [make_trajectory("d")])
    assert [t.game_id for t in read_jsonl(path)] == ["d"]


def test_blank_lines_are_skipped_and_missing_file_is_named(tmp_path: Path) -> None:
    line = json.dumps(good_line())
    path = write_lines(tmp_path / "r.jsonl", ["", line, "   ", line, ""])
    assert len(read_jsonl(path)) == 2
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(FileNotFoundError, match=r"nope\.jsonl"):
        iter_jsonl(missing)  # raised at the call, before iteration


# ---------------------------------------------------------------------------------------------
# errors name file:line and expected vs found


def bad_file(tmp_path: Path, bad: str, lineno: int = 3) -> Path:
    good = json.dumps(good_line())
    lines = [good] * (lineno - 1) + [bad]
    return write_lines(tmp_path / "rank0.jsonl", lines)


def test_error_invalid_json(tmp_path: Path) -> None:
    path = bad_file(tmp_path, '{"game_id": "g" "task": 1}', lineno=3)
    with pytest.raises(RecordError) as info:
        read_jsonl(path)
    assert str(info.value) == f"{path}:3: invalid JSON: Expecting ',' delimiter (column 17)"
    assert (info.value.path, info.value.line) == (str(path), 3)


def test_error_blank_lines_count_in_line_numbers(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "r.jsonl", [json.dumps(good_line()), "", "[1, 2]"])
    with pytest.raises(
        RecordError, match=r"^.*r\.jsonl:3: expected a JSON object \(Trajectory\), found list$"
    ):
        read_jsonl(path)


def test_error_wrong_schema_version(tmp_path: Path) -> None:
    path = bad_file(tmp_path, json.dumps({**good_line(), "schema_version": 2}), lineno=17)
    with pytest.raises(RecordError) as info:
        read_jsonl(path)
    assert str(info.value) == f"{path}:17: expected schema_version 1, found 2"
    data = good_line()
    del data["schema_version"]
    path = bad_file(tmp_path, json.dumps(data), lineno=1)
    with pytest.raises(RecordError, match=r"rank0\.jsonl:1: missing key 'schema_version' in Trajectory$"):
        read_jsonl(path)


def test_error_missing_key(tmp_path: Path) -> None:
    data = good_line()
    del data["steps"]
    path = bad_file(tmp_path, json.dumps(data), lineno=5)
    with pytest.raises(RecordError) as info:
        read_jsonl(path)
    assert str(info.value) == f"{path}:5: missing key 'steps' in Trajectory"


def test_error_unknown_key(tmp_path: Path) -> None:
    path = bad_file(tmp_path, json.dumps({**good_line(), "score": 1.0}), lineno=2)
    with pytest.raises(RecordError) as info:
        read_jsonl(path)
    assert str(info.value).startswith(f"{path}:2: unknown key 'score' in Trajectory (valid keys: game_id, ")


def test_error_bool_is_not_int_and_int_is_not_bool(tmp_path: Path) -> None:
    path = bad_file(tmp_path, json.dumps({**good_line(), "won": "true"}), lineno=5)
    with pytest.raises(RecordError) as info:
        read_jsonl(path)
    assert str(info.value) == f"{path}:5: key 'won' of Trajectory: expected bool, found str"
    path = bad_file(tmp_path, json.dumps({**good_line(), "won": 1}), lineno=2)
    with pytest.raises(RecordError) as info:
        read_jsonl(path)
    assert str(info.value) == f"{path}:2: key 'won' of Trajectory: expected bool, found int"
    path = bad_file(tmp_path, json.dumps({**good_line(), "seed": True}), lineno=1)
    with pytest.raises(RecordError) as info:
        read_jsonl(path)
    assert str(info.value) == f"{path}:1: key 'seed' of Trajectory: expected int, found bool"


def test_error_wrong_type_in_nested_step(tmp_path: Path) -> None:
    data = good_line()
    data["steps"][1]["reward"] = "1.0"
    path = bad_file(tmp_path, json.dumps(data), lineno=4)
    with pytest.raises(RecordError) as info:
        read_jsonl(path)
    assert str(info.value) == f"{path}:4: key 'reward' of Trajectory.steps[1]: expected float, found str"
    data = good_line()
    data["steps"][0]["admissible_commands"][1] = 3
    path = bad_file(tmp_path, json.dumps(data), lineno=1)
    with pytest.raises(RecordError) as info:
        read_jsonl(path)
    assert str(info.value) == (
        f"{path}:1: key 'admissible_commands[1]' of Trajectory.steps[0]: expected str, found int"
    )


def test_error_nested_shape_and_null(tmp_path: Path) -> None:
    data = good_line()
    data["steps"][2] = ["not", "an", "object"]
    path = bad_file(tmp_path, json.dumps(data), lineno=1)
    with pytest.raises(RecordError) as info:
        read_jsonl(path)
    assert str(info.value) == f"{path}:1: key 'steps[2]' of Trajectory: expected object (Step), found list"
    data = good_line()
    del data["steps"][0]["feedback"]
    path = bad_file(tmp_path, json.dumps(data), lineno=1)
    with pytest.raises(RecordError, match=r":1: missing key 'feedback' in Trajectory\.steps\[0\]$"):
        read_jsonl(path)
    path = bad_file(tmp_path, json.dumps({**good_line(), "task": None}), lineno=1)
    with pytest.raises(RecordError, match=r":1: key 'task' of Trajectory: expected str, found null$"):
        read_jsonl(path)


def test_error_from_constructor_validation_and_utf8(tmp_path: Path) -> None:
    data = good_line()
    data["steps"][0]["reward"] = 1e400  # JSON parses this as inf
    path = bad_file(tmp_path, json.dumps(data).replace("Infinity", "1e400"), lineno=2)
    with pytest.raises(
        RecordError, match=r":2: Trajectory\.steps\[0\]: Step\.reward must be finite, found inf$"
    ):
        read_jsonl(path)
    path = tmp_path / "bin.jsonl"
    path.write_bytes(json.dumps(good_line()).encode() + b"\n\xff\xfe\n")
    with pytest.raises(RecordError, match=r"bin\.jsonl:2: invalid UTF-8"):
        read_jsonl(path)


def test_iter_jsonl_is_lazy_and_record_error_pickles(tmp_path: Path) -> None:
    path = bad_file(tmp_path, "{oops", lineno=3)
    it = iter_jsonl(path)
    assert next(it) == make_trajectory() and next(it) == make_trajectory()
    with pytest.raises(RecordError) as info:
        next(it)
    copy = pickle.loads(pickle.dumps(info.value))
    assert str(copy) == str(info.value) and copy.line == 3
    with pytest.raises(TypeError, match="cls must be one of"):
        iter_jsonl(path, dict)  # type: ignore[type-var]
