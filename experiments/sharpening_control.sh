#!/usr/bin/env bash
# The control for any PRM-driven update whose DPO candidates are the policy's own samples: DPO
# against the policy's own likelihood, with no labels at all. The "PRM" is the likelihood prior
# with a zero head and no training (score = log pi0(response | state)), so each state's pair is
# pi0's most and least likely of its own samples and DPO sharpens pi0 toward its mode. Same DPO
# settings as experiments/listwise.sh (60 steps, beta 0.3, lr 1e-4), one run per SEED, each
# paired with pi0 (common random numbers), then pooled by game.
#   experiments/sharpening_control.sh [SEED...]   (default 0 1 2; the 12-epoch pi0 and its
#   240 x 2 rollouts of experiments/wide_states.sh)
source "$(dirname "$0")/common.sh"
SEEDS=${*:-0 1 2}
D=$EXP/sft12-s0; P=$D/policy; R=$D/rollouts240-ref; Q=$D/prm-prior-only/model
prior_only "$P" "$Q"
export BASE=$D/crn EXP
for seed in $SEEDS; do
  dpo_seeded "prior-only-sample-seed$seed" "$R" "$P" "$seed" "$Q" --model.init_args.candidates=sample
done
pooled "$D/crn" prior-only-sample $SEEDS
