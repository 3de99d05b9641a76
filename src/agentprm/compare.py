"""Paired comparison of two policies' success on the same games and seeds (``agentprm compare``).

Two evaluations that played the same games with the same sampler seeds (``agentprm test`` with the
same game list, ``rollouts_per_game`` and ``seed``) give paired episodes: episode (game, k) of one
and of the other. The difference in success B − A is estimated from the pairs:

- ``difference``: (n01 − n10) / n, with n01 the pairs only B won and n10 the pairs only A won;
- ``ci95``: Newcombe's interval for a difference of paired proportions (method 10 of Newcombe,
  "Improved confidence intervals for the difference between binomial proportions based on paired
  data", Statistics in Medicine 1998), built from the two Wilson intervals and the correlation of
  the pairs;
- ``p_value``: the exact two-sided McNemar test (a binomial test on the discordant pairs);
- ``ci95_games``: a percentile bootstrap that resamples whole games, because the episodes of one
  game are not independent of each other (a wider interval when they are strongly correlated).

Several comparisons (e.g. three seeds) pool by adding their pairs.
"""

from __future__ import annotations

import json
import math
import random
import sys
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from agentprm.evaluation import wilson_interval

__all__ = ["mcnemar_exact", "newcombe_paired_interval", "paired_difference", "read_results"]


def mcnemar_exact(n01: int, n10: int) -> float:
    """Two-sided exact McNemar p-value: P(a split at least this uneven) under Binomial(n01 + n10, ½)."""
    n = n01 + n10
    if n == 0:
        return 1.0
    k = min(n01, n10)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)


def newcombe_paired_interval(both: int, only_a: int, only_b: int, neither: int, z: float = 1.96):
    """95% interval (for z = 1.96) of p_B − p_A from paired outcomes (Newcombe's method 10)."""
    n = both + only_a + only_b + neither
    if n == 0:
        return -1.0, 1.0
    p_a, p_b = (both + only_a) / n, (both + only_b) / n
    l_a, u_a = wilson_interval(both + only_a, n, z)
    l_b, u_b = wilson_interval(both + only_b, n, z)
    denominator = (both + only_a) * (only_b + neither) * (both + only_b) * (only_a + neither)
    phi = (both * neither - only_a * only_b) / math.sqrt(denominator) if denominator > 0 else 0.0
    d = p_b - p_a
    lower = d - math.sqrt(max(0.0, (p_b - l_b) ** 2 - 2 * phi * (p_b - l_b) * (u_a - p_a) + (u_a - p_a) ** 2))
    upper = d + math.sqrt(max(0.0, (u_b - p_b) ** 2 - 2 * phi * (u_b - p_b) * (p_a - l_a) + (p_a - l_a) ** 2))
    return max(-1.0, lower), min(1.0, upper)


def _pairs(a: Sequence[dict], b: Sequence[dict], names: tuple[str, str]) -> list[tuple[str, int, int]]:
    """(game, won by A, won by B) for every episode both played, matched by (game, rollout index)."""

    def index(rows: Sequence[dict]) -> dict[tuple[str, int], int]:
        return {(r["game_id"], int(r.get("rollout_index", 0))): int(bool(r["won"])) for r in rows}

    ia, ib = index(a), index(b)
    if set(ia) != set(ib):
        only_a, only_b = sorted(set(ia) - set(ib)), sorted(set(ib) - set(ia))
        raise ValueError(
            f"{names[0]} and {names[1]} did not play the same episodes: {len(only_a)} only in the first "
            f"(e.g. {only_a[:2]}), {len(only_b)} only in the second (e.g. {only_b[:2]}); compare "
            "evaluations of the same games, rollouts_per_game and seed"
        )
    return [(game, ia[(game, k)], ib[(game, k)]) for game, k in sorted(ia)]


