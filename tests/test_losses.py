"""Tests of agentprm.losses with hand-computed numbers (the arithmetic is in the comments).

Shorthand: sp(x) = softplus(x) = ln(1 + eˣ), so −ln σ(z) = sp(−z) and −ln(1 − σ(z)) = sp(z).
"""

from __future__ import annotations

import math

import pytest
import torch

from agentprm.losses import (
    DPOOutput,
    bradley_terry,
    dpo,
    implied_reward,
    inverse_prm_linear,
    inverse_prm_logistic,
    kl_estimate,
    sequence_logps,
    soft_bce,
)

LN2 = math.log(2.0)
SP_M2 = math.log1p(math.exp(-2.0))  # sp(−2) = ln(1 + e⁻²) = 0.126928…
SP_M1 = math.log1p(math.exp(-1.0))  # sp(−1) = ln(1 + e⁻¹) = 0.313262…


def t(*values: float, requires_grad: bool = False) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32, requires_grad=requires_grad)


def close(actual: torch.Tensor, expected: float | list[float], tol: float = 1e-6) -> None:
    torch.testing.assert_close(actual.double(), torch.tensor(expected, dtype=torch.float64), atol=tol, rtol=0)


# ---------------------------------------------------------------- soft_bce


def test_soft_bce_hand_values():
    # z = 0, Q̂ = ½: −[½ ln ½ + ½ ln ½] = ln 2
    close(soft_bce(t(0.0), t(0.5)), LN2)
    # z = 2, Q̂ = 1: −ln σ(2) = ln(1 + e⁻²)
    close(soft_bce(t(2.0), t(1.0)), SP_M2)
    # z = 2, Q̂ = 0: −ln(1 − σ(2)) = ln(1 + e²) = 2 + ln(1 + e⁻²)
    close(soft_bce(t(2.0), t(0.0)), 2.0 + SP_M2)
    # unweighted batch: (ln 2 + sp(−2)) / 2 = (0.693147 + 0.126928) / 2 = 0.410038
    close(soft_bce(t(0.0, 2.0), t(0.5, 1.0)), (LN2 + SP_M2) / 2)


def test_soft_bce_weights_normalised_by_their_sum():
    # weights (1, 3): (1·ln 2 + 3·sp(−2)) / (1 + 3) = (0.693147 + 0.380784) / 4 = 0.268483
    close(soft_bce(t(0.0, 2.0), t(0.5, 1.0), weights=t(1.0, 3.0)), (LN2 + 3 * SP_M2) / 4)
    # scaling every weight leaves the loss unchanged
    close(soft_bce(t(0.0, 2.0), t(0.5, 1.0), weights=t(10.0, 30.0)), (LN2 + 3 * SP_M2) / 4)
    # equal weights = plain mean
    close(soft_bce(t(0.0, 2.0), t(0.5, 1.0), weights=t(7.0, 7.0)), (LN2 + SP_M2) / 2)


def test_soft_bce_stable_at_large_logits():
    z = t(100.0, -100.0, requires_grad=True)
    # right side: sp(−100) ≈ 4e-44 each → 0
    close(soft_bce(z, t(1.0, 0.0)), 0.0)
    # wrong side: −ln σ(−100) = sp(100) ≈ 100 each → mean 100
    loss = soft_bce(z, t(0.0, 1.0))
    close(loss, 100.0, tol=1e-4)
    loss.backward()
    # d/dz = (σ(z) − Q̂) / B = (1 − 0) / 2, (0 − 1) / 2
    close(z.grad, [0.5, -0.5])
    # bf16 logits are upcast: the result is float32 and finite
    out = soft_bce(t(100.0, -100.0).bfloat16(), t(0.0, 1.0))
    assert out.dtype == torch.float32 and torch.isfinite(out)


