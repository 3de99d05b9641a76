"""What an output folder was made with: a rerun resumes only what the same settings made.

Every stage that resumes from its output folder (rollouts, evaluations) writes ``settings.json``
there before any work: the settings that determine the folder's content (the model's identity, the
seeds, the sampling, the games, the scorer, …). A rerun with the same settings resumes; a rerun
whose settings differ stops at once with one line naming the differences and the two ways out
(``overwrite``, or another output folder). ``agentprm iterate`` does the same with each stage's
stored command.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from agentprm.records import atomic_write_json

__all__ = ["SETTINGS_FILE", "SettingsChanged", "check_settings", "describe_changes", "model_identity"]

SETTINGS_FILE = "settings.json"
_HASHED_BYTES = 256 * 2**20  # files up to this size are hashed; larger ones by size and mtime


class SettingsChanged(ValueError):
    """An output folder holds results made with other settings."""


def model_identity(name_or_path: str | None) -> str | None:
    """A model's identity: its name, or for a directory a digest of its files (contents of files up
    to 256 MiB, size and modification time of larger ones), so retrained weights at the same path
    count as another model."""
    if name_or_path is None:
        return None
    folder = Path(name_or_path)
    if not folder.is_dir():
        return name_or_path
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        stat = path.stat()
        digest.update(f"{path.relative_to(folder)}|{stat.st_size}".encode())
        if stat.st_size <= _HASHED_BYTES:
            digest.update(path.read_bytes())
        else:
            digest.update(str(stat.st_mtime_ns).encode())
    return f"{name_or_path}@{digest.hexdigest()[:16]}"


def describe_changes(old: dict[str, Any], new: dict[str, Any]) -> str:
    """``key: old → new`` for every setting that differs, comma-separated. The arguments of a part
    given by ``class_path`` (an environment, a sampler) are named by their own key, e.g.
    ``temperature: 1.0 → 0.3`` rather than the whole part."""
    return ", ".join(_changes(old, new))


def _changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    out = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if a == b:
            continue
        part = isinstance(a, dict) and isinstance(b, dict) and a.get("class_path") == b.get("class_path")
        if part and "class_path" in a:
            out += _changes(a.get("init_args") or {}, b.get("init_args") or {})
        else:
            out.append(f"{k}: {a!r} → {b!r}")
    return out


def check_settings(
    folder: Path,
    settings: dict[str, Any],
    *,
    overwrite: bool,
    results: Iterable[str],
    write: bool = True,
    hint: str = "--model.init_args.overwrite=true",
) -> bool:
    """Resume ``folder`` only if it was made with ``settings``; returns whether it held results.

    Args:
        folder: The output folder.
        settings: JSON-ready settings that determine its content.
        overwrite: Replace results made with other settings (they are deleted) instead of stopping.
        results: Glob patterns of the files and folders the stage writes there.
        write: Write ``settings.json`` (the process that owns the folder, e.g. rank 0).
        hint: How the user asks for ``overwrite``, for the error message.

    Raises:
        SettingsChanged: The folder holds results of other (or unrecorded) settings and
            ``overwrite`` is off.
    """
    path = folder / SETTINGS_FILE
    found = [p for pattern in results for p in folder.glob(pattern)]
    settings = json.loads(json.dumps(settings))  # the JSON form, as it is stored
    old = json.loads(path.read_text()) if path.is_file() else None
    if found and old != settings:
        if not overwrite:
            what = describe_changes(old, settings) if old is not None else "no settings.json recorded"
            raise SettingsChanged(
                f"{folder} holds results made with other settings ({what}); rerun with {hint} to "
                "replace them, or write to another output folder"
            )
        if write:
            for p in found:
                shutil.rmtree(p) if p.is_dir() else p.unlink()
        found = []
    if write:
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, settings)
    return bool(found)
