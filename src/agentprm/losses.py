"""Loss functions of the PRM and policy stages: pure functions of tensors (no modules, no I/O).

- :func:`soft_bce`: AgentPRM absolute loss, BCE of the PRM logit against a soft target Q̂ ∈ [0, 1] (Eq. 2/4).
- :func:`bradley_terry`: AgentPRM relative loss on preference pairs (s, a⁺, a⁻).
- :func:`inverse_prm_logistic`: InversePRM, BCE of the implied reward Q(s,a) − γQ(s',a') (Eq. 8) against an
  expert/learner label; the default InversePRM loss.
- :func:`inverse_prm_linear`: InversePRM, the linear objective of Eq. 9 as a loss to minimise.
- :func:`dpo`: the DPO loss of the policy stage (Eq. 10 solved with online DPO), with diagnostics.
- :func:`sequence_logps`: summed (or averaged) log-probabilities of the labelled tokens of each sequence.
- :func:`kl_estimate`: the k3 estimator of KL(π ‖ π_ref) from sampled tokens, for monitoring.

Conventions shared by every function here:

- Inputs of one call must have the same shape; a mismatch raises ``ValueError`` instead of broadcasting
  (a PRM head's ``[B, 1]`` against targets ``[B]`` would otherwise silently give a ``[B, B]`` loss).
- Arithmetic is done in float32 whatever the input dtype (bf16 logits are upcast), and losses are scalar
  float32 tensors. Gradients flow through every tensor argument that requires them.
- PRM scores are raw logits: σ(logit) estimates Q̂ ∈ [0, 1].
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "DPOOutput",
    "bradley_terry",
    "dpo",
    "implied_reward",
    "inverse_prm_linear",
    "inverse_prm_logistic",
    "kl_estimate",
    "sequence_logps",
    "soft_bce",
]


def _same_shape(**tensors: Tensor) -> None:
    """Raise ``ValueError`` naming the arguments unless every tensor has the same shape."""
    shapes = {name: tuple(t.shape) for name, t in tensors.items()}
    if len(set(shapes.values())) > 1:
        raise ValueError(f"arguments must have the same shape, got {shapes}")


def soft_bce(logits: Tensor, targets: Tensor, weights: Tensor | None = None) -> Tensor:
    """AgentPRM absolute loss: binary cross-entropy of the PRM logit against a soft target (Eq. 2/4).

    ``ℓ = −[Q̂ log σ(z) + (1 − Q̂) log(1 − σ(z))]``, computed stably from the logit
    (``binary_cross_entropy_with_logits``), so logits of any magnitude give finite values.

    Args:
        logits: ``[B]`` PRM logits z.
        targets: ``[B]`` Monte-Carlo targets Q̂ in [0, 1].
        weights: Optional ``[B]`` non-negative per-example weights (e.g. visit counts); the loss is the
            weighted mean ``Σ wᵢℓᵢ / Σ wᵢ``, so their sum must be positive. ``None`` gives the plain mean.

    Returns:
        Scalar loss.
    """
    _same_shape(logits=logits, targets=targets)
    losses = F.binary_cross_entropy_with_logits(logits.float(), targets.float(), reduction="none")
    if weights is None:
        return losses.mean()
    _same_shape(logits=logits, weights=weights)
    w = weights.float()
    return (losses * w).sum() / w.sum()


def bradley_terry(chosen: Tensor, rejected: Tensor, margin: float = 0.0) -> Tensor:
    """AgentPRM relative loss: Bradley–Terry on the PRM logits of a preference pair.

    ``ℓ = −log σ(z⁺ − z⁻ − m)``, mean over pairs. A positive margin m asks the chosen action to win by at
    least m before the loss saturates.

    Args:
        chosen: ``[B]`` PRM logits z⁺ of the preferred actions.
        rejected: ``[B]`` PRM logits z⁻ of the other action at the same state.
        margin: The margin m (0 in the reference code).

    Returns:
        Scalar loss.
    """
    _same_shape(chosen=chosen, rejected=rejected)
    return -F.logsigmoid(chosen.float() - rejected.float() - margin).mean()


def listwise(scores: Tensor, targets: Tensor, groups: Tensor, temperature: float = 0.05) -> Tensor:
    """Listwise (ListNet) loss: per group, the cross-entropy from the softmax of the targets at a
    temperature to the softmax of the scores, mean over groups.

    ``ℓ_g = −Σ_{i∈g} softmax(y/τ)_i · log softmax(z)_i``. Shift-invariant in the scores, so a
    group's loss depends only on how its scores order and space its members; a small τ makes the
    target nearly one-hot on the best members (ties share the mass).

    Args:
        scores: ``[N]`` PRM logits z.
        targets: ``[N]`` targets y (e.g. Q^μ in [0, 1]).
        groups: ``[N]`` group index of each member, ``0 … G−1`` (members of a group need not be
            contiguous; a group of one member has loss 0).
        temperature: τ > 0.

    Returns:
        Scalar loss.
    """
    _same_shape(scores=scores, targets=targets, groups=groups)
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    g = groups.long()
    p = group_log_softmax(targets.float() / temperature, g).exp()
    per_member = -p * group_log_softmax(scores.float(), g)
    count = int(g.max()) + 1 if g.numel() else 0
    return torch.zeros(count, device=scores.device).index_add(0, g, per_member).mean()


def group_log_softmax(x: Tensor, groups: Tensor) -> Tensor:
    """``log softmax`` of ``x`` ``[N]`` within each group (``groups`` ``[N]``: ``0 … G−1``), in
    the members' order; stable (each group's maximum subtracted first)."""
    g = groups.long()
    count = int(g.max()) + 1 if g.numel() else 0
    top = torch.full((count,), -torch.inf, device=x.device).scatter_reduce(0, g, x, "amax")
    shifted = x - top[g].detach()
    total = torch.zeros(count, device=x.device).index_add(0, g, shifted.exp())
    return shifted - total.log()[g]


def implied_reward(q_sa: Tensor, q_next: Tensor, terminal: Tensor, gamma: float) -> Tensor:
    """InversePRM implied one-step reward (Eq. 8): ``r̂ = Q(s,a) − γ·Q(s',a')``, or ``Q(s,a)`` if terminal.

    At terminal transitions there is no next state, so ``q_next`` is ignored there, even if it is NaN or
    inf: it is zeroed before the product, and its gradient at those positions is exactly 0. Gradients
    flow through both Q terms elsewhere (no target network, as in the reference code).

    Args:
        q_sa: ``[B]`` PRM logits Q(s, a).
        q_next: ``[B]`` PRM logits Q(s', a') with a' ∼ π_{i−1}(·|s').
        terminal: ``[B]`` bool, True where s' is terminal.
        gamma: Discount γ in [0, 1] (0.95 in the paper's runs).

    Returns:
        ``[B]`` float32 implied rewards r̂.
    """
    _same_shape(q_sa=q_sa, q_next=q_next, terminal=terminal)
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma must be in [0, 1], got {gamma}")
    next_value = q_next.float().masked_fill(terminal.bool(), 0.0)
    return q_sa.float() - gamma * next_value


def inverse_prm_logistic(
    q_sa: Tensor, q_next: Tensor, labels: Tensor, terminal: Tensor, gamma: float
) -> Tensor:
    """InversePRM logistic loss: BCE-with-logits of the implied reward against the expert label.

    ``ℓ = BCE(σ(r̂), y)`` with r̂ from :func:`implied_reward` (Eq. 8) and y = 1 for expert transitions,
    0 for learner transitions. This is the discriminator-style surrogate of the linear objective of Eq. 9
    (see :func:`inverse_prm_linear`); it is bounded below and is the default.

    Args:
        q_sa: ``[B]`` PRM logits Q(s, a).
        q_next: ``[B]`` PRM logits Q(s', a'); ignored where ``terminal``.
        labels: ``[B]`` 1 (or True) for expert transitions, 0 (False) for learner transitions.
        terminal: ``[B]`` bool, True where s' is terminal.
        gamma: Discount γ in [0, 1].

    Returns:
        Scalar loss (mean over transitions).
    """
    _same_shape(q_sa=q_sa, labels=labels)
    r_hat = implied_reward(q_sa, q_next, terminal, gamma)
    return F.binary_cross_entropy_with_logits(r_hat, labels.float())


def inverse_prm_linear(
    q_sa: Tensor, q_next: Tensor, labels: Tensor, terminal: Tensor, gamma: float
) -> Tensor:
    """InversePRM linear loss: the objective of Eq. 9, negated to be minimised.

    ``ℓ = −mean_{expert} r̂ + mean_{learner} r̂`` with r̂ from :func:`implied_reward`: the reward player
    raises the implied reward of expert transitions and lowers that of learner transitions.

    The loss is unbounded below: scaling Q up lowers it forever. Use it only with regularisation (weight
    decay, a bounded head, few steps, early stopping on validation); :func:`inverse_prm_logistic` is the
    default for that reason. Checking the batch reads the labels on the host (one device sync).

    Args:
        q_sa: ``[B]`` PRM logits Q(s, a).
        q_next: ``[B]`` PRM logits Q(s', a'); ignored where ``terminal``.
        labels: ``[B]`` 1 (or True) for expert transitions, 0 (False) for learner transitions.
        terminal: ``[B]`` bool, True where s' is terminal.
        gamma: Discount γ in [0, 1].

    Returns:
        Scalar loss.

    Raises:
        ValueError: If the batch has no expert or no learner transition.
    """
    _same_shape(q_sa=q_sa, labels=labels)
    r_hat = implied_reward(q_sa, q_next, terminal, gamma)
    expert = labels.float() > 0.5
    n_expert = int(expert.sum())
    if n_expert == 0 or n_expert == expert.numel():
        raise ValueError(
            f"inverse_prm_linear needs expert and learner transitions in every batch, got "
            f"{n_expert} expert and {expert.numel() - n_expert} learner"
        )
    return -r_hat[expert].mean() + r_hat[~expert].mean()


class DPOOutput(NamedTuple):
    """Result of :func:`dpo`; every field but ``loss`` is detached.

    Attributes:
        loss: Scalar loss.
        chosen_rewards: ``[B]`` implicit rewards β(log π(y⁺) − log π_ref(y⁺)).
        rejected_rewards: ``[B]`` implicit rewards β(log π(y⁻) − log π_ref(y⁻)).
        margins: ``[B]`` ``chosen_rewards − rejected_rewards``.
        accuracy: Scalar fraction of pairs with a positive margin.
    """

    loss: Tensor
    chosen_rewards: Tensor
    rejected_rewards: Tensor
    margins: Tensor
    accuracy: Tensor


def dpo(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    beta: float = 0.03,
    label_smoothing: float = 0.0,
) -> DPOOutput:
    """DPO loss (Rafailov et al., 2023), the policy update of Eq. 10 with the PRM ranking the pairs.

    With ``z = β·[(log π(y⁺) − log π_ref(y⁺)) − (log π(y⁻) − log π_ref(y⁻))]`` the loss is
    ``−(1 − ε)·log σ(z) − ε·log σ(−z)``, mean over pairs; ε = 0 is the standard sigmoid loss, ε > 0 the
    conservative variant that assumes a fraction ε of the preference labels are flipped.

    Args:
        policy_chosen_logps: ``[B]`` sequence log-probs log π(y⁺|s) (see :func:`sequence_logps`).
        policy_rejected_logps: ``[B]`` log π(y⁻|s).
        ref_chosen_logps: ``[B]`` log π_ref(y⁺|s) under the reference π_{i−1} (no gradient needed).
        ref_rejected_logps: ``[B]`` log π_ref(y⁻|s).
        beta: KL strength β > 0 (paper: 0.03).
        label_smoothing: ε in [0, 0.5].

    Returns:
        :class:`DPOOutput` with the scalar loss and detached diagnostics.
    """
    _same_shape(
        policy_chosen_logps=policy_chosen_logps,
        policy_rejected_logps=policy_rejected_logps,
        ref_chosen_logps=ref_chosen_logps,
        ref_rejected_logps=ref_rejected_logps,
    )
    if beta <= 0:
        raise ValueError(f"beta must be positive, got {beta}")
    if not 0.0 <= label_smoothing <= 0.5:
        raise ValueError(f"label_smoothing must be in [0, 0.5], got {label_smoothing}")
    chosen = beta * (policy_chosen_logps.float() - ref_chosen_logps.float())
    rejected = beta * (policy_rejected_logps.float() - ref_rejected_logps.float())
    z = chosen - rejected
    losses = -(1.0 - label_smoothing) * F.logsigmoid(z) - label_smoothing * F.logsigmoid(-z)
    margins = z.detach()
    return DPOOutput(
        loss=losses.mean(),
        chosen_rewards=chosen.detach(),
        rejected_rewards=rejected.detach(),
        margins=margins,
        accuracy=(margins > 0).float().mean(),
    )


def sequence_logps(
    logits: Tensor,
    labels: Tensor,
    ignore_index: int = -100,
    average: bool = False,
    temperature: float = 1.0,
) -> Tensor:
    """Log-probability of the labelled tokens of each sequence under a causal LM.

    ``labels`` is aligned with the model's ``input_ids`` (the Hugging Face convention: prompt and padding
    set to ``ignore_index``); the shift is done here: the logits at position t predict the label at t + 1,
    so ``logits[:, :-1]`` are scored against ``labels[:, 1:]`` and the first label is never scored.
    Log-probs are ``log_softmax`` in float32 followed by ``gather``, one sequence at a time, so a bf16
    ``[B, L, V]`` tensor is never upcast whole.

    Args:
        logits: ``[B, L, V]`` next-token logits.
        labels: ``[B, L]`` token ids, ``ignore_index`` where not scored.
        ignore_index: Label value of tokens that are not scored.
        average: If True, return the mean log-prob per labelled token instead of the sum; a sequence with
            no labelled token gives 0 in both modes.
        temperature: The logits are divided by it before the softmax (the reference code scores policy
            and reference at the sampling temperature, 0.7).

    Returns:
        ``[B]`` float32 summed (or averaged) log-probs.
    """
    if logits.dim() != 3 or labels.shape != logits.shape[:2]:
        raise ValueError(
            f"expected logits [B, L, V] and labels [B, L], got {tuple(logits.shape)} and "
            f"{tuple(labels.shape)}"
        )
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    targets = labels[:, 1:]
    mask = targets != ignore_index
    safe_targets = targets.masked_fill(~mask, 0)
    rows = []
    for row_logits, row_targets in zip(logits[:, :-1], safe_targets, strict=True):
        logp = (row_logits.float() / temperature).log_softmax(-1)  # [L-1, V]
        rows.append(logp.gather(-1, row_targets.unsqueeze(-1)).squeeze(-1))  # [L-1]
    token_logps = torch.stack(rows) if rows else logits.new_zeros(0, targets.shape[1], dtype=torch.float32)
    total = (token_logps * mask).sum(-1)
    if average:
        return total / mask.sum(-1).clamp_min(1)
    return total


def kl_estimate(policy_logps: Tensor, ref_logps: Tensor) -> Tensor:
    """k3 estimate of KL(π ‖ π_ref) from log-probs of tokens (or sequences) sampled from π.

    With ``d = log π_ref(y) − log π(y)`` and y ∼ π, ``k3 = (e^d − 1) − d`` is an unbiased, non-negative,
    low-variance estimator of KL(π ‖ π_ref) (J. Schulman, "Approximating KL Divergence", 2020,
    http://joschu.net/blog/kl-approx.html). It is computed as ``expm1(d) − d``, accurate for small d.

    Args:
        policy_logps: Log-probs under π of the sampled tokens, any shape.
        ref_logps: Log-probs under π_ref of the same tokens, same shape.

    Returns:
        Scalar mean of k3 over all elements, ≥ 0.
    """
    _same_shape(policy_logps=policy_logps, ref_logps=ref_logps)
    d = ref_logps.float() - policy_logps.float()
    return (torch.expm1(d) - d).clamp_min(0.0).mean()