def test_soft_bce_rejects_broadcasting_shapes():
    with pytest.raises(ValueError, match="same shape"):
        soft_bce(torch.zeros(4, 1), torch.zeros(4))  # a [B, 1] head output would broadcast to [B, B]
    with pytest.raises(ValueError, match="same shape"):
        soft_bce(torch.zeros(4), torch.zeros(4), weights=torch.ones(3))


# ---------------------------------------------------------------- bradley_terry


def test_bradley_terry_values_and_margin():
    # equal scores: −ln σ(0) = ln 2
    close(bradley_terry(t(1.5, -3.0), t(1.5, -3.0)), LN2)
    # z⁺ − z⁻ = 1: −ln σ(1) = sp(−1) = 0.313262
    close(bradley_terry(t(1.0), t(0.0)), SP_M1)
    # margin 1 shifts the difference back to 0: ln 2
    close(bradley_terry(t(1.0), t(0.0), margin=1.0), LN2)
    # margin 3: −ln σ(1 − 3) = sp(2) = 2 + sp(−2)
    close(bradley_terry(t(1.0), t(0.0), margin=3.0), 2.0 + SP_M2)


def test_bradley_terry_gradient_pushes_chosen_up():
    chosen, rejected = t(0.0, 0.0, requires_grad=True), t(0.0, 0.0, requires_grad=True)
    bradley_terry(chosen, rejected).backward()
    # d/dz⁺ [−ln σ(z⁺ − z⁻)] / B = −σ(−0) / 2 = −0.25; the rejected side gets +0.25
    close(chosen.grad, [-0.25, -0.25])
    close(rejected.grad, [0.25, 0.25])


# ---------------------------------------------------------------- inverse PRM


def test_implied_reward_eq8():
    # γ = 0.5: r̂ = (3 − 0.5·2, 1 − 0.5·4, 2 [terminal, q_next = NaN ignored]) = (2, −1, 2)
    r = implied_reward(t(3.0, 1.0, 2.0), t(2.0, 4.0, math.nan), torch.tensor([False, False, True]), 0.5)
    close(r, [2.0, -1.0, 2.0])
    with pytest.raises(ValueError, match="gamma"):
        implied_reward(t(1.0), t(1.0), torch.tensor([False]), 1.5)


def test_inverse_logistic_terminal_uses_q_sa_alone_even_with_nan():
    q_sa, q_next = t(2.0, requires_grad=True), t(math.nan, requires_grad=True)
    # terminal expert: r̂ = Q(s,a) = 2 → −ln σ(2) = sp(−2)
    loss = inverse_prm_logistic(q_sa, q_next, t(1.0), torch.tensor([True]), gamma=0.95)
    close(loss, SP_M2)
    loss.backward()
    # d/dQ(s,a) = σ(2) − 1 = −0.119203; nothing (and no NaN) reaches q_next
    close(q_sa.grad, [1 / (1 + math.exp(2.0)) * -1])
    close(q_next.grad, [0.0])


def test_inverse_logistic_non_terminal_and_labels():
    # γ = 0.5, Q(s,a) = 3, Q(s',a') = 2 → r̂ = 3 − 1 = 2
    # expert (y = 1): sp(−2) = 0.126928; learner (y = 0): sp(2) = 2.126928; mean = 1.126928
    terminal = torch.tensor([False, False])
    close(inverse_prm_logistic(t(3.0), t(2.0), t(1.0), terminal[:1], 0.5), SP_M2)
    close(inverse_prm_logistic(t(3.0), t(2.0), t(0.0), terminal[:1], 0.5), 2.0 + SP_M2)
    close(inverse_prm_logistic(t(3.0, 3.0), t(2.0, 2.0), t(1.0, 0.0), terminal, 0.5), 1.0 + SP_M2)
    # bool labels mean the same as 1/0
    close(
        inverse_prm_logistic(t(3.0, 3.0), t(2.0, 2.0), torch.tensor([True, False]), terminal, 0.5),
        1.0 + SP_M2,
    )


