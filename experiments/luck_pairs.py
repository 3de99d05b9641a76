"""How much of the search expert's Q^mu ranking can a learner know from its state?

At the labelled states of the validation games (the PRM data module's split) of labelled rollouts,
every two admissible commands whose Q^mu differ by >= 0.015 are a pair. A pair is *hidden-layout*
when both commands are ``go to`` receptacles the history has not visited: which of them holds the
object (and so which Q^mu is higher) is drawn uniformly by the game generator among receptacles the
object fits, so nothing in the state tells them apart. *Same type* (drawer 1 / drawer 2): exactly
exchangeable given the state. Reported: the share of each kind among the pairs, and the pair
accuracy of the PRM and of the policy's likelihood on each kind.

    .venv/bin/python experiments/luck_pairs.py PRM_DIR POLICY_DIR ROLLOUTS
"""

from __future__ import annotations

import argparse
import re

from pair_quality import load_labelled, policy_logps

DELTA = 0.015


def unvisited_type(command: str, visited: set[str]) -> str | None:
    """The receptacle type of a ``go to`` an unvisited receptacle, else None."""
    if not command.startswith("go to "):
        return None
    where = command[len("go to ") :]
    return None if where in visited else re.sub(r"\s*\d+$", "", where)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("prm")
    parser.add_argument("policy")
    parser.add_argument("rollouts")
    parser.add_argument("--history-window", type=int, default=1, help="the policy's prompt")
    ns = parser.parse_args()

    prm, response, lists, games, policy = load_labelled(ns.prm, ns.policy, ns.rollouts, ns.history_window)
    kinds = ("same type", "other types", "decidable")
    counts = {k: [0, 0, 0] for k in kinds}  # pairs, PRM right, policy right
    best_hidden = 0
    for x in lists:
        z = prm.score(x.state, list(x.responses)).tolist()
        logp = policy_logps(policy, x, response)
        visited = {t.command[len("go to ") :] for t in x.state.history if t.command.startswith("go to ")}
        types = [unvisited_type(c, visited) for c in x.commands]
        best = max(range(len(x.qs)), key=x.qs.__getitem__)
        best_hidden += types[best] is not None
        for i in range(len(x.qs)):
            for j in range(len(x.qs)):
                if x.qs[i] - x.qs[j] < DELTA:
                    continue
                if types[i] is not None and types[j] is not None:
                    kind = kinds[0] if types[i] == types[j] else kinds[1]
                else:
                    kind = kinds[2]
                c = counts[kind]
                c[0] += 1
                c[1] += z[i] > z[j]
                c[2] += logp[i] > logp[j]
    total = sum(c[0] for c in counts.values())
    print(f"{len(lists)} labelled states of {games} validation games, {total} pairs")
    print(f"the oracle's best command is a go to an unvisited receptacle at {best_hidden / len(lists):.3f}")
    for k, (n, prm_right, pol_right) in counts.items():
        print(
            f"{k:12s} {n / total:.3f} of pairs | PRM right {prm_right / max(n, 1):.3f} | "
            f"policy likelihood right {pol_right / max(n, 1):.3f}"
        )


if __name__ == "__main__":
    main()
