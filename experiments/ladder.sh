#!/usr/bin/env bash
# The oracle ladder: how far Best-of-N with a perfect action ranker (the search expert's Q^mu)
# lifts a policy, on the 48 held-out games x 8 sampled episodes, paired with the policy alone.
#   experiments/ladder.sh [POLICY] [OUT]      (defaults: runs/exp/sft-s0/model, runs/exp/ladder)
source "$(dirname "$0")/common.sh"
P=${1:-$EXP/sft-s0/model}; OUT=${2:-$EXP/ladder}; mkdir -p "$OUT"
run() { # name overrides…
  local name=$1; shift; local s; s=$(date +%s)
  [ -f "$OUT/$name/summary.json" ] || heldout "$P" "$OUT/$name" 8 "$@"
  echo "$name $(( $(date +%s) - s )) s: $(rate "$OUT/$name")"
}
run pi0
run bon4 --model.init_args.prm=oracle --model.init_args.best_of_n=4
run bon16 --model.init_args.prm=oracle --model.init_args.best_of_n=16
run bon4-distinct --model.init_args.prm=oracle --model.init_args.best_of_n=4 --model.init_args.candidates=distinct
run bon-all --model.init_args.prm=oracle --model.init_args.candidates=all
for name in bon4 bon16 bon4-distinct bon-all; do $AGENTPRM compare "$OUT/pi0" "$OUT/$name"; done
