#!/usr/bin/env bash
# Online DPO of pi0 against the oracle whose pair labels are flipped with probability p: what pair
# accuracy a PRM must reach (issue 15, item 1). Distinct candidates, beta 0.3, lr 1e-4, 60 steps.
#   experiments/noise_curve.sh [ROLLOUTS] [POLICY]
source "$(dirname "$0")/common.sh"
R=${1:-$EXP/roll-s0}; P=${2:-$EXP/sft-s0/model}
for p in 0.0 0.2 0.35 0.5; do
  experiments/dpo_oracle.sh "noise-p$p" "$R" "$P" "--model.init_args.prm=oracle?noise=$p" \
    --model.init_args.candidates=distinct --model.init_args.lr=1e-4 --model.init_args.beta=0.3
done
