"""What every data module shares: an even spread of games, a map-style dataset of items, and
reading trajectories from rollout folders."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from agentprm.records import Trajectory, read_jsonl

__all__ = ["Items", "read_trajectories", "spread"]


def spread(items: Sequence, n: int | None) -> list:
    """``n`` evenly spaced items of a sorted sequence (all when ``n`` is None or large).

    Game ids sort by task type, so the first N would all be one task type; an even spread keeps
    every task type represented.
    """
    items = list(items)
    if n is None or n >= len(items):
        return items
    return [items[(i * len(items)) // n] for i in range(n)]


class Items(torch.utils.data.Dataset):
    def __init__(self, items: Sequence) -> None:
        self.items = list(items)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        return self.items[i]


def read_trajectories(sources: Sequence[str]) -> list[Trajectory]:
    """Every Trajectory of the given JSONL files or rollout directories, each file read once.

    A directory gives its ``batch-*.jsonl`` shards (sorted), or every ``*.jsonl`` file when it has
    no shards (a folder of hand-made files). A source given twice, or a file also inside a given
    directory, is read once, with a warning.
    """
    import warnings
    from pathlib import Path

    files: list[Path] = []
    for source in map(Path, sources):
        if source.is_dir():
            found = sorted(source.glob("batch-*.jsonl")) or sorted(source.glob("*.jsonl"))
        elif source.exists():
            found = [source]
        else:
            raise FileNotFoundError(f"no rollout file or directory {source}")
        files += found
    seen: dict[Path, None] = {}
    for f in files:
        seen.setdefault(f.resolve())
    if len(seen) < len(files):
        warnings.warn(
            f"{len(files) - len(seen)} trajectory file(s) given more than once (e.g. the same rollout "
            f"directory twice in {', '.join(map(str, sources))}); each is read once",
            stacklevel=2,
        )
    if not seen:
        raise FileNotFoundError(f"no .jsonl trajectory files in {', '.join(map(str, sources))}")
    return [t for f in seen for t in read_jsonl(f)]
