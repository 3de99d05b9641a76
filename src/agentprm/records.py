"""Typed, frozen records passed between stages (:class:`Turn`, :class:`State`, :class:`Step`,
:class:`Trajectory`), and their JSON Lines files.

Every line of a record file carries ``schema_version``. Reading checks every key and leaf type
against the dataclass fields; a bad line raises :class:`RecordError` naming ``file:line`` and what
was expected versus found. Every file is written atomically (temporary file in the same directory,
``fsync``, ``os.replace``): a crash never leaves a half-written file nor destroys the previous one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import math
import os
import tempfile
import types
import typing
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO, TypeVar

SCHEMA_VERSION = 1
"""Version of the on-disk layout of every record file; bump it when a field changes meaning."""

PathLike = str | os.PathLike[str]


class RecordError(ValueError):
    """A record file holds a line that is not a valid record.

    The message always reads ``<path>:<line>: <what was expected, what was found>``.

    Attributes:
        path: The file.
        line: The 1-based line number.
        detail: The problem, without the location.
    """

    def __init__(self, path: PathLike, line: int, detail: str) -> None:
        self.path = str(path)
        self.line = line
        self.detail = detail
        super().__init__(f"{self.path}:{line}: {detail}")

    def __reduce__(self) -> tuple[type[RecordError], tuple[str, int, str]]:
        return (type(self), (self.path, self.line, self.detail))


@dataclass(frozen=True)
class Turn:
    """One past exchange of an episode.

    Attributes:
        observation: The observation the agent saw at that turn.
        command: The normalized command it sent to the environment (not the full response).
    """

    observation: str
    command: str


@dataclass(frozen=True)
class State:
    """Everything the agent conditions on at turn ``t``.

    Attributes:
        task: The task sentence, e.g. ``"put a clean mug in coffeemachine."``.
        observation: The current observation o_t.
        admissible_commands: The commands the environment accepts now (C_t), in its order.
        history: The complete list of earlier turns (o_k, a_k) for k < t. Windowing for long
            prompts is the renderer's job; the record always keeps everything.
        game_id: The game this state comes from (not part of :meth:`key`).
        turn: The index t of the current turn; always ``len(history)``.

    Raises:
        ValueError: If ``turn != len(history)``.
    """

    task: str
    observation: str
    admissible_commands: tuple[str, ...]
    history: tuple[Turn, ...]
    game_id: str
    turn: int

    def __post_init__(self) -> None:
        _freeze_sequences(self, "admissible_commands", "history")
        if self.turn != len(self.history):
            raise ValueError(f"State.turn must equal len(history) = {len(self.history)}, found {self.turn}")

    def key(self, command: str | None = None) -> str:
        """Content hash of the state, or of the (state, command) pair.

        The hash is the SHA-256 hex digest of the canonical JSON (``sort_keys=True``,
        ``separators=(",", ":")``, ``ensure_ascii=False``, UTF-8) of ``task``, ``observation``,
        ``admissible_commands`` (order kept, as the prompt shows them) and ``history``, plus
        ``command`` when given. ``game_id`` is excluded, so identical states reached in different
        games merge (as Monte-Carlo Q estimates over (s, a) require); ``turn`` is implied by the
        history. ``key()`` and ``key("")`` differ. Stable across processes and machines.

        Args:
            command: The normalized command taken in this state, or None for the state alone.
        """
        content: dict[str, Any] = {
            "task": self.task,
            "observation": self.observation,
            "admissible_commands": list(self.admissible_commands),
            "history": [{"observation": t.observation, "command": t.command} for t in self.history],
        }
        if command is not None:
            content["command"] = command
        text = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Step:
    """One turn of an episode, as a rollout records it.

    The history is not stored per step (files would grow quadratically); :meth:`Trajectory.state_at`
    derives it from the earlier steps.

    Attributes:
        observation: What the agent saw (o_t).
        admissible_commands: The commands the environment accepted at this turn (C_t).
        response: The raw response text of the policy (what the PRM scores).
        reason: The reason parsed from the response.
        command: The normalized command actually sent to the environment.
        feedback: The environment's answer (o_{t+1}).
        reward: The reward after this action: 1.0 on the winning step, else 0.0.
        logprob: The policy's log-probability of the response when the sampler reports it.

    Raises:
        ValueError: If ``reward`` or ``logprob`` is not finite.
    """

    observation: str
    admissible_commands: tuple[str, ...]
    response: str
    reason: str
    command: str
    feedback: str
    reward: float
    logprob: float | None = None

    def __post_init__(self) -> None:
        _freeze_sequences(self, "admissible_commands")
        if not math.isfinite(self.reward):
            raise ValueError(f"Step.reward must be finite, found {self.reward}")
        if self.logprob is not None and not math.isfinite(self.logprob):
            raise ValueError(f"Step.logprob must be finite or None, found {self.logprob}")


@dataclass(frozen=True)
class Trajectory:
    """One episode: one line of a rollout file.

    Attributes:
        game_id: The game played.
        task_type: The ALFWorld task type, e.g. ``"pick_clean_then_place_in_recep"``.
        task: The task sentence.
        steps: The turns, in order.
        won: Whether the game was won.
        policy_id: Which policy produced the episode (e.g. ``"iter1"`` or ``"expert"``).
        seed: The seed of the rollout.
        rollout_index: Index of this rollout among the repeated rollouts of the same game.
        failure: None, or why the episode broke (it is recorded and counted, never dropped).
        branch_turn: None for an episode played from the game's start; t for a branch, an episode
            that replays the first t commands of an earlier episode of the same game and lets the
            policy act again from turn t (see ``RolloutModule(branches=…)``).
        schema_version: The layout version; always :data:`SCHEMA_VERSION` in memory.

    Raises:
        ValueError: On a negative ``rollout_index`` or ``branch_turn``, an empty ``failure``
            string or another ``schema_version``.
    """

    game_id: str
    task_type: str
    task: str
    steps: tuple[Step, ...]
    won: bool
    policy_id: str
    seed: int
    rollout_index: int = 0
    failure: str | None = None
    branch_turn: int | None = None
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        _freeze_sequences(self, "steps")
        if self.rollout_index < 0:
            raise ValueError(f"Trajectory.rollout_index must be >= 0, found {self.rollout_index}")
        if self.branch_turn is not None and self.branch_turn < 0:
            raise ValueError(f"Trajectory.branch_turn must be None or >= 0, found {self.branch_turn}")
        if self.failure == "":
            raise ValueError("Trajectory.failure must be None or a non-empty reason, found ''")
        if self.schema_version != SCHEMA_VERSION:
            raise ValueError(f"expected schema_version {SCHEMA_VERSION}, found {self.schema_version}")

    @property
    def num_actions(self) -> int:
        """The number of actions taken (``len(steps)``)."""
        return len(self.steps)

    def state_at(self, t: int) -> State:
        """The state before the action at turn ``t`` (``0 <= t < num_actions``, else IndexError).

        Its history is ``Turn(steps[k].observation, steps[k].command)`` for ``k < t``.
        """
        if not 0 <= t < len(self.steps):
            raise IndexError(f"turn {t} out of range for a trajectory of {len(self.steps)} steps")
        history = tuple(Turn(s.observation, s.command) for s in self.steps[:t])
        step = self.steps[t]
        return State(self.task, step.observation, step.admissible_commands, history, self.game_id, t)

    def states(self) -> tuple[State, ...]:
        """The states of every turn, ``(state_at(0), …, state_at(num_actions - 1))``."""
        return tuple(self.state_at(t) for t in range(len(self.steps)))


Record = Turn | State | Step | Trajectory
R = TypeVar("R", Turn, State, Step, Trajectory)
RECORD_TYPES: tuple[type, ...] = (Turn, State, Step, Trajectory)
_RECORD_NAMES = ", ".join(c.__name__ for c in RECORD_TYPES)


def register_record(cls: type) -> type:
    """Class decorator: let another stage's frozen dataclass go through :func:`to_dict`,
    :func:`from_dict`, :func:`write_jsonl` and :func:`read_jsonl` (e.g. the PRM targets)."""
    global RECORD_TYPES, _RECORD_NAMES
    if not (dataclasses.is_dataclass(cls) and cls.__dataclass_params__.frozen):
        raise TypeError(f"a record must be a frozen dataclass, found {cls!r}")
    if cls not in RECORD_TYPES:
        RECORD_TYPES = (*RECORD_TYPES, cls)
        _RECORD_NAMES = ", ".join(c.__name__ for c in RECORD_TYPES)
    return cls


def _freeze_sequences(record: object, *names: str) -> None:
    """Turn list-valued sequence fields into tuples so that records stay hashable."""
    for name in names:
        value = getattr(record, name)
        if isinstance(value, list):
            object.__setattr__(record, name, tuple(value))


def to_dict(record: Record) -> dict[str, Any]:
    """Convert a record to plain JSON types: one key per field in field order, nested records as
    dicts, tuples as lists."""
    if not isinstance(record, RECORD_TYPES):
        raise TypeError(f"expected a record ({_RECORD_NAMES}), found {type(record).__name__}")
    return {f.name: _encode(getattr(record, f.name)) for f in dataclasses.fields(record)}


def _encode(value: Any) -> Any:
    if isinstance(value, RECORD_TYPES):
        return to_dict(value)
    if isinstance(value, tuple | list):
        return [_encode(v) for v in value]
    return value


@functools.cache
def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def from_dict(cls: type[R], data: dict[str, Any], *, where: str | None = None) -> R:
    """Build a record from plain JSON types, checking every key and leaf type.

    Driven by ``dataclasses.fields`` and the type hints of ``cls``: nested records are converted
    recursively, JSON lists become tuples, an ``int`` is accepted where a ``float`` is expected,
    a ``bool`` is never accepted as an ``int`` (nor the reverse), ``None`` only where the field is
    optional. Fields with a default may be omitted; unknown keys are errors.

    Args:
        cls: The record class.
        data: The decoded JSON object.
        where: How to name this object in messages (default: the class name).

    Raises:
        ValueError: Naming the key and what was expected versus found, e.g.
            ``key 'won' of Trajectory: expected bool, found str``.
    """
    where = where or cls.__name__
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected an object, found {_json_type(data)}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ValueError(f"unknown key {unknown[0]!r} in {where} (valid keys: {', '.join(fields)})")
    hints = _field_types(cls)
    kwargs: dict[str, Any] = {}
    for name, field in fields.items():
        if name not in data:
            if field.default is dataclasses.MISSING:
                raise ValueError(f"missing key {name!r} in {where}")
            continue
        kwargs[name] = _decode(data[name], hints[name], where, name)
    try:
        return cls(**kwargs)
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from err


def _decode(value: Any, tp: Any, where: str, key: str) -> Any:
    """Check ``value`` against the type hint ``tp`` and convert it (lists to tuples, dicts to records)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _decode(value, inner, where, key)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ValueError(f"key {key!r} of {where}: expected list, found {_json_type(value)}")
        (inner, _ellipsis) = typing.get_args(tp)
        return tuple(_decode(v, inner, where, f"{key}[{i}]") for i, v in enumerate(value))
    if tp in RECORD_TYPES:
        if not isinstance(value, dict):
            raise ValueError(
                f"key {key!r} of {where}: expected object ({tp.__name__}), found {_json_type(value)}"
            )
        return from_dict(tp, value, where=f"{where}.{key}")
    if _leaf_ok(value, tp):
        return float(value) if tp is float else value
    raise ValueError(f"key {key!r} of {where}: expected {tp.__name__}, found {_json_type(value)}")