def test_inverse_logistic_gradients_through_both_q_terms():
    # γ = 0.5; row 0: learner, r̂ = 1 − 0.5·2 = 0; row 1: expert, terminal, r̂ = 1
    q_sa, q_next = t(1.0, 1.0, requires_grad=True), t(2.0, math.nan, requires_grad=True)
    loss = inverse_prm_logistic(q_sa, q_next, t(0.0, 1.0), torch.tensor([False, True]), 0.5)
    # (sp(0) + sp(−1)) / 2 = (0.693147 + 0.313262) / 2 = 0.503204
    close(loss, (LN2 + SP_M1) / 2)
    loss.backward()
    # dℓ/dr̂ / B = (σ(r̂) − y) / 2 = (0.5 − 0) / 2 = 0.25 and (σ(1) − 1) / 2 = −0.134471
    g1 = (1 / (1 + math.exp(-1.0)) - 1) / 2
    close(q_sa.grad, [0.25, g1])
    # dr̂/dQ(s',a') = −γ: −0.5·0.25 = −0.125 (no target network); 0 at the terminal row
    close(q_next.grad, [-0.125, 0.0])


def test_inverse_linear_hand_value():
    # γ = 0.5: r̂ = (2, −1, 2) as in test_implied_reward_eq8; labels (expert, learner, expert)
    # loss = −mean_expert r̂ + mean_learner r̂ = −(2 + 2)/2 + (−1) = −3
    q_sa, q_next = t(3.0, 1.0, 2.0), t(2.0, 4.0, math.nan)
    terminal, labels = torch.tensor([False, False, True]), t(1.0, 0.0, 1.0)
    close(inverse_prm_linear(q_sa, q_next, labels, terminal, 0.5), -3.0)
    # unbounded: scaling Q by 10 scales the loss to −30
    close(inverse_prm_linear(10 * q_sa, 10 * q_next, labels, terminal, 0.5), -30.0, tol=1e-5)


def test_inverse_linear_needs_both_classes():
    args = (t(1.0, 2.0), t(0.0, 0.0), torch.tensor([False, False]))
    with pytest.raises(ValueError, match="2 expert and 0 learner"):
        inverse_prm_linear(args[0], args[1], t(1.0, 1.0), args[2], 0.9)
    with pytest.raises(ValueError, match="0 expert and 2 learner"):
        inverse_prm_linear(args[0], args[1], t(0.0, 0.0), args[2], 0.9)


# ---------------------------------------------------------------- dpo


def reference_dpo(pc, pr, rc, rr, beta, eps):
    """Straightforward per-pair formula, written independently of the module (float64 Python math)."""
    out = []
    for a, b, c, d in zip(pc, pr, rc, rr, strict=True):
        z = beta * ((a - c) - (b - d))
        sig = 1 / (1 + math.exp(-z))
        out.append(-(1 - eps) * math.log(sig) - eps * math.log(1 - sig))
    return sum(out) / len(out)


def test_dpo_hand_value_two_pairs():
    pc, pr = t(-1.0, -3.0, requires_grad=True), t(-2.0, -1.0)
    rc, rr = t(-1.5, -2.0), t(-1.5, -2.0)
    out = dpo(pc, pr, rc, rr, beta=0.1)
    assert isinstance(out, DPOOutput)
    # chosen rewards = 0.1·((−1) − (−1.5), (−3) − (−2)) = (0.05, −0.1)
    # rejected rewards = 0.1·((−2) − (−1.5), (−1) − (−2)) = (−0.05, 0.1)
    # margins z = (0.1, −0.2); accuracy = ½
    close(out.chosen_rewards, [0.05, -0.1])
    close(out.rejected_rewards, [-0.05, 0.1])
    close(out.margins, [0.1, -0.2])
    close(out.accuracy, 0.5)
    # loss = (sp(−0.1) + sp(0.2)) / 2 = (ln 1.904837 + ln 2.221403) / 2 = (0.644397 + 0.798139) / 2 = 0.721268
    close(out.loss, (math.log1p(math.exp(-0.1)) + math.log1p(math.exp(0.2))) / 2)
    close(out.loss, 0.721268, tol=1e-6)
    # diagnostics are detached; the loss raises log π(y⁺): dℓ/dπ_c = −β σ(−z) / B < 0
    assert not any(x.requires_grad for x in out[1:])
    out.loss.backward()
    assert (pc.grad < 0).all()
    close(pc.grad, [-0.1 / (1 + math.exp(0.1)) / 2, -0.1 / (1 + math.exp(-0.2)) / 2])


