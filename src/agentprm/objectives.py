"""PRM objectives: what a PRM is trained on and how — its rows, its typed batch and its loss.

An objective is chosen once, as ``model.init_args.objective`` of :class:`~agentprm.prm.PRMModule`
(``class_path`` + ``init_args``); :class:`~agentprm.data.PRMDataModule` asks the module's objective
for its rows, so no setting is repeated between model and data:

- :class:`AbsoluteObjective`: soft BCE of σ(Q) against a target in [0, 1] per (state, response):
  Monte-Carlo Q̂ (AgentPRM, paper Eq. 1), V̂(s) for a value model, Q shaped by a value model
  (paper §4.2) or the search expert's advantage (``reference``);
- :class:`RelativeObjective`: Bradley–Terry on preference pairs at the same state;
- :class:`ListwiseObjective`: one softmax over every command of a state labelled by the search
  expert, against its Q^μ (ListNet);
- :class:`InverseObjective`: InversePRM, expert transitions against learner ones on the implied
  reward Q(s, a) − γ·Q(s', a'), logistic or linear (paper Eq. 9).

A new objective is one subclass of :class:`PRMObjective` (CONTRIBUTING: "Adding a PRM loss"),
named by ``class_path`` in a config; the math stays in :mod:`agentprm.losses` and
:mod:`agentprm.targets`.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import torch

from agentprm import losses
from agentprm.data.batches import PRMBatch, PRMExample, PRMRow, RowContext, collate_prm
from agentprm.errors import check_range, check_sources
from agentprm.records import Trajectory

if TYPE_CHECKING:
    pass

__all__ = [
    "AbsoluteObjective",
    "InverseObjective",
    "ListBatch",
    "ListwiseObjective",
    "PRMObjective",
    "PRMRow",
    "PairBatch",
    "Predictions",
    "RelativeObjective",
    "RowContext",
    "ScoredBatch",
    "TransitionBatch",
    "from_config",
    "to_config",
]

Target = Literal["q", "value", "shaped", "reference"]
Discount = Literal["to_go", "from_start"]


@dataclass(frozen=True)
class Predictions:
    """Validation predictions in [0, 1] against targets, with each one's state key (calibration)."""

    probs: torch.Tensor
    targets: torch.Tensor
    keys: list[str]


