"""Evaluation: success rate (overall and per task type, Wilson 95% intervals), mean actions, Best-of-N.

``agentprm test --config configs/eval/quickstart.yaml`` plays one episode per game of a fixed game
list with the policy alone, or with Best-of-N(π, Q): at every turn the policy proposes N responses
and the PRM's top-scored one is played (its N scores computed with the state once). Per-game
results go to ``results.jsonl`` (one line per episode), the aggregate to ``summary.json``, and the
trajectories to the same resumable shards as rollouts.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Sequence
from typing import Literal

import torch

from agentprm.records import State, Trajectory, atomic_write_json, atomic_write_text
from agentprm.rollout import Chooser, RolloutModule, read_shards
from agentprm.sampling import Sample, Sampler, require_candidate_scores

__all__ = ["EvaluationModule", "action_ranking", "oracle_agreement", "summarize", "wilson_interval"]


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (95% for z = 1.96); (0, 1) when n = 0."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    center = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, center - half), min(1.0, center + half)


def summarize(rows: list[dict]) -> dict:
    """Success rate with its Wilson interval, overall and per task type, and mean actions."""

    def block(items: list[dict]) -> dict:
        won = sum(r["won"] for r in items)
        lo, hi = wilson_interval(won, len(items))
        return {
            "episodes": len(items),
            "won": won,
            "success_rate": won / len(items) if items else 0.0,
            "wilson95": [lo, hi],
            "mean_actions": sum(r["num_actions"] for r in items) / len(items) if items else 0.0,
        }

    by_type: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_type[r["task_type"]].append(r)
    return {
        **block(rows),
        "failures": sum(r["failure"] is not None for r in rows),
        "per_task_type": {k: block(v) for k, v in sorted(by_type.items())},
        "games": sorted({r["game_id"] for r in rows}),
    }


def action_ranking(
    prm,
    demonstrations: Sequence[Trajectory],
    policy=None,
    max_states: int | None = None,
) -> dict:
    """How a PRM (and optionally a policy) rank a demonstrator's action among the admissible ones.

    At every state of ``demonstrations`` (e.g. the search expert's won games of a held-out split)
    the PRM scores all admissible commands. A PRM that can steer a policy must rank actions, not
    only value states: ``prm_top1`` is how often the demonstrator's command scores highest,
    ``prm_mean_rank`` how many commands score above it (0 is best; chance is about half the
    candidates). With ``policy`` (an admissible-mode :class:`~agentprm.sampling.HFSampler`), the
    same for the policy's log-likelihoods, and ``prm_over_policy``: at the states where the
    policy's top command is not the demonstrator's, how often the PRM scores the demonstrator's
    command higher (0.5 is chance) — the states where the PRM could improve the policy.

    Returns a dict of these numbers over all states and per verb of the demonstrator's command
    (``go``, ``take``, …).
    """
    states, commands = [], []
    for traj in demonstrations:
        for state, step in zip(traj.states(), traj.steps, strict=True):
            if step.command in state.admissible_commands:
                states.append(state)
                commands.append(step.command)
    if max_states is not None:
        states, commands = states[:max_states], commands[:max_states]
    if not states:
        raise ValueError("no demonstration state has its command among the admissible commands")
    responses = [[prm.renderer.response("", c) for c in s.admissible_commands] for s in states]
    prm_scores = prm.score_batch(states, responses)
    policy_scores = [lp for _, _, lp in policy.candidate_logprobs(states)] if policy is not None else None
    groups: dict[str, list[dict]] = defaultdict(list)
    for k, (state, command, q) in enumerate(zip(states, commands, prm_scores, strict=True)):
        i = state.admissible_commands.index(command)
        row = {"prm_top1": float(int(q.argmax()) == i), "prm_rank": float((q > q[i]).sum())}
        if policy_scores is not None:
            lp = policy_scores[k]
            pick = int(lp.argmax())
            row["policy_top1"] = float(pick == i)
            row["policy_rank"] = float((lp > lp[i]).sum())
            if pick != i:
                row["prm_over_policy"] = float(q[i] > q[pick])
        groups["all"].append(row)
        groups[command.split()[0]].append(row)

    def block(rows: list[dict]) -> dict:
        out: dict = {"states": len(rows)}
        for key, name in (
            ("prm_top1", "prm_top1"),
            ("prm_rank", "prm_mean_rank"),
            ("policy_top1", "policy_top1"),
            ("policy_rank", "policy_mean_rank"),
            ("prm_over_policy", "prm_over_policy"),
        ):
            values = [r[key] for r in rows if key in r]
            if values:
                out[name] = sum(values) / len(values)
                if key == "prm_over_policy":
                    out["policy_wrong_states"] = len(values)
        return out

    result = block(groups.pop("all"))
    result["candidates_mean"] = sum(len(s.admissible_commands) for s in states) / len(states)
    result["per_verb"] = {verb: block(rows) for verb, rows in sorted(groups.items())}
    return result


def oracle_agreement(prm, states: Sequence[State], values, policy=None, delta: float = 0.015) -> dict:
    """How a PRM (and a policy) rank commands against the search expert's Q^μ at given states.

    The yardstick for improving a policy π is agreement with an oracle at π's *own* states (e.g.
    π0's episodes on held-out games), not at the expert's: there π loops, holds the wrong object,
    revisits. At each state every admissible command is scored by the PRM and by Q^μ
    (:class:`~agentprm.reference.ExpertValues`). Reported over the states:

    - ``prm_top1``: the PRM's top command has the highest Q^μ (ties count);
    - ``prm_pair_acc``: of the command pairs whose Q^μ differ by ≥ ``delta``, the share the PRM orders right;
    - ``prm_q_ratio``: Q^μ of the PRM's top command over the best Q^μ (1: always a best command);
    - with ``policy`` (an admissible-mode sampler): ``policy_top1``, ``policy_q_ratio`` (of its
      greedy command), ``policy_expected_q_ratio`` (E_π[Q^μ] / max Q^μ at temperature 1) and
      ``prm_beats_policy``: at the states where the policy's greedy command is not a best one,
      how often the PRM's top command has a higher Q^μ than the policy's (what Best-of-N and DPO
      can gain).

    States whose best Q^μ is 0 (the expert cannot win from them) are skipped and counted.
    """
    rows, skipped = [], 0
    qs = [torch.tensor(values.q_values(s, s.admissible_commands), dtype=torch.float64) for s in states]
    keep = [i for i, q in enumerate(qs) if float(q.max()) > 0]
    skipped = len(states) - len(keep)
    states, qs = [states[i] for i in keep], [qs[i] for i in keep]
    if not states:
        raise ValueError("no state from which the expert can win: nothing to rank")
    responses = [[prm.renderer.response("", c) for c in s.admissible_commands] for s in states]
    prm_scores = prm.score_batch(states, responses)
    policy_scores = [lp for _, _, lp in policy.candidate_logprobs(states)] if policy is not None else None
    for k, (q, score) in enumerate(zip(qs, prm_scores, strict=True)):
        best = float(q.max())
        top = int(score.argmax())
        right = total = 0.0
        for i in range(len(q)):
            for j in range(len(q)):
                if float(q[i] - q[j]) >= delta - 1e-12:
                    total += 1
                    right += 1.0 if score[i] > score[j] else 0.5 if score[i] == score[j] else 0.0
        row = {"prm_top1": float(float(q[top]) >= best - 1e-12), "prm_q_ratio": float(q[top]) / best}
        if total:
            row["prm_pair_acc"] = right / total
        if policy_scores is not None:
            lp = policy_scores[k].double()
            pick = int(lp.argmax())
            row["policy_top1"] = float(float(q[pick]) >= best - 1e-12)
            row["policy_q_ratio"] = float(q[pick]) / best
            row["policy_expected_q_ratio"] = float((torch.softmax(lp, 0) * q).sum()) / best
            if float(q[pick]) < best - 1e-12:
                row["prm_beats_policy"] = float(float(q[top]) > float(q[pick]))
        rows.append(row)
    out: dict = {"states": len(rows), "skipped_unwinnable": skipped}
    for key in (
        "prm_top1",
        "prm_pair_acc",
        "prm_q_ratio",
        "policy_top1",
        "policy_q_ratio",
        "policy_expected_q_ratio",
        "prm_beats_policy",
    ):
        found = [r[key] for r in rows if key in r]
        if found:
            out[key] = sum(found) / len(found)
    if policy_scores is not None:
        out["policy_wrong_states"] = sum("prm_beats_policy" in r for r in rows)
    return out


def _every_command(sampler: Sampler, states: list[State]):
    """Per state: (responses, commands, token ids, log-likelihoods) of every admissible command."""
    scored = require_candidate_scores(sampler, "model.candidates=all").candidate_logprobs(states)
    return [
        (responses, list(state.admissible_commands), suffixes, scores)
        for state, (responses, suffixes, scores) in zip(states, scored, strict=True)
    ]


class EvaluationModule(RolloutModule):
    """The policy alone, or Best-of-N with a PRM, on a fixed list of games (``agentprm test``).

    Args:
        prm: The scorer of Best-of-N: a trained PRM's directory (written by ``agentprm fit -c
            configs/prm/…``) or ``oracle[?noise=…]``, the search expert's Q (see
            :func:`agentprm.scorers.load_scorer`); None plays the policy alone.
        best_of_n: N responses proposed per turn when ``prm`` is set (the paper uses 16).
        candidates: How the N are proposed: ``sample`` (N samples of the policy, repeats allowed:
            the paper's), ``distinct`` (N different commands drawn without replacement from the
            policy, ``admissible`` mode) or ``all`` (every admissible command, N ignored).
        **kwargs: The policy and sampling arguments of :class:`~agentprm.rollout.RolloutModule`.
    """

    def __init__(
        self,
        prm: str | None = None,
        best_of_n: int = 8,
        candidates: Literal["sample", "distinct", "all"] = "sample",
        **kwargs,
    ) -> None:
        if candidates not in ("sample", "distinct", "all"):
            raise ValueError(f"model.candidates must be 'sample', 'distinct' or 'all', found {candidates!r}")
        sampler = kwargs.get("sampler")
        mode = sampler.mode if sampler is not None else kwargs.get("mode", "admissible")
        if candidates != "sample" and mode != "admissible":
            raise ValueError(f"model.candidates={candidates} needs model.mode=admissible")
        if kwargs.get("branches"):
            raise ValueError(
                "model.branches is for training rollouts; an evaluation plays each game from its start"
            )
        if best_of_n < 1:
            raise ValueError(f"best_of_n must be >= 1, found {best_of_n}")
        scorer = None
        if prm is not None:  # the PRM first: a wrong path fails before the policy is loaded
            from agentprm.scorers import load_scorer

            scorer = load_scorer(prm)
        super().__init__(**kwargs)
        self.prm_path, self.best_of_n, self.candidates = prm, best_of_n, candidates
        self.prm = scorer

    def chooser(
        self, batch_index: int, sampler: Sampler | None = None, episodes: Sequence[str] | None = None
    ) -> Chooser:
        if self.prm is None:
            return super().chooser(batch_index, sampler, episodes)
        sampler, prm, n = sampler or self.sampler(batch_index), self.prm, self.best_of_n

        def choose(states: list[State], slots: list[int]) -> list[Sample]:
            if self.candidates == "all":
                drawn = [
                    [Sample(r, c, "", tuple(ids), float(lp)) for r, c, ids, lp in zip(*cand, strict=True)]
                    for cand in _every_command(sampler, states)
                ]
            else:
                keys = self.draw_keys(states, slots, episodes)
                drawn = sampler.sample(states, n, distinct=self.candidates == "distinct", keys=keys)
            scores = prm.score_batch(states, [[c.text for c in candidates] for candidates in drawn])
            return [c[int(v.argmax())] for c, v in zip(drawn, scores, strict=True)]

        return choose

    def run_settings(self) -> dict:
        from agentprm.provenance import model_identity

        settings = super().run_settings()
        settings["prm"] = model_identity(self.prm_path)
        settings["best_of_n"] = self.best_of_n if self.prm is not None else 1
        settings["candidates"] = self.candidates if self.prm is not None else None
        return settings

    def test_step(self, batch, batch_idx: int = 0) -> dict:
        return self.predict_step(batch, batch_idx)

    def on_test_start(self) -> None:
        if self.prm is not None and self.candidates == "all":  # before anything is played
            require_candidate_scores(self.sampler(0), "model.candidates=all")
        self.on_predict_start()

    def on_test_end(self) -> None:
        self.trainer.strategy.barrier()
        if self.global_rank != 0:
            return
        trajectories = read_shards(self.output_dir)
        rows = [
            {
                "game_id": t.game_id,
                "task_type": t.task_type,
                "rollout_index": t.rollout_index,
                "won": t.won,
                "num_actions": t.num_actions,
                "failure": t.failure,
            }
            for t in sorted(trajectories, key=lambda t: (t.game_id, t.rollout_index))
        ]
        atomic_write_text(self.output_dir / "results.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
        summary = summarize(rows)
        h = self.hparams
        summary["setting"] = {
            "policy": h.policy_id or h.model,
            "prm": self.prm_path,
            "best_of_n": self.best_of_n if self.prm is not None else 1,
            "candidates": self.candidates if self.prm is not None else None,
            "sampler": repr(self.sampler_factory),
            "mode": self.sampler_factory.mode,
            "greedy": h.greedy,
            "temperature": getattr(self.sampler_factory, "temperature", None),
            "seed": h.seed,
        }
        atomic_write_json(self.output_dir / "summary.json", summary)