def test_dpo_zero_margin_is_ln2():
    x = t(-4.0, -7.0)
    out = dpo(x, x - 1.0, x, x - 1.0)  # (π_c − ref_c) − (π_r − ref_r) = 0 − 0
    close(out.loss, LN2)
    close(out.accuracy, 0.0)  # a zero margin is not a win


def test_dpo_label_smoothing():
    # one pair with z = 0.1·(0.5 − (−0.5)) = 0.1, ε = 0.1:
    # −0.9·ln σ(0.1) − 0.1·ln σ(−0.1) = 0.9·sp(−0.1) + 0.1·(sp(−0.1) + 0.1) = sp(−0.1) + 0.01 = 0.654397
    out = dpo(t(-1.0), t(-2.0), t(-1.5), t(-1.5), beta=0.1, label_smoothing=0.1)
    close(out.loss, math.log1p(math.exp(-0.1)) + 0.01)
    # ε = ½ is symmetric in z: ½(sp(−z) + sp(z)) = ½(0.644397 + 0.744397) = 0.694397
    close(dpo(t(-1.0), t(-2.0), t(-1.5), t(-1.5), beta=0.1, label_smoothing=0.5).loss, 0.694397)
    with pytest.raises(ValueError, match="label_smoothing"):
        dpo(t(-1.0), t(-2.0), t(-1.5), t(-1.5), label_smoothing=0.6)
    with pytest.raises(ValueError, match="beta"):
        dpo(t(-1.0), t(-2.0), t(-1.5), t(-1.5), beta=0.0)


def test_dpo_matches_independent_formula():
    g = torch.Generator().manual_seed(0)
    pc, pr, rc, rr = (-10 * torch.rand(6, generator=g) for _ in range(4))
    for beta, eps in [(0.03, 0.0), (0.1, 0.0), (0.5, 0.2)]:
        expected = reference_dpo(pc.tolist(), pr.tolist(), rc.tolist(), rr.tolist(), beta, eps)
        close(dpo(pc, pr, rc, rr, beta=beta, label_smoothing=eps).loss, expected, tol=1e-5)


# ---------------------------------------------------------------- sequence_logps


def tiny_logits() -> torch.Tensor:
    """[B=3, L=3, V=3]. Position 0 uniform: log p = −ln 3 each. Position 1 logits (ln 2, 0, 0): p = (½, ¼, ¼).
    Position 2 predicts a label past the end, so it is never read: NaN proves it."""
    row = torch.tensor([[0.0, 0.0, 0.0], [LN2, 0.0, 0.0], [math.nan] * 3])
    return row.expand(3, 3, 3).clone()