class PRMObjective:
    """What :class:`~agentprm.prm.PRMModule` and :class:`~agentprm.data.PRMDataModule` ask of an
    objective; a new objective subclasses it and implements :meth:`rows`, :meth:`collate`,
    :meth:`loss` and :meth:`predictions`.

    Keep each constructor argument as a same-named attribute: the saved PRM records them
    (:func:`to_config`). A base class rather than a ``Protocol`` because jsonargparse accepts a
    Protocol's implementation only when every annotation matches it exactly, and a subclass is also
    found by its bare class name (``objective: RelativeObjective``).
    """

    pair_accuracy: bool = False
    """Whether ``val/pair_acc`` (same-state rows ordered as their targets) means something here."""

    def prepare(self, learners: Sequence[Trajectory], context: RowContext) -> list[Trajectory]:
        """Called once with every learner trajectory before the split by game; returns the extra
        trajectories (expert demonstrations) split alongside them and passed to :meth:`rows`."""
        return []

    def rows(
        self, learners: Sequence[Trajectory], experts: Sequence[Trajectory], context: RowContext
    ) -> list[PRMRow]:
        """The training rows of one side (train or val) of the split."""
        raise NotImplementedError

    def collate(self, examples: Sequence[PRMExample], pad_id: int) -> PRMBatch:
        """A batch of tokenised rows (:func:`agentprm.data.collate_prm` plus this objective's fields)."""
        raise NotImplementedError

    def loss(self, scores: torch.Tensor, batch: PRMBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The loss of the scores ``[N]`` of the batch's sequences, and metrics named without prefix
        (logged as ``train/<name>`` and ``val/<name>``)."""
        raise NotImplementedError

    def predictions(self, scores: torch.Tensor, batch: PRMBatch) -> Predictions:
        """Predicted probabilities against targets, for the reliability table and ``val/ece``."""
        raise NotImplementedError


@dataclass(kw_only=True)
class ScoredBatch(PRMBatch):
    """One sequence per row and its soft target ``[B]`` in [0, 1]."""

    target: torch.Tensor


@dataclass(kw_only=True)
class PairBatch(PRMBatch):
    """Two sequences per row, chosen then rejected (``input_ids`` rows 2k and 2k + 1)."""


@dataclass(kw_only=True)
class TransitionBatch(PRMBatch):
    """(s, a) then, unless terminal, (s', a') per row (``num_sequences`` 2 or 1); ``label`` ``[B]``
    is 1 for an expert transition, 0 for a learner's."""

    label: torch.Tensor


def _warn_without_wins(target: str, learners: Sequence[Trajectory], context: RowContext) -> None:
    """Warn, naming the rollouts, when outcome-based targets (all but the search expert's
    ``reference``) come from episodes none of which was won."""
    if target != "reference" and learners and not any(t.won for t in learners):
        from lightning.pytorch.utilities import rank_zero_warn

        rank_zero_warn(
            f"none of the {len(learners)} episodes in {', '.join(context.rollouts)} was won: every "
            "Monte-Carlo target is 0 and the PRM learns nothing about success"
        )


def _check_discounting(discount: str, gamma: float) -> None:
    if discount not in ("to_go", "from_start"):
        raise ValueError(f"objective discount must be 'to_go' or 'from_start', found {discount!r}")
    check_range("objective.gamma", gamma, 0, 1)


def _reference_labels(rollouts: Sequence[str]) -> list:
    """The reference labels written beside the rollouts (``<dir>/reference/*.jsonl``)."""
    from pathlib import Path

    from agentprm.records import read_jsonl
    from agentprm.reference import ReferenceLabels

    files = [f for d in map(Path, rollouts) for f in sorted((d / "reference").glob("*.jsonl"))]
    if not files:
        raise FileNotFoundError(
            f"objective target=reference: no reference labels in {list(rollouts)} "
            "(<rollouts>/reference/*.jsonl); roll out with --model.init_args.reference_turns=K"
        )
    return [label for f in files for label in read_jsonl(f, ReferenceLabels)]


def _mc_targets(objective, learners: Sequence[Trajectory], context: RowContext):
    """Q targets of Absolute and Relative objectives with ``target`` ``q`` or ``shaped``."""
    from agentprm import targets

    if objective.target == "shaped":
        if context.values is None:
            raise ValueError(
                "objective target=shaped needs V(s): the data module is handed it by its PRM "
                "(objective.value_model, a PRM trained with target=value)"
            )
        return targets.shaped_q_targets(
            learners, context.values, objective.gamma, objective.shaping_c, mode=objective.discount
        )
    return targets.mc_q_targets(learners, objective.gamma, objective.discount)


def _reference(learners: Sequence[Trajectory], context: RowContext, c: float, delta: float = 0.015):
    """The search expert's Q targets and pairs (:func:`agentprm.targets.reference_targets`)."""
    from agentprm import targets

    return targets.reference_targets(
        learners,
        _reference_labels(context.rollouts),
        lambda command: context.renderer.response("", command),
        c=c,
        delta=delta,
    )


class AbsoluteObjective(PRMObjective):
    """Soft BCE of σ(Q(s, a)) against a target in [0, 1], one row per (state, response).

    Args:
        target: ``q`` (Monte-Carlo Q̂(s, a), paper Eq. 1), ``value`` (Monte-Carlo V̂(s), the response
            left empty: trains the value model that ``shaped`` reads), ``shaped`` (reference-policy
            shaping, :func:`agentprm.targets.shaped_q_targets`: the outcome plus γ·V(s') − V(s) with
            V the logit of ``value_model``, squashed to (0, 1) with slope ``shaping_c`` / IQR) or
            ``reference`` (the search expert's advantage A^μ(s, a) = Q^μ(s, a) − V^μ(s) of the
            taken and the labelled commands, read from the labels the rollout wrote with
            ``reference_turns``, squashed like ``shaped``).
        gamma: Discount of the Monte-Carlo targets (paper: 0.95).
        discount: ``to_go`` (the paper's γ^(T−1−t)·r) or ``from_start`` (the reference code's).
        value_model: ``target: shaped`` only: a PRM directory trained with ``target: value``.
        shaping_c: ``shaped`` and ``reference``: the squashing constant c (paper code: 3.0).
    """

    pair_accuracy = True

    def __init__(
        self,
        target: Target = "q",
        gamma: float = 0.95,
        discount: Discount = "to_go",
        value_model: str | None = None,
        shaping_c: float = 3.0,
    ) -> None:
        if target not in ("q", "value", "shaped", "reference"):
            raise ValueError(
                f"objective target must be 'q', 'value', 'shaped' or 'reference', found {target!r}"
            )
        _check_discounting(discount, gamma)
        if target == "shaped" and not value_model:
            raise ValueError("objective target=shaped needs value_model (a PRM trained with target=value)")
        self.target, self.gamma, self.discount = target, gamma, discount
        self.value_model, self.shaping_c = value_model, shaping_c

    def prepare(self, learners: Sequence[Trajectory], context: RowContext) -> list[Trajectory]:
        _warn_without_wins(self.target, learners, context)
        return []

    def rows(self, learners, experts, context: RowContext) -> list[PRMRow]:
        from agentprm import targets

        if self.target == "value":
            values = targets.state_values(learners, self.gamma, self.discount)
            return [PRMRow(((v.state, ""),), v.v, v.game_ids[0], v.state.key()) for v in values]
        if self.target == "reference":
            q = _reference(learners, context, self.shaping_c)[0]
        else:
            q = _mc_targets(self, learners, context)
        return [PRMRow(((t.state, r),), t.q, t.game_ids[0], t.state.key()) for t in q for r in t.responses]

    def collate(self, examples: Sequence[PRMExample], pad_id: int) -> ScoredBatch:
        target = torch.tensor([e.target for e in examples], dtype=torch.float32)
        return collate_prm(examples, pad_id, kind=ScoredBatch, target=target)

    def loss(self, scores: torch.Tensor, batch: ScoredBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        target = batch.target.float()
        loss = losses.soft_bce(scores, target)
        return loss, {"loss": loss, "acc": ((scores > 0) == (target > 0.5)).float().mean()}

    def predictions(self, scores: torch.Tensor, batch: ScoredBatch) -> Predictions:
        return Predictions(torch.sigmoid(scores), batch.target.float(), list(batch.state_key))


class RelativeObjective(PRMObjective):
    """Bradley–Terry −log σ(Q(s, a⁺) − Q(s, a⁻)) on preference pairs at the same state.

    Args:
        delta: Preference margin, in units of Q̂ ∈ [0, 1] (paper: 0.015 of the outcome scale).
        target: ``q`` (pairs of Monte-Carlo Q̂ at the same state differing by ≥ ``delta``) or
            ``reference`` (every pair of commands labelled by the search expert whose Q^μ differ by
            ≥ ``delta``).
        gamma: Discount of the Monte-Carlo targets.
        discount: ``to_go`` or ``from_start`` (see :class:`AbsoluteObjective`).
        shaping_c: ``reference`` only: the squashing constant c of the expert's targets.
    """

    pair_accuracy = False

    def __init__(
        self,
        delta: float = 0.015,
        target: Literal["q", "reference"] = "q",
        gamma: float = 0.95,
        discount: Discount = "to_go",
        shaping_c: float = 3.0,
    ) -> None:
        if target not in ("q", "reference"):
            raise ValueError(f"objective target must be 'q' or 'reference', found {target!r}")
        _check_discounting(discount, gamma)
        check_range("objective.delta", delta, 0)
        self.delta, self.target, self.gamma, self.discount = delta, target, gamma, discount
        self.shaping_c = shaping_c

    def prepare(self, learners: Sequence[Trajectory], context: RowContext) -> list[Trajectory]:
        _warn_without_wins(self.target, learners, context)
        return []

    def rows(self, learners, experts, context: RowContext) -> list[PRMRow]:
        from agentprm import targets

        if self.target == "reference":
            pairs = _reference(learners, context, self.shaping_c, self.delta)[1]
        else:
            pairs = targets.preference_pairs(_mc_targets(self, learners, context), self.delta)
        return [
            PRMRow(((p.state, p.chosen), (p.state, p.rejected)), 1.0, p.game_ids[0], p.state.key())
            for p in pairs
        ]

    def collate(self, examples: Sequence[PRMExample], pad_id: int) -> PairBatch:
        return collate_prm(examples, pad_id, kind=PairBatch)

    def loss(self, scores: torch.Tensor, batch: PairBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        chosen, rejected = scores[0::2], scores[1::2]
        loss = losses.bradley_terry(chosen, rejected)
        return loss, {"loss": loss, "pair_acc": (chosen > rejected).float().mean()}

    def predictions(self, scores: torch.Tensor, batch: PairBatch) -> Predictions:
        chosen, rejected = scores[0::2], scores[1::2]
        probs = torch.sigmoid(torch.stack([chosen, rejected], 1)).flatten()
        labels = torch.tensor([1.0, 0.0], device=scores.device).repeat(len(chosen))
        return Predictions(probs, labels, [k for k in batch.state_key for _ in range(2)])


@dataclass(kw_only=True)
class ListBatch(PRMBatch):
    """Every command of a state per row: ``target`` ``[N]`` each sequence's Q^μ, ``group`` ``[N]``
    its row's index in the batch."""

    target: torch.Tensor
    group: torch.Tensor


class ListwiseObjective(PRMObjective):
    """ListNet over each labelled state's commands: the cross-entropy from softmax(Q^μ/τ) to the
    softmax of the PRM's scores of every admissible command of the state.

    One row is one state the search expert labelled (``reference_turns`` of the rollout) with all
    its commands, so the state is encoded once per row (shared prefix) and the loss sees the whole
    ranking at once, where :class:`RelativeObjective` with ``target: reference`` sees it as ~k²/2
    separate pairs, each re-encoding the state. The scores are shift-invariant per state: they rank
    commands (Best-of-N, online DPO's pairs) and do not value states.

    Args:
        temperature: τ of the target distribution on Q^μ's [0, 1] scale: the default 0.05 puts
            e^(0.05/τ) = e× more mass on a command 0.05 better (one or two turns sooner to the goal
            at γ = 0.95).
        delta: Margin of the ``pair_acc`` metric: pairs whose Q^μ differ by ≥ δ.
        max_commands: Keep at most this many commands of a state (its best and worst by Q^μ
            alternately, then the rest dropped); 0 keeps all.
    """

    pair_accuracy = False  # logged from the loss: every ordered pair of a row

    def __init__(self, temperature: float = 0.05, delta: float = 0.015, max_commands: int = 0) -> None:
        if not temperature > 0:
            raise ValueError(f"objective.temperature must be > 0, found {temperature!r}")
        check_range("objective.delta", delta, 0)
        check_range("objective.max_commands", max_commands, 0)
        self.temperature, self.delta, self.max_commands = temperature, delta, max_commands

    def rows(self, learners, experts, context: RowContext) -> list[PRMRow]:
        from agentprm import targets

        lists = targets.reference_lists(
            learners,
            _reference_labels(context.rollouts),
            lambda command: context.renderer.response("", command),
        )
        rows = []
        for item in lists:
            keep = _extremes(item.qs, self.max_commands)
            if len(keep) < 2 or max(item.qs) - min(item.qs) < self.delta:
                continue  # nothing to rank at this state
            rows.append(
                PRMRow(
                    tuple((item.state, item.responses[i]) for i in keep),
                    max(item.qs),
                    item.game_ids[0],
                    item.state.key(),
                    tuple(item.qs[i] for i in keep),
                )
            )
        return rows

    def collate(self, examples: Sequence[PRMExample], pad_id: int) -> ListBatch:
        target = torch.tensor([q for e in examples for q in e.targets], dtype=torch.float32)
        group = torch.tensor([g for g, e in enumerate(examples) for _ in e.targets])
        return collate_prm(examples, pad_id, kind=ListBatch, target=target, group=group)

    def loss(self, scores: torch.Tensor, batch: ListBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        target, group = batch.target.to(scores.device), batch.group.to(scores.device)
        loss = losses.listwise(scores, target, group, self.temperature)
        top1, pairs, right = [], 0, 0.0
        for g in range(int(group.max()) + 1):
            z, y = scores[group == g], target[group == g]
            top1.append(float(y[z.argmax()] >= y.max() - 1e-9))
            better = (y[:, None] - y[None, :]) >= self.delta - 1e-12
            pairs += int(better.sum())
            right += float(((z[:, None] > z[None, :]) & better).sum())
        metrics = {"loss": loss, "top1": torch.tensor(sum(top1) / len(top1))}
        if pairs:
            metrics["pair_acc"] = torch.tensor(right / pairs)
        return loss, metrics

    def predictions(self, scores: torch.Tensor, batch: ListBatch) -> Predictions:
        """Each command's softmax share of its state against its share of softmax(Q^μ/τ)."""
        target, group = batch.target.to(scores.device), batch.group.to(scores.device)
        probs = losses.group_log_softmax(scores, group).exp()
        shares = losses.group_log_softmax(target / self.temperature, group).exp()
        return Predictions(probs, shares, [batch.state_key[g] for g in group.tolist()])


def _extremes(qs: Sequence[float], limit: int) -> list[int]:
    """Indices of ``qs`` to keep, in their order: all, or ``limit`` of them taking the best and
    the worst alternately (ties by position)."""
    if not limit or len(qs) <= limit:
        return list(range(len(qs)))
    order = sorted(range(len(qs)), key=lambda i: (-qs[i], i))
    picked, lo, hi = [], 0, len(order) - 1
    while len(picked) < limit:
        picked.append(order[lo])
        lo += 1
        if len(picked) < limit:
            picked.append(order[hi])
            hi -= 1
    return sorted(picked)


class InverseObjective(PRMObjective):
    """InversePRM: expert transitions (label 1) against learner ones (label 0) on the implied reward
    r̂ = Q(s, a) − γ·Q(s', a') (Q(s, a) at a terminal step); no outcome reward.

    Expert demonstrations are the positives, the learner rollouts the negatives; at each expert next
    state s' the next action a' is sampled from ``next_policy`` (π_{i−1}; the PRM loads it and
    hands the data module the sampler, :func:`agentprm.prm.next_actions`), learners keep their
    logged a'.

    Args:
        expert: The positives: JSONL files/directories of won Trajectory records, or
            ``builtin:<set>`` for the built-in search expert on that set's train split.
        next_policy: The policy directory a' ~ π(·|s') is sampled from.
        gamma: Discount γ of the implied reward (paper: 0.95).
        form: ``logistic`` (BCE of the implied reward against the expert label; bounded, the
            default) or ``linear`` (the paper's Eq. 9; unbounded, needs weight decay or early
            stopping).
        next_mode: How a' is sampled: ``admissible`` or ``generate``.
        next_temperature: Sampling temperature of a'.
        balance: Subsample whole trajectories so both sides keep as many.
    """

    pair_accuracy = False

    def __init__(
        self,
        expert: list[str] | None = None,
        next_policy: str | None = None,
        gamma: float = 0.95,
        form: Literal["logistic", "linear"] = "logistic",
        next_mode: Literal["admissible", "generate"] = "admissible",
        next_temperature: float = 1.0,
        balance: bool = True,
    ) -> None:
        if form not in ("logistic", "linear"):
            raise ValueError(f"objective form must be 'logistic' or 'linear', found {form!r}")
        check_range("objective.gamma", gamma, 0, 1)
        self.expert, self.next_policy, self.gamma, self.form = expert, next_policy, gamma, form
        self.next_mode, self.next_temperature, self.balance = next_mode, next_temperature, balance

    def prepare(self, learners: Sequence[Trajectory], context: RowContext) -> list[Trajectory]:
        if not self.expert or getattr(context, "next_actions", None) is None:
            raise ValueError(
                "InverseObjective needs expert (demonstrations, e.g. [builtin:small]) and next_policy "
                "(the policy a' is sampled from, e.g. runs/quickstart/sft/policy; its PRM hands the "
                "data module that sampler as next_actions)"
            )
        check_sources("objective.expert", self.expert)
        from agentprm.data.common import read_trajectories
        from agentprm.rollout import expert_demonstrations

        found: list[Trajectory] = []
        for source in self.expert:
            if source.startswith("builtin:"):
                found += expert_demonstrations(source, "train")
            else:
                found += read_trajectories([source])
        return found

    def rows(self, learners, experts, context: RowContext) -> list[PRMRow]:
        from agentprm import targets

        sample, seed = context.next_actions, context.seed  # checked in prepare
        transitions = targets.inverse_transitions(
            experts, learners, lambda states: sample(states, seed), balance=self.balance, seed=seed
        )
        return [
            PRMRow(
                ((t.state, t.response),)
                if t.terminal
                else ((t.state, t.response), (t.next_state, t.next_response)),
                t.label,
                t.game_id,
                t.state.key(),
            )
            for t in transitions
        ]

    def collate(self, examples: Sequence[PRMExample], pad_id: int) -> TransitionBatch:
        label = torch.tensor([e.target for e in examples], dtype=torch.float32)
        return collate_prm(examples, pad_id, kind=TransitionBatch, label=label)

    def implied_reward(self, scores: torch.Tensor, batch: TransitionBatch):
        """Q(s, a) ``[B]``, Q(s', a') ``[B]`` (0 at terminals), the terminal mask and r̂ ``[B]``."""
        counts = batch.num_sequences.to(scores.device)
        first = torch.cumsum(counts, 0) - counts
        terminal = counts == 1
        q_sa = scores[first]
        q_next = torch.where(terminal, torch.zeros_like(q_sa), scores[(first + 1).clamp_max(len(scores) - 1)])
        return q_sa, q_next, terminal, losses.implied_reward(q_sa, q_next, terminal, self.gamma)

    def loss(
        self, scores: torch.Tensor, batch: TransitionBatch
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        q_sa, q_next, terminal, r_hat = self.implied_reward(scores, batch)
        labels = batch.label.float()
        fn = losses.inverse_prm_logistic if self.form == "logistic" else losses.inverse_prm_linear
        loss = fn(q_sa, q_next, labels, terminal, self.gamma)
        expert = labels > 0.5
        metrics = {"loss": loss, "acc": ((r_hat > 0) == expert).float().mean()}
        if expert.any() and (~expert).any():
            metrics["reward_gap"] = r_hat[expert].mean() - r_hat[~expert].mean()
        return loss, metrics

    def predictions(self, scores: torch.Tensor, batch: TransitionBatch) -> Predictions:
        r_hat = self.implied_reward(scores, batch)[3]
        return Predictions(torch.sigmoid(r_hat), batch.label.float(), list(batch.state_key))


_LEGACY = {"absolute": AbsoluteObjective, "relative": RelativeObjective, "inverse": InverseObjective}
"""The ``loss`` strings of PRMs saved before objectives were classes."""


def to_config(objective: PRMObjective) -> dict:
    """``{"class_path": …, "init_args": …}`` of an objective: its constructor's arguments, read from
    the same-named attributes (what a saved PRM records)."""
    cls = type(objective)
    names = [p for p in inspect.signature(cls).parameters if hasattr(objective, p)]
    return {
        "class_path": f"{cls.__module__}.{cls.__qualname__}",
        "init_args": {n: getattr(objective, n) for n in names},
    }


def from_config(spec: PRMObjective | dict | str | None, **legacy) -> PRMObjective:
    """An objective from an instance, a ``class_path``/``init_args`` dict, or None (the default
    :class:`AbsoluteObjective`). A string is the ``loss`` of a PRM saved before objectives were
    classes (``absolute``, ``relative``, ``inverse``; ``legacy`` holds its ``gamma`` and
    ``inverse_objective``)."""
    if spec is None:
        return AbsoluteObjective()
    if isinstance(spec, str):
        if spec not in _LEGACY:
            raise ValueError(f"objective {spec!r} is not one of {', '.join(_LEGACY)} (or a class_path)")
        if spec != "inverse":
            return _LEGACY[spec]()
        return InverseObjective(
            gamma=legacy.get("gamma", 0.95), form=legacy.get("inverse_objective", "logistic")
        )
    if isinstance(spec, dict):
        path = spec.get("class_path", "")
        module, _, name = path.rpartition(".")
        try:
            cls = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError, ValueError) as err:
            raise ValueError(f"objective class_path {path!r} does not name a class ({err})") from None
        return cls(**spec.get("init_args", {}))
    if not isinstance(spec, PRMObjective):
        raise ValueError(f"objective {type(spec).__name__} is not an agentprm.objectives.PRMObjective")
    return spec
