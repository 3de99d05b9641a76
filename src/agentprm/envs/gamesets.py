"""Game sets: parallel, time-limited generation; compact storage; materialisation as ALFWorld data.

A set is stored as one gzip JSON file (problem text, traj_data, walkthrough, expert actions per
game). :func:`materialize` writes it out as ``json_2.1.1/<split>/<task>-…/trial_…/`` folders holding
``initial_state.pddl``, ``traj_data.json`` and ``game.tw-pddl`` (assembled from the installed domain
and grammar), so the built-in sets and a user's real data go through the same engine code path.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import multiprocessing
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict
from importlib import resources
from multiprocessing.connection import wait
from pathlib import Path

from agentprm.cache import cache_root
from agentprm.envs.games import GameSpec, Size, game_data, generate_game, logic_files

__all__ = ["BUILTIN_SETS", "builtin_root", "generate_set", "load_set", "materialize", "save_set"]

BUILTIN_SETS = ("small", "standard")
SETS_FORMAT_VERSION = 1


def _attempt(conn, split: str, index: int, size: Size, seed: int, attempt: int) -> None:
    try:
        conn.send(generate_game(split, index, size, seed, attempt))
    except Exception as err:  # an engine error makes this attempt fail, like an unsolvable room
        conn.send(f"{type(err).__name__}: {err}")
    conn.close()


def generate_set(
    counts: dict[str, int],
    size: Size,
    seed: int = 0,
    *,
    workers: int = 1,
    timeout: float = 120.0,
    max_attempts: int = 25,
    progress: bool = True,
) -> list[GameSpec]:
    """Generate ``counts[split]`` verified games per split, balanced over the six task types.

    Game k of a split is :func:`~agentprm.envs.games.generate_game` ``(split, k, …, attempt)`` for
    the first attempt that gives a valid game, so the set depends only on the arguments. Each
    attempt runs in its own forked process, ``workers`` at a time; one that exceeds ``timeout``
    seconds (the planner can search for minutes on large rooms) is killed and counts as failed.
    Only a machine so slow that a normally quick attempt times out could change the result.
    """
    from tqdm import tqdm

    ctx = multiprocessing.get_context("fork")
    todo = [(split, k, 0) for split, n in counts.items() for k in range(n)]
    todo.reverse()
    done: dict[tuple[str, int], GameSpec] = {}
    running: dict = {}  # connection -> (process, task, started)
    bar = tqdm(total=len(todo), desc=f"games ({size})", disable=not progress)

    while todo or running:
        while todo and len(running) < workers:
            split, k, attempt = task = todo.pop()
            if attempt >= max_attempts:
                raise RuntimeError(f"no valid game for {split} #{k} after {max_attempts} attempts ({size})")
            recv, send = ctx.Pipe(duplex=False)
            proc = ctx.Process(target=_attempt, args=(send, split, k, size, seed, attempt), daemon=True)
            proc.start()
            send.close()
            running[recv] = (proc, task, time.monotonic())
        ready = wait(list(running), timeout=1.0)
        now = time.monotonic()
        for conn in list(running):
            proc, (split, k, attempt), started = running[conn]
            if conn in ready:
                try:
                    result = conn.recv()
                except EOFError:
                    result = None
            elif now - started > timeout:
                result = None
            else:
                continue
            proc.kill()
            proc.join()
            conn.close()
            del running[conn]
            if isinstance(result, GameSpec):
                done[(split, k)] = result
                bar.update(1)
            else:
                todo.append((split, k, attempt + 1))
    bar.close()
    return [done[(split, k)] for split, n in counts.items() for k in range(n)]


def save_set(path: str | os.PathLike, name: str, games: Sequence[GameSpec]) -> None:
    """Write a set as one gzip JSON file (atomically, world-readable)."""
    payload = {"format_version": SETS_FORMAT_VERSION, "name": name, "games": [asdict(g) for g in games]}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as out:
        out.write(json.dumps(payload, sort_keys=True).encode())
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def _set_path(name: str) -> Path:
    if name in BUILTIN_SETS:
        return Path(str(resources.files("agentprm") / "data" / "games" / f"{name}.json.gz"))
    return Path(name)


def load_set(name: str) -> list[GameSpec]:
    """Load a built-in set (``small`` / ``standard``) or a set file written by :func:`save_set`."""
    path = _set_path(name)
    if not path.is_file():
        raise FileNotFoundError(
            f"game set {name!r}: no file {path}; built-in sets are {', '.join(BUILTIN_SETS)}, "
            "or pass a .json.gz written by `agentprm games generate`"
        )
    payload = json.loads(gzip.decompress(path.read_bytes()))
    if payload.get("format_version") != SETS_FORMAT_VERSION:
        found = payload.get("format_version")
        raise ValueError(f"{path}: expected format_version {SETS_FORMAT_VERSION}, found {found!r}")
    games = []
    for g in payload["games"]:
        exp = g["expert_actions"]
        games.append(
            GameSpec(**{**g, "walkthrough": tuple(g["walkthrough"]), "expert_actions": exp and tuple(exp)})
        )
    return games


def materialize(games: Sequence[GameSpec], root: str | os.PathLike) -> Path:
    """Write games as ALFWorld data folders under ``root/json_2.1.1``; returns ``root``.

    Written into a temporary sibling and renamed, so a killed run never leaves a half set behind.
    """
    root = Path(root)
    if (root / "json_2.1.1").is_dir():
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root.parent, prefix=f".{root.name}-"))
    for spec in games:
        folder = tmp / "json_2.1.1" / spec.game_id
        folder.mkdir(parents=True)
        (folder / "initial_state.pddl").write_text(spec.problem)
        (folder / "traj_data.json").write_text(json.dumps(spec.traj_data, indent=1))
        (folder / "game.tw-pddl").write_text(json.dumps(game_data(spec)))
    try:
        os.replace(tmp, root)
    except OSError:  # another process materialised it first
        shutil.rmtree(tmp, ignore_errors=True)
    return root


def builtin_root(name: str = "small", cache_dir: str | os.PathLike | None = None) -> Path:
    """The data root of a built-in set, materialised on first use under the cache directory.

    The folder name carries a digest of the set file and the installed domain and grammar, so a new
    release of either gives a fresh folder.
    """
    digest = hashlib.sha256(_set_path(name).read_bytes())
    for text in logic_files():
        digest.update(text.encode())
    base = cache_root(cache_dir)
    stem = Path(name).name.split(".")[0]
    return materialize(load_set(name), base / "games" / f"{stem}-{digest.hexdigest()[:12]}")
