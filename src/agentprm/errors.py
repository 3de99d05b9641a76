"""How every ``agentprm`` command reports an expected error: one line on stderr, a non-zero exit.

An expected error is bad input or a refusal the user can act on: a setting out of range
(``ValueError``), a missing or unwritable path (``FileNotFoundError``, ``PermissionError``, a full
disk), a corrupt record (``RecordError``, a ``ValueError``), a rerun over results made with other
settings (``SettingsChanged``). Anything else is a bug and keeps its traceback. ``--debug`` on any
command (or ``AGENTPRM_DEBUG=1``) shows the traceback of expected errors too.

Lightning's CLI and jsonargparse wrap an error raised in a stage's constructor in a long
"Does not validate against any of the Union subtypes" report; :func:`expected_error` finds the
original error in the exception's chain, so the line shows what the constructor said.
"""

from __future__ import annotations

import errno
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path

__all__ = [
    "DEBUG_ENV",
    "StageFailed",
    "check_model_path",
    "check_range",
    "check_sources",
    "check_writable",
    "debug_enabled",
    "expected_error",
    "one_line",
    "report_errors",
]  # fmt: skip

DEBUG_ENV = "AGENTPRM_DEBUG"
_PACKAGE = Path(__file__).resolve().parent

# Errors of the environment rather than of the code: a path missing, unwritable or full.
_OS_ERRNOS = {
    errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.EEXIST, errno.EACCES, errno.EPERM,
    errno.EROFS, errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC),
}  # fmt: skip


class StageFailed(RuntimeError):
    """A stage of ``agentprm iterate`` failed; the message names it and the command that reruns it."""


def debug_enabled() -> bool:
    """True when ``AGENTPRM_DEBUG`` is set to anything but empty or ``0``."""
    return os.environ.get(DEBUG_ENV, "") not in ("", "0")


def _is_expected(err: BaseException) -> bool:
    from agentprm.provenance import SettingsChanged

    if isinstance(err, (SettingsChanged, StageFailed)):
        return True
    if isinstance(err, OSError):
        return err.errno in _OS_ERRNOS or isinstance(err, (FileNotFoundError, PermissionError))
    ours = type(err).__module__.startswith("agentprm")  # RecordError and the like
    return isinstance(err, ValueError) and (type(err) is ValueError or ours)


def _raised_by_us(err: BaseException) -> bool:
    """Whether the deepest frame of ``err``'s traceback is in this package."""
    tb = err.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    return _PACKAGE in Path(tb.tb_frame.f_code.co_filename).resolve().parents


def expected_error(err: BaseException) -> BaseException | None:
    """The expected error to report for ``err``, or None when its chain holds none.

    The chain is ``err``, its ``__cause__`` (else ``__context__``), and so on. The outermost
    expected error raised by this package wins (a ``RecordError`` names file and line, its cause
    only the JSON problem); wrappers raised elsewhere (jsonargparse's validation report, Lightning's
    re-raise) are looked through; failing that, the innermost expected error.
    """
    found, seen, current = [], set(), err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if _is_expected(current):
            found.append(current)
        current = current.__cause__ or current.__context__
    ours = [e for e in found if _raised_by_us(e)]
    return ours[0] if ours else (found[-1] if found else None)


def one_line(err: BaseException) -> str:
    """The error as one line: its message with whitespace runs collapsed; an OS error names its file."""
    if isinstance(err, OSError) and err.strerror:
        text = (
            err.strerror
            if err.filename is None or str(err.filename) in err.strerror
            else (f"{err.strerror}: {err.filename}")
        )
    else:
        text = str(err)
    return re.sub(r"\s+", " ", text).strip() or type(err).__name__


def report_errors(prog: str, run: Callable[[], int]) -> int:
    """Run a command; print an expected error as ``<prog>: <message>`` and return 2.

    ``SystemExit`` (argparse's own errors and ``--help``) passes through; an unexpected error, or
    any error with ``--debug``/``AGENTPRM_DEBUG``, propagates with its traceback.
    """
    try:
        return run()
    except Exception as err:
        found = expected_error(err)
        if found is None or debug_enabled():
            raise
        print(f"{prog}: {one_line(found)}", file=sys.stderr)
        from agentprm.provenance import SettingsChanged

        if not isinstance(found, (StageFailed, SettingsChanged)):  # refusals need no traceback
            print(f"(the traceback: rerun with --debug or {DEBUG_ENV}=1)", file=sys.stderr)
        return 2


def check_range(name: str, value, low=None, high=None, *, optional: bool = False, below_high: bool = False):
    """Refuse a number outside ``[low, high]`` (``[low, high)`` with ``below_high``) with a
    ``ValueError`` naming the setting and its valid range; ``optional`` lets None through."""
    if value is None and optional:
        return value
    ok = value is not None and (low is None or value >= low)
    ok = ok and (high is None or (value < high if below_high else value <= high))
    if not ok:
        if low is not None and high is not None:
            valid = f"in [{low}, {high}{')' if below_high else ']'}"
        else:
            valid = f">= {low}" if low is not None else f"{'<' if below_high else '<='} {high}"
        raise ValueError(f"{name} must be {valid}{' (or null)' if optional else ''}, found {value!r}")
    return value


def check_writable(key: str, path) -> None:
    """Refuse an output folder that cannot be made or written, before any work is done.

    ``path`` may not exist yet: its nearest existing ancestor must then be a writable folder.
    Raises ``NotADirectoryError`` or ``PermissionError`` naming the setting ``key``.
    """
    target = Path(path)
    probe = target
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, f"{key}: {probe} is a file, not a folder", str(target))
    if not os.access(probe, os.W_OK | os.X_OK):
        raise PermissionError(errno.EACCES, f"{key}: cannot write into {probe}", str(target))


def check_model_path(key: str, value: str | None) -> None:
    """Refuse a model that names a local path which does not exist (``tiny`` and hub ids pass)."""
    if not value or value == "tiny" or Path(value).exists():
        return
    looks_local = value.startswith((".", "/", "~")) or value.count("/") != 1 or value.startswith("runs/")
    if looks_local:
        raise FileNotFoundError(errno.ENOENT, f"{key}: no model at {value}", value)


def check_sources(key: str, sources) -> None:
    """Refuse input files or folders that do not exist (``builtin:…`` sets pass)."""
    for source in sources or ():
        if not str(source).startswith("builtin:") and not Path(source).exists():
            raise FileNotFoundError(errno.ENOENT, f"{key}: {source} does not exist", str(source))
