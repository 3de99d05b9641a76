"""Pool paired differences of several runs against one baseline, resampling games.

Each run is an `agentprm test` folder evaluated on the same episodes (games x rollout index, common
random numbers) as the baseline. The statistic is the mean over the runs of (run won - baseline
won) per episode; the 95% interval and the two-sided p-value come from a bootstrap over games
(the runs share the baseline and its episodes, so they are not independent; games are the unit).

    .venv/bin/python experiments/pool_seeds.py BASELINE RUN [RUN ...] [--draws 4000]
e.g. experiments/pool_seeds.py runs/exp/sft12-s0/crn/pi0-eval4 \
         runs/exp/dpo/sft12-s0-oracle{,-seed1,-seed2}/eval4
"""

from __future__ import annotations

import argparse
import random
from collections import defaultdict

from agentprm.compare import read_results


def _won(folder: str) -> dict[tuple[str, int], float]:
    return {(r["game_id"], r.get("rollout_index", 0)): float(r["won"]) for r in read_results(folder)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("baseline")
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--draws", type=int, default=4000)
    args = parser.parse_args()
    base = _won(args.baseline)
    runs = [_won(r) for r in args.runs]
    for path, run in zip(args.runs, runs, strict=True):
        if run.keys() != base.keys():
            raise SystemExit(f"{path}: not the baseline's episodes")
    episodes = defaultdict(list)
    for key in base:
        episodes[key[0]].append(key)
    games = sorted(episodes)

    def mean_difference(sample: list[str]) -> float:
        diffs = [run[k] - base[k] for g in sample for k in episodes[g] for run in runs]
        return sum(diffs) / len(diffs)

    rng = random.Random(0)
    draws = sorted(mean_difference([rng.choice(games) for _ in games]) for _ in range(args.draws))
    low, high = draws[int(0.025 * len(draws))], draws[int(0.975 * len(draws)) - 1]
    p = min(1.0, 2 * min(sum(d <= 0 for d in draws), sum(d >= 0 for d in draws)) / len(draws))
    print(
        f"{len(runs)} runs, {len(games)} games, {len(base)} episodes: mean difference "
        f"{100 * mean_difference(games):+.1f} points, by-game bootstrap 95% [{100 * low:+.1f}, "
        f"{100 * high:+.1f}], p ~ {p:.3f}"
    )


if __name__ == "__main__":
    main()