def paired_difference(
    pairs_or_a: Sequence, b: Sequence[dict] | None = None, *, bootstrap: int = 2000, seed: int = 0
) -> dict:
    """The paired difference in success B − A.

    Args:
        pairs_or_a: A's result rows (``results.jsonl`` lines: ``game_id``, ``rollout_index``,
            ``won``) with ``b`` given, or a list of (game, won_a, won_b) pairs (e.g. pooled).
        b: B's result rows.
        bootstrap: Resamples of the by-game bootstrap (0: none).
        seed: Its seed.

    Returns:
        ``episodes``, ``success_a``, ``success_b``, ``difference``, ``ci95``, ``p_value``,
        ``only_a`` (n10), ``only_b`` (n01), ``both``, ``neither``, ``games``, ``ci95_games``.
    """
    pairs = _pairs(pairs_or_a, b, ("A", "B")) if b is not None else list(pairs_or_a)
    if not pairs:
        raise ValueError("no paired episodes to compare")
    counts = defaultdict(int)
    for _, x, y in pairs:
        counts[(x, y)] += 1
    both, only_a, only_b, neither = counts[(1, 1)], counts[(1, 0)], counts[(0, 1)], counts[(0, 0)]
    n = len(pairs)
    out = {
        "episodes": n,
        "success_a": (both + only_a) / n,
        "success_b": (both + only_b) / n,
        "difference": (only_b - only_a) / n,
        "ci95": list(newcombe_paired_interval(both, only_a, only_b, neither)),
        "p_value": mcnemar_exact(only_b, only_a),
        "only_a": only_a,
        "only_b": only_b,
        "both": both,
        "neither": neither,
    }
    by_game: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for game, x, y in pairs:
        by_game[game][0] += y - x
        by_game[game][1] += 1
    games = sorted(by_game)
    out["games"] = len(games)
    if bootstrap > 0 and len(games) > 1:
        rng = random.Random(seed)
        draws = []
        for _ in range(bootstrap):
            picked = [by_game[games[rng.randrange(len(games))]] for _ in games]
            draws.append(sum(d for d, _ in picked) / sum(m for _, m in picked))
        draws.sort()
        out["ci95_games"] = [draws[int(0.025 * (bootstrap - 1))], draws[int(0.975 * (bootstrap - 1))]]
    return out


def read_results(folder: str | Path) -> list[dict]:
    """The per-episode rows of an evaluation directory's ``results.jsonl``."""
    path = Path(folder) / "results.jsonl" if Path(folder).is_dir() else Path(folder)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no results.jsonl (an `agentprm test` output directory is expected)")
    rows = []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}:{i}: not JSON ({err.msg})") from err
    return rows


def format_difference(result: dict, label: str = "B − A") -> str:
    """One line: the difference, its intervals and p-value, the discordant counts."""
    lo, hi = result["ci95"]
    games = result.get("ci95_games")
    by_game = f", by-game bootstrap [{100 * games[0]:+.1f}, {100 * games[1]:+.1f}]" if games else ""
    return (
        f"{label}: {100 * result['success_a']:.1f}% → {100 * result['success_b']:.1f}%, "
        f"difference {100 * result['difference']:+.1f} points, 95% CI [{100 * lo:+.1f}, {100 * hi:+.1f}]"
        f"{by_game}, McNemar p = {result['p_value']:.3g} "
        f"({result['episodes']} paired episodes: {result['only_b']} won only by B, "
        f"{result['only_a']} only by A)"
    )


def main(argv: Sequence[str]) -> int:
    """``agentprm compare A B [A2 B2 …]``: paired difference B − A, pooled over the given pairs."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="agentprm compare",
        description="Paired difference in success B − A between evaluations of the same games and "
        "seeds (`agentprm test` output directories). Several A B pairs (e.g. seeds) are also pooled.",
    )
    parser.add_argument("folders", nargs="+", help="A B [A2 B2 …]: evaluation directories")
    parser.add_argument("--output", help="also write the JSON here")
    ns = parser.parse_args(list(argv))
    if len(ns.folders) % 2:
        parser.error(f"give evaluation directories in A B pairs; found {len(ns.folders)}")
    from agentprm.records import atomic_write_json

    try:
        pooled, each = [], []
        for a, b in zip(ns.folders[0::2], ns.folders[1::2], strict=True):
            pairs = _pairs(read_results(a), read_results(b), (a, b))
            pooled += [(f"{a}|{game}", x, y) for game, x, y in pairs]
            each.append({"a": a, "b": b, **paired_difference(pairs)})
    except (FileNotFoundError, ValueError) as err:
        print(f"agentprm compare: {err}", file=sys.stderr)
        return 2
    for row in each:
        print(format_difference(row, f"{row['b']} − {row['a']}"))
    result = {"comparisons": each}
    if len(each) > 1:
        result["pooled"] = paired_difference(pooled)
        print(format_difference(result["pooled"], f"pooled over {len(each)}"))
    if ns.output:
        atomic_write_json(ns.output, result)
    return 0
