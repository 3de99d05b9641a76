"""ALFWorld engine throughput: env steps/s with and without the text-generation cache.

Random admissible actions on held-out built-in games, B episodes stepped together; the same seed
gives the same (command, feedback) sequence in both settings (checked here too). Each setting is
run ``--repeats`` times, alternating, and the median is reported with min-max and the ratio.

    .venv/bin/python benchmarks/alfworld_engine.py --set small --steps 300 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from agentprm.envs import textgen_cache
from agentprm.envs.alfworld import AlfWorldEnv, random_walk


def run(data: str, game_ids: list[str], steps: int, seed: int) -> tuple[float, list]:
    """Steps/s over ``steps`` random steps (loading and resets included) and the trace."""
    env = AlfWorldEnv(data, max_steps=30, text_cache=False, cache_games=0, engine="plain")
    start = time.perf_counter()
    trace = random_walk(env, game_ids, steps, seed)
    return len(trace) / (time.perf_counter() - start), trace


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", default="small", choices=("small", "standard"))
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    data = f"builtin:{args.set}"
    ids = AlfWorldEnv(data).game_ids("valid_unseen")[: args.batch]
    rates: dict[str, list[float]] = {"plain": [], "cached": []}
    traces = {}
    for _ in range(args.repeats):
        for name in ("plain", "cached"):
            (textgen_cache.enable if name == "cached" else textgen_cache.disable)()
            rate, traces[name] = run(data, ids, args.steps, seed=0)
            rates[name].append(rate)
    textgen_cache.enable()
    result = {
        "set": args.set,
        "batch": args.batch,
        "steps": args.steps,
        "identical_traces": traces["plain"] == traces["cached"],
        **{
            f"{k}_steps_per_s": {"median": statistics.median(v), "min": min(v), "max": max(v)}
            for k, v in rates.items()
        },
        "speedup": statistics.median(rates["cached"]) / statistics.median(rates["plain"]),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