def _leaf_ok(value: Any, tp: Any) -> bool:
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    raise TypeError(f"unsupported field type {tp!r} in a record")


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _atomic_write(path: PathLike, write: Callable[[TextIO], None]) -> None:
    """Write a text file atomically: temp file in the same directory, fsync, ``os.replace``.

    On any exception the temporary file is removed and the previous file is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except OSError as err:
        Path(tmp).unlink(missing_ok=True)
        if err.filename is None:  # a failed write (e.g. a full disk) names no file of its own
            raise OSError(err.errno, f"{err.strerror or err} while writing {path}", str(path)) from err
        raise
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    """Make a rename durable; best effort where directories cannot be opened (Windows)."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write_text(path: PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically, creating parent directories."""
    _atomic_write(path, lambda f: f.write(text))


def atomic_write_json(path: PathLike, obj: Any) -> None:
    """Write ``obj`` atomically as indented UTF-8 JSON (keys in insertion order, trailing newline,
    NaN and infinities rejected)."""
    text = json.dumps(obj, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    atomic_write_text(path, text)


def _record_line(record: Record) -> str:
    data = to_dict(record)
    data.setdefault("schema_version", SCHEMA_VERSION)
    return json.dumps(data, ensure_ascii=False, allow_nan=False, separators=(",", ":")) + "\n"


def write_jsonl(path: PathLike, records: Iterable[Record], *, append: bool = False) -> int:
    """Write records to a JSONL file atomically, one ``to_dict`` line each with ``schema_version``.

    Args:
        path: The destination file; parent directories are created.
        records: The records (any of the four classes).
        append: Keep the existing lines of ``path`` before the new ones. The whole file is still
            rewritten through a temporary file and renamed, so an append costs the size of the old
            file, and a crash in the middle leaves the old file exactly as it was.

    Returns:
        The number of records written by this call.
    """
    path = Path(path)
    count = 0

    def write(f: TextIO) -> None:
        nonlocal count
        if append and path.exists():
            old = path.read_text(encoding="utf-8")
            f.write(old if not old or old.endswith("\n") else old + "\n")
        for record in records:
            f.write(_record_line(record))
            count += 1

    _atomic_write(path, write)
    return count


def iter_jsonl(path: PathLike, cls: type[R] = Trajectory) -> Iterator[R]:  # type: ignore[assignment]
    """Iterate over the records of a JSONL file, checking every line.

    Blank lines are skipped. The file is read lazily, so an error on line n comes after the
    records of lines 1..n-1 were yielded; a missing file is reported at the call.

    Args:
        path: The file.
        cls: The record class of every line.

    Returns:
        An iterator with one record per non-blank line.

    Raises:
        FileNotFoundError: If ``path`` does not exist (the message names it).
        RecordError: On invalid UTF-8 or JSON, a missing or other ``schema_version``, a missing
            or unknown key, or a value of the wrong type; the message starts with ``path:line:``.
    """
    if cls not in RECORD_TYPES:
        raise TypeError(f"cls must be one of {_RECORD_NAMES}, found {cls!r}")
    Path(path).stat()  # raise FileNotFoundError (naming the path) now, not at the first next()
    return _iter_lines(path, cls)


def _iter_lines(path: PathLike, cls: type[R]) -> Iterator[R]:
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                yield _parse_line(raw, cls)
            except ValueError as err:
                raise RecordError(path, lineno, str(err)) from err


def read_jsonl(path: PathLike, cls: type[R] = Trajectory) -> list[R]:  # type: ignore[assignment]
    """Read every record of a JSONL file, in file order; see :func:`iter_jsonl` for checks and errors."""
    return list(iter_jsonl(path, cls))


def _parse_line(raw: bytes, cls: type[R]) -> R:
    """Decode and check one line; raises ValueError describing the problem (without location)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"invalid UTF-8 ({err.reason} at byte {err.start})") from err
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"invalid JSON: {err.msg} (column {err.colno})") from err
    if not isinstance(data, dict):
        raise ValueError(f"expected a JSON object ({cls.__name__}), found {_json_type(data)}")
    if "schema_version" not in data:
        raise ValueError(f"missing key 'schema_version' in {cls.__name__}")
    version = data["schema_version"]
    if type(version) is not int or version != SCHEMA_VERSION:
        raise ValueError(f"expected schema_version {SCHEMA_VERSION}, found {version!r}")
    if not any(f.name == "schema_version" for f in dataclasses.fields(cls)):
        data = {k: v for k, v in data.items() if k != "schema_version"}
    return from_dict(cls, data)