def test_sequence_logps_hand_values_and_masking():
    # labels are aligned with input_ids; label 0 is never scored (nothing predicts it)
    labels = torch.tensor([[1, 2, 0], [1, -100, 1], [-100, -100, -100]])
    # row 0: log p₀(2) + log p₁(0) = −ln 3 + ln ½ = −1.098612 − 0.693147 = −1.791759 = −ln 6
    # row 1: position 0's label is masked; log p₁(1) = ln ¼ = −1.386294
    # row 2: nothing labelled → 0
    out = sequence_logps(tiny_logits(), labels)
    assert out.shape == (3,) and out.dtype == torch.float32
    close(out, [-math.log(6.0), math.log(0.25), 0.0])
    # average: −ln 6 / 2 = −0.895880; −1.386294 / 1; 0
    close(sequence_logps(tiny_logits(), labels, average=True), [-math.log(6.0) / 2, math.log(0.25), 0.0])
    # another ignore_index
    close(sequence_logps(tiny_logits(), torch.tensor([[7, 2, 7]] * 3), ignore_index=7), [-math.log(3.0)] * 3)


def test_sequence_logps_temperature_bf16_and_gradient():
    labels = torch.tensor([[1, 2, 0]] * 3)
    # T = ½ doubles the logits: position 1 → (ln 4, 0, 0), p = (4/6, 1/6, 1/6)
    # row: −ln 3 + ln ⅔ = ln(2/9) = −1.504077
    close(sequence_logps(tiny_logits(), labels, temperature=0.5), [math.log(2 / 9)] * 3)
    # bf16 logits (ln 2 rounds to 0.69141 in bf16, hence the looser tolerance) give float32 output
    out = sequence_logps(tiny_logits().bfloat16(), labels)
    assert out.dtype == torch.float32
    close(out, [-math.log(6.0)] * 3, tol=2e-3)
    logits = tiny_logits()[:, :2].clone().requires_grad_(True)
    sequence_logps(logits, labels[:, :2]).sum().backward()
    # d log p₀(2) / d logits₀ = onehot(2) − p₀ = (−⅓, −⅓, ⅔); position 1 predicts nothing here
    close(logits.grad[0], [[-1 / 3, -1 / 3, 2 / 3], [0.0, 0.0, 0.0]])


def test_sequence_logps_rejects_bad_shapes():
    with pytest.raises(ValueError, match="expected logits"):
        sequence_logps(torch.zeros(2, 3, 5), torch.zeros(2, 4, dtype=torch.long))


# ---------------------------------------------------------------- kl_estimate


def test_kl_estimate_hand_values():
    # equal log-probs: d = 0 → e⁰ − 0 − 1 = 0
    close(kl_estimate(t(-1.0, -2.5), t(-1.0, -2.5)), 0.0)
    # one sample, log π = −1, log π_ref = −2: d = −1 → e⁻¹ + 1 − 1 = e⁻¹ = 0.367879
    close(kl_estimate(t(-1.0), t(-2.0)), math.exp(-1.0))
    # d = +1 → e − 1 − 1 = 0.718282; mean with the above = 0.543081
    close(kl_estimate(t(-1.0, -2.0), t(-2.0, -1.0)), (math.exp(-1.0) + math.e - 2) / 2)


def test_kl_estimate_positive_and_exact_on_a_balanced_sample():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(50, generator=g), torch.randn(50, generator=g)
    assert kl_estimate(a, b) > 0 and kl_estimate(b, a) > 0
    assert kl_estimate(torch.zeros(1), torch.full((1,), 1e-4)) >= 0  # tiny d: k3 ≈ d²/2, never negative
    # π = (½, ¼, ¼), π_ref = (¼, ¼, ½); the four tokens 0, 0, 1, 2 are distributed exactly as π, so the
    # mean k3 equals KL(π‖π_ref) = ½ ln 2 + ¼ ln 1 + ¼ ln ½ = ¼ ln 2 = 0.173287
    # (per token: d = −ln 2 → ½ − 1 + ln 2 = 0.193147 twice; 0; d = ln 2 → 2 − 1 − ln 2 = 0.306853)
    pi, ref = torch.tensor([0.5, 0.25, 0.25]).log(), torch.tensor([0.25, 0.25, 0.5]).log()
    tokens = torch.tensor([0, 0, 1, 2])
    close(kl_estimate(pi[tokens], ref[tokens]), LN2 / 4)
