"""Rollout throughput: batched generation across B environments vs one generate call per environment.

B episodes of ``AlfWorldEnv("builtin:small")`` (held-out games) are played by ``agentprm.rollout.play``
with a policy in ``HFSampler`` ``generate`` mode (the project's tiny-model dimensions, random
weights, sampling at temperature 1, ``max_new_tokens`` capped):

- ours: one ``HFSampler.sample`` call with the B running states per turn (left-padded batch, one
  ``generate``);
- baseline: one ``HFSampler.sample`` call per running environment per turn.

For each B, one ``play`` of B episodes runs ``max_steps`` turns; at every turn the running states
are sampled both ways, in alternating order (so both modes see the same states and the same
machine load), and the environment steps with the first mode's samples. A mode's timed run is one
turn: its sampling time (prompt rendering, generation, decoding) plus the ``env.step`` time. Resets
are left out (TextWorld's PDDL translation makes one cost ~0.2–0.4 s, the same
in both modes, and short benchmark episodes would be dominated by it). A random policy rarely
ends its response early, so responses run to the cap and both modes generate about the same
number of tokens.

The ALFWorld engine alone, with and without the text-generation cache, is measured by
``benchmarks/alfworld_engine.py``'s ``run`` (random admissible actions, the same seed; the traces
must be identical).

    .venv/bin/python benchmarks/rollouts.py [--quick]
"""

from __future__ import annotations

import time

import alfworld_engine
import common

NAME = "Rollouts"
ORDER = 30
DATA = "builtin:small"
SPLIT = "valid_unseen"


class _PairedTurns:
    """An environment proxy and chooser for ``play`` that samples every turn both ways.

    At each turn the running states are sampled batched and per environment, in alternating order;
    the environment steps with the samples of the mode that went first. A mode's time for the turn
    is its sampling time (prompt rendering, generation, decoding) plus the ``env.step`` time, so
    both modes are timed on the same states under the same machine load. Resets pass through
    untimed.
    """

    def __init__(self, env, sampler) -> None:
        self.env, self.sampler = env, sampler
        self.max_steps = env.max_steps
        self.turns: list[dict[bool, tuple[float, int, int]]] = []

    def reset(self, game_ids):
        return self.env.reset(game_ids)

    def choose(self, states, slots):
        order = (True, False) if len(self.turns) % 2 == 0 else (False, True)
        self.pending: dict[bool, tuple[float, int]] = {}
        chosen = []
        for batched in order:
            start = time.perf_counter()
            if batched:
                samples = [s[0] for s in self.sampler.sample(states, 1)]
            else:
                samples = [self.sampler.sample([state], 1)[0][0] for state in states]
            self.pending[batched] = (time.perf_counter() - start, sum(len(s.token_ids) for s in samples))
            chosen = chosen or samples  # the first mode's samples step the environment
        return chosen

    def step(self, commands):
        start = time.perf_counter()
        out = self.env.step(commands)
        elapsed = time.perf_counter() - start
        steps = sum(c is not None for c in commands)
        self.turns.append({mode: (t + elapsed, steps, n) for mode, (t, n) in self.pending.items()})
        return out


def _rollout_rows(quick: bool) -> list[dict]:
    from agentprm.backbone import load_causal_lm, load_tokenizer
    from agentprm.envs.alfworld import AlfWorldEnv
    from agentprm.prompts import Renderer
    from agentprm.rollout import play, state_of
    from agentprm.sampling import HFSampler

    if quick:
        model_dir = common.bench_model(hidden=32, layers=1, heads=2, intermediate=64)
        sizes, turns, max_new = (1, 2), 2, 4
    else:
        model_dir = common.bench_model(hidden=192, layers=4, heads=4, intermediate=512)
        sizes, turns, max_new = (1, 8, 32), 5, 8
    renderer = Renderer("compact", 2, "action")
    sampler = HFSampler(
        load_causal_lm(str(model_dir)), load_tokenizer(str(model_dir)), renderer, "generate",
        temperature=1.0, max_new_tokens=max_new, seed=0,
    )  # fmt: skip
    env = AlfWorldEnv(DATA, max_steps=turns)
    games = env.game_ids(SPLIT)
    warm = [state_of(s, []) for s in env.reset([games[i % len(games)] for i in range(sizes[-1])])]
    sampler.sample(warm, 1)  # warm-up of both modes (first calls, batch shapes)
    sampler.sample(warm[:1], 1)
    rows = []
    for b in sizes:
        paired = _PairedTurns(env, sampler)
        play(paired, [games[i % len(games)] for i in range(b)], paired.choose, policy_id="bench")
        if len(paired.turns) < turns:
            raise RuntimeError(f"episodes ended after {len(paired.turns)} of {turns} turns")
        steps = {m: [t[m][1] / t[m][0] for t in paired.turns] for m in (True, False)}
        toks = {m: [t[m][2] / t[m][0] for t in paired.turns] for m in (True, False)}
        case = f"B={b} envs, max_new_tokens {max_new}, policy {model_dir.name}, generate mode"
        note = (
            f"{turns} paired turns of one play(): the same states sampled both ways, alternating order; "
            "a turn = sampling + env.step, resets excluded; compact template, history window 2"
        )
        rows.append(common.row(NAME, case, "env steps/s", "steps/s", steps[True], steps[False],
                               "one generate call per env", notes=note))  # fmt: skip
        rows.append(common.row(NAME, case, "generated tokens/s", "tok/s", toks[True], toks[False],
                               "one generate call per env"))  # fmt: skip
    return rows


def _engine_rows(quick: bool) -> list[dict]:
    """The engine alone with and without the text-generation cache (``alfworld_engine.run``)."""
    from agentprm.envs import textgen_cache
    from agentprm.envs.alfworld import AlfWorldEnv

    batch, steps, repeats = (1, 10, 2) if quick else (8, 60, 5)
    ids = AlfWorldEnv(DATA).game_ids(SPLIT)[:batch]
    rates: dict[str, list[float]] = {"plain": [], "cached": []}
    traces: dict[str, list] = {}
    try:
        for i in range(repeats + 1):  # the first round is the warm-up (loads the games, fills the cache)
            for name in ("plain", "cached"):
                (textgen_cache.enable if name == "cached" else textgen_cache.disable)()
                rate, traces[name] = alfworld_engine.run(DATA, ids, steps, seed=0)
                if i:
                    rates[name].append(rate)
    finally:
        textgen_cache.enable()
    case = f"{batch} episodes, {steps} random admissible steps, {DATA} {SPLIT}"
    note = (
        f"benchmarks/alfworld_engine.py run(); {repeats} timed runs after 1 warm-up, alternating; "
        f"identical traces: {'yes' if traces['plain'] == traces['cached'] else 'NO'}"
    )
    return [
        common.row(
            "ALFWorld engine",
            case,
            "env steps/s",
            "steps/s",
            rates["cached"],
            rates["plain"],
            "no text-generation cache",
            notes=note,
        )
    ]


def run(quick: bool = False) -> list[dict]:
    """Rollout rows: batched vs per-environment generation for each B, then the engine with/without cache.

    Args:
        quick: Tiny sizes (a smoke test), not a measurement.
    """
    common.setup()
    return _rollout_rows(quick) + _engine_rows(quick)


def main() -> None:
    common.cli(run, __doc__)


if __name__ == "__main__":
    main()
