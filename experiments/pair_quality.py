"""How good are the pairs online DPO would train on, with a PRM (and with the policy's own
likelihood) as the scorer? Measured against the search expert's Q^mu at the labelled states of the
validation games (the PRM data module's split: fraction 0.15, seed 42) of labelled rollouts.

For each state: whether the top-scored command is a best one (top-1) and its regret (best Q^mu minus
its Q^mu); then, 20 times per state, 4 distinct commands drawn from the policy (as
``candidates: distinct`` draws them), the highest- and lowest-scored as DPO's pair: ordered right
(Q^mu differ by >= 0.015 the scored way), wrong, or tied. Scorers: the policy's log-likelihood, the
PRM, and PRM + w * log-likelihood. Then the PRM's pairs by score gap (4 commands drawn uniformly),
and the verbs of the PRM's and the oracle's top commands.

    .venv/bin/python experiments/pair_quality.py PRM_DIR POLICY_DIR ROLLOUTS [--states 150]
e.g. experiments/pair_quality.py runs/exp/sft12-s0/prm-list240-e6/model runs/exp/sft12-s0/policy \
         runs/exp/sft12-s0/rollouts240-ref
"""

from __future__ import annotations

import argparse
import collections
import math
import random

from agentprm import targets
from agentprm.backbone import load_causal_lm, load_tokenizer
from agentprm.data.common import read_trajectories
from agentprm.objectives import _reference_labels
from agentprm.prm import PRMModule
from agentprm.prompts import Renderer
from agentprm.sampling import HFSamplerFactory

DELTA = 0.015


def load_labelled(prm_dir: str, policy_dir: str, rollouts: str, history_window: int = 1):
    """The PRM, its response text of a command, every labelled state of the validation games (the
    PRM data module's split: fraction 0.15, seed 42) as a CommandList, the number of those games,
    and the policy's admissible-mode sampler."""
    learners = read_trajectories([rollouts])
    _, val = targets.split_games([t.game_id for t in learners], 0.15, 42)
    prm = PRMModule.load(prm_dir).eval()
    response = lambda command: prm.renderer.response("", command)  # noqa: E731
    lists = targets.reference_lists(
        [t for t in learners if t.game_id in set(val)], _reference_labels([rollouts]), response
    )
    policy = HFSamplerFactory("admissible", 1.0).build(
        load_causal_lm(policy_dir),
        load_tokenizer(policy_dir),
        Renderer("compact", history_window, "action"),
        0,
    )
    return prm, response, lists, len(val), policy


def policy_logps(policy, labelled, response) -> list[float]:
    """The policy's log-likelihood of each command of a labelled state, in its order."""
    texts, _, lp = policy.candidate_logprobs([labelled.state])[0]
    by_text = {t: float(v) for t, v in zip(texts, lp, strict=True)}
    return [by_text[response(c)] for c in labelled.commands]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("prm")
    parser.add_argument("policy")
    parser.add_argument("rollouts")
    parser.add_argument("--states", type=int, default=150)
    parser.add_argument("--history-window", type=int, default=1, help="the policy's prompt")
    ns = parser.parse_args()

    prm, response, lists, games, policy = load_labelled(ns.prm, ns.policy, ns.rollouts, ns.history_window)
    lists = [x for x in lists if max(x.qs) - min(x.qs) >= DELTA]
    random.Random(0).shuffle(lists)
    lists = lists[: ns.states]
    prm_scores = [prm.score(x.state, list(x.responses)).tolist() for x in lists]
    logps = [policy_logps(policy, x, response) for x in lists]
    print(f"{len(lists)} labelled states of {games} validation games")

    def report(name, scores):
        rng = random.Random(1)
        top = regret = right = wrong = 0
        for x, s, lp in zip(lists, scores, logps, strict=True):
            i = max(range(len(s)), key=s.__getitem__)
            top += x.qs[i] >= max(x.qs) - 1e-9
            regret += max(x.qs) - x.qs[i]
            for _ in range(20):
                pool, drawn = list(range(len(s))), []
                while len(drawn) < min(4, len(s)):
                    k = rng.choices(pool, [math.exp(lp[j]) for j in pool])[0]
                    drawn.append(k)
                    pool.remove(k)
                d = x.qs[max(drawn, key=s.__getitem__)] - x.qs[min(drawn, key=s.__getitem__)]
                right += d >= DELTA
                wrong += d <= -DELTA
        n = len(lists)
        print(
            f"{name:32s} top-1 {top / n:.3f}  regret {regret / n:.4f} | DPO pair: right "
            f"{right / (20 * n):.3f} wrong {wrong / (20 * n):.3f} tied {1 - (right + wrong) / (20 * n):.3f}"
        )

    report("policy log-likelihood", logps)
    report("PRM", prm_scores)
    for w in (0.5, 1.0, 2.0):
        combined = [
            [a + w * b for a, b in zip(z, lp, strict=True)] for z, lp in zip(prm_scores, logps, strict=True)
        ]
        report(f"PRM + {w} x log-likelihood", combined)

    rng, gaps = random.Random(1), []
    for x, z in zip(lists, prm_scores, strict=True):
        for _ in range(20):
            drawn = rng.sample(range(len(z)), min(4, len(z)))
            c, r = max(drawn, key=z.__getitem__), min(drawn, key=z.__getitem__)
            gaps.append((z[c] - z[r], x.qs[c] - x.qs[r]))
    gaps.sort()
    for share in (1.0, 0.75, 0.5, 0.25, 0.1):
        cut = gaps[int((1 - share) * len(gaps))][0]
        kept = [d for g, d in gaps if g > cut] if share < 1 else [d for _, d in gaps]
        print(
            f"PRM pairs with score gap > {cut:.3f} (top {share:.2f}): right "
            f"{sum(d >= DELTA for d in kept) / len(kept):.3f} "
            f"wrong {sum(d <= -DELTA for d in kept) / len(kept):.3f}"
        )
    verbs = collections.Counter(), collections.Counter()
    for x, z in zip(lists, prm_scores, strict=True):
        verbs[0][x.commands[max(range(len(z)), key=z.__getitem__)].split()[0]] += 1
        verbs[1][x.commands[max(range(len(z)), key=lambda i: x.qs[i])].split()[0]] += 1
    print("PRM's top verbs:", verbs[0].most_common(5), "| oracle's best:", verbs[1].most_common(5))


if __name__ == "__main__":
    main()
