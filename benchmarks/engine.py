"""The ALFWorld engine: the game graph (``engine="graph"``) against TextWorld's plain PDDL engine.

Three measurements, each against the plain engine in the same run:

- **steps/s with resets**: B = 8 held-out small games, rounds of random admissible episodes (a new
  seed each round, 30 steps, reset every round), loading included. The graph pays each game's load
  once and each new transition once; the plain engine re-translates the problem at every reset.
  Both the first round (every transition new) and later rounds (as an evaluation of several
  episodes per game meets them) are reported.
- **snapshot + continue vs reset + replay**: reach the state after a 15-step prefix of a random
  episode and take one more step: ``restore`` of a snapshot vs a reset and 15 replayed steps.
- **the expert's Q of every command at a state** (the oracle of the ladder) on the graph, per state.

``--profile`` prints the top cumulative entries of cProfile for a plain reset and plain steps (where
TextWorld spends the time) and for the same on the graph.

    .venv/bin/python benchmarks/engine.py [--quick] [--profile]
"""

from __future__ import annotations

import argparse
import random
import time

import common

NAME = "ALFWorld engine"
ORDER = 35
DATA = "builtin:small"
SPLIT = "valid_unseen"


def _walk_round(env, games: list[str], steps: int, seed: int) -> int:
    """One reset of every game and ``steps`` random admissible steps; the number of steps taken."""
    rng = random.Random(seed)
    state, taken = env.reset(games), 0
    for _ in range(steps):
        commands = [None if s.done else rng.choice(s.admissible_commands) for s in state]
        if all(c is None for c in commands):
            break
        state = env.step(commands)
        taken += sum(c is not None for c in commands)
    return taken


def _throughput_rows(quick: bool) -> list[dict]:
    from agentprm.envs.alfworld import AlfWorldEnv

    batch, steps, rounds = (2, 5, 2) if quick else (8, 30, 6)
    games = AlfWorldEnv(DATA).game_ids(SPLIT)[::6][:batch]
    rates: dict[str, list[list[float]]] = {"graph": [], "plain": []}
    for repeat in range(2 if quick else 3):  # fresh engines each repeat: loading counted every time
        for engine in ("plain", "graph"):
            env = AlfWorldEnv(DATA, max_steps=steps, engine=engine)
            per_round = []
            for r in range(rounds):
                start = time.perf_counter()
                taken = _walk_round(env, games, steps, seed=1000 * repeat + r)
                per_round.append(taken / (time.perf_counter() - start))
            rates[engine].append(per_round)
    case = f"{batch} games × {rounds} rounds of {steps} random steps, {DATA} {SPLIT}, loads and resets"
    first = {e: [r[0] for r in v] for e, v in rates.items()}
    later = {e: [x for r in v for x in r[1:]] for e, v in rates.items()}
    note = "a new random seed every round; the graph starts empty every repeat (no state kept across repeats)"
    return [
        common.row(NAME, case + ", round 1 (all new)", "env steps/s", "steps/s", first["graph"],
                   first["plain"], "TextWorld PddlEnv", goal=None, notes=note),
        common.row(NAME, case + ", rounds 2+", "env steps/s", "steps/s", later["graph"], later["plain"],
                   "TextWorld PddlEnv", goal=4.0, notes=note),
    ]  # fmt: skip


def _snapshot_rows(quick: bool) -> list[dict]:
    from agentprm.envs.alfworld import AlfWorldEnv

    prefix, repeats = (5, 3) if quick else (15, 10)
    game = AlfWorldEnv(DATA).game_ids(SPLIT)[3]
    rng = random.Random(0)
    graph = AlfWorldEnv(DATA, engine="graph")
    state = graph.reset([game])
    commands = []
    for _ in range(prefix):
        commands.append(rng.choice(state[0].admissible_commands))
        state = graph.step([commands[-1]])
    snapshot = graph.snapshot(0)
    last = rng.choice(state[0].admissible_commands)
    plain = AlfWorldEnv(DATA, engine="plain")

    def replay() -> None:
        plain.reset([game])
        for c in commands:
            plain.step([c])
        plain.step([last])

    def restore() -> None:
        graph.restore([snapshot])
        graph.step([last])

    ours = common.time_calls(restore, repeats=repeats, warmup=1)
    base = common.time_calls(replay, repeats=repeats, warmup=1)
    case = f"reach the state after a {prefix}-step prefix and take 1 step, {DATA} {SPLIT}"
    return [
        common.row(NAME, case, "time", "s", ours, base, "reset + replay (plain engine)",
                   higher_is_better=False, goal=10.0),
    ]  # fmt: skip


def _oracle_rows(quick: bool) -> list[dict]:
    from agentprm.reference import ExpertValues
    from agentprm.rollout import state_of

    n = 2 if quick else 12
    values = ExpertValues(DATA, max_steps=30)
    env = values.env
    games = env.game_ids(SPLIT)[::4][:n]
    rng = random.Random(0)
    states = []
    for game in games:  # a state a few random steps in
        step, history = env.reset([game])[0], []
        for _ in range(rng.randrange(2, 8)):
            from agentprm.records import Turn

            command = rng.choice(step.admissible_commands)
            history.append(Turn(step.observation, command))
            step = env.step([command])[0]
        states.append(state_of(step, history))
    cold, warm = [], []
    for s in states:
        start = time.perf_counter()
        values.q_values(s, s.admissible_commands)
        cold.append(time.perf_counter() - start)
        start = time.perf_counter()
        values.q_values(s, s.admissible_commands)
        warm.append(time.perf_counter() - start)
    case = f"Q^μ of every admissible command at a state ({n} states, {DATA} {SPLIT}), game loading included"
    note = (
        f"{sum(len(s.admissible_commands) for s in states) / len(states):.1f} commands per state; "
        f"{values.expert_steps} expert steps in {values.continuations} continuations; "
        f"the same state again: median {1e3 * sorted(warm)[len(warm) // 2]:.2f} ms (cached)"
    )
    return [common.row("Reference values", case, "time per state", "s", cold, None, "–",
                       higher_is_better=False, notes=note)]  # fmt: skip


def run(quick: bool = False) -> list[dict]:
    """Engine rows: graph vs plain throughput, snapshot vs replay, oracle cost per state.

    Args:
        quick: Tiny sizes (a smoke test), not a measurement.
    """
    common.setup()
    return _throughput_rows(quick) + _snapshot_rows(quick) + _oracle_rows(quick)


def profile() -> None:
    """Where a reset, a step and the admissible commands spend their time (plain and graph)."""
    import cProfile
    import pstats

    from agentprm.envs.alfworld import AlfWorldEnv

    games = AlfWorldEnv(DATA).game_ids(SPLIT)[::6][:8]
    for engine in ("plain", "graph"):
        env = AlfWorldEnv(DATA, max_steps=30, engine=engine)
        _walk_round(env, games, 30, seed=0)  # load the games
        profiler = cProfile.Profile()
        profiler.enable()
        for r in range(3):
            _walk_round(env, games, 30, seed=r + 1)
        profiler.disable()
        print(f"\n=== {engine}: 3 rounds of {len(games)} games × 30 random steps (after loading)")
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(18)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--profile", action="store_true", help="print cProfile tables instead")
    args = parser.parse_args()
    if args.profile:
        profile()
        return
    import json

    for r in run(args.quick):
        print(json.dumps(r))


if __name__ == "__main__":
    main()
