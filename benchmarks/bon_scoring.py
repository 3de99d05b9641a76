"""Best-of-N scoring: ``PRMModule.score`` (state computed once, KV cache shared) vs scoring full sequences.

N responses to one long state (~1k tokens: a real built-in game's observations and full history)
are scored three ways with the same PRMModule (same trunk, same head, eval mode, no gradients):

- ours: ``PRMModule.score(state, responses)`` — the prompt runs through the trunk once and the N
  responses run against its KV cache (``sampling.shared_prefix_forward_batch``). The N responses
  are distinct (``REASON: option i`` + a command), so scoring a repeated response once, which
  ``score`` also does, saves nothing here;
- batched: the N full (state, response) sequences, right-padded, in one ``PRMModule.forward``;
- one by one: each full sequence in its own ``PRMModule.forward``.

Each timing includes the tokenization each path needs (``PRMModule.encode`` for the baselines,
the same ``chat_ids``/``response_ids`` inside ``score``), so it is the wall time of a Best-of-N
call. The scores of the three paths are compared (max absolute difference in the notes).

    .venv/bin/python benchmarks/bon_scoring.py [--quick]
"""

from __future__ import annotations

import time

import common

NAME = "Best-of-N scoring"
ORDER = 20
GOAL = 8.0


def long_state(tokenizer, renderer, target_tokens: int, seed: int = 0):
    """A real state whose prompt has at least ``target_tokens`` tokens (the first such, or the longest).

    Random admissible actions are played in built-in games with no step limit to speak of; the
    renderer keeps the whole history, so the prompt grows by one (observation, action) per turn.
    When no state is long enough its history is extended with earlier turns of the same game.
    """
    from dataclasses import replace

    from agentprm.sampling import chat_ids

    turns = max(4, target_tokens // 25)
    states = common.random_states(turns, n_games=2, seed=seed)
    for state in states:
        if len(chat_ids(tokenizer, renderer, state)) >= target_tokens and len(state.admissible_commands) > 1:
            return state
    state = max(states, key=lambda s: (s.turn, len(s.admissible_commands)))
    while len(chat_ids(tokenizer, renderer, state)) < target_tokens:
        history = state.history + state.history[: max(1, len(state.history))]
        state = replace(state, history=history, turn=len(history))
    return state


def run(quick: bool = False) -> list[dict]:
    """Best-of-N rows: seconds per N-response scoring call, ours vs batched and one-by-one full sequences.

    Args:
        quick: Tiny sizes (a smoke test), not a measurement.
    """
    import torch

    from agentprm.data import PRMExample, collate_prm
    from agentprm.prm import PRMModule

    common.setup()
    if quick:
        model_dir = common.bench_model(hidden=32, layers=1, heads=2, intermediate=64)
        n, target, repeats = 4, 60, 5
    else:
        model_dir = common.bench_model(hidden=256, layers=4, heads=4, intermediate=704)
        n, target, repeats = 16, 1000, 5
    prm = PRMModule(model=str(model_dir), history_window=None, response_format="reason_action").eval()
    state = long_state(prm.tokenizer, prm.renderer, target)
    commands = list(state.admissible_commands)
    responses = [prm.renderer.response(f"option {i}", commands[i % len(commands)]) for i in range(n)]
    assert len(set(responses)) == n

    def ours() -> torch.Tensor:
        return prm.score(state, responses)

    @torch.no_grad()
    def batched() -> torch.Tensor:
        seqs = [tuple(p + r) for p, r in (prm.encode(state, x) for x in responses)]
        batch = collate_prm([PRMExample((s,)) for s in seqs], prm.tokenizer.pad_token_id)
        return prm(batch.input_ids, batch.attention_mask, batch.score_index).float()

    @torch.no_grad()
    def one_by_one() -> torch.Tensor:
        out = []
        for x in responses:
            p, r = prm.encode(state, x)
            ids = torch.tensor([p + r])
            out.append(prm(ids, torch.ones_like(ids), torch.tensor([ids.shape[1] - 1])).float())
        return torch.cat(out)

    prompt_len = len(prm.encode(state, responses[0])[0])
    resp_lens = sorted(len(prm.encode(state, x)[1]) for x in responses)
    paths = {"ours": ours, "batched": batched, "one": one_by_one}
    ours(), batched()  # warm-up (one_by_one runs the same batch-1 shapes as ours' prompt pass)
    times: dict[str, list[float]] = {name: [] for name in paths}
    scores, mem = {}, {}
    for i in range(repeats):  # interleaved, rotating the order, so the machine load hits all paths alike
        for name in list(paths)[i % 3 :] + list(paths)[: i % 3]:
            with common.PeakRSS() as m:
                start = time.perf_counter()
                out = paths[name]()
                times[name].append(time.perf_counter() - start)
            if i == 0:  # the first timed call of each path gives its scores and its memory
                scores[name], mem[name] = out, m.delta_mib
    diff = max(float((scores["ours"] - scores[k]).abs().max()) for k in ("batched", "one"))
    case = (
        f"N={n}, state {prompt_len} tok, responses {resp_lens[0]}–{resp_lens[-1]} tok, {model_dir.name}, fp32"
    )
    total = sum(prompt_len + k for k in resp_lens)
    notes = (
        f"{repeats} timed calls after a warm-up, the three paths interleaved; tokens through the trunk: ours "
        f"{prompt_len + sum(resp_lens)}, full sequences {total}; max |score difference| vs ours {diff:.1e}"
    )
    mem_note = (
        f"peak RSS increase during the first timed call of each: ours {mem['ours']:.0f} MiB, "
        f"batched {mem['batched']:.0f} MiB, one by one {mem['one']:.0f} MiB"
    )
    return [
        common.row(NAME, case, "time per call", "s", times["ours"], times["batched"],
                   "full sequences, one padded batch", higher_is_better=False, goal=GOAL, notes=notes),
        common.row(NAME, case, "time per call", "s", times["ours"], times["one"],
                   "full sequences, one by one", higher_is_better=False, goal=GOAL),
        common.row(NAME, case, "peak memory added", "MiB", [mem["ours"]], [mem["batched"]],
                   "full sequences, one padded batch", higher_is_better=False, notes=mem_note),
    ]  # fmt: skip


def main() -> None:
    common.cli(run, __doc__)


if __name__ == "__main__":
    main()
