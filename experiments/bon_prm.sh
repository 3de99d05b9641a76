#!/usr/bin/env bash
# Best-of-N with a learned PRM at inference, paired with the policy alone: Best-of-4 over the
# policy's samples and the best over every admissible command, on the 48 held-out games x 4 and
# the 32 training games x 4 (common random numbers with the policy's own evaluation in BASE).
#   experiments/bon_prm.sh PRM [POLICY] [BASE] [OUT]
# e.g. experiments/bon_prm.sh runs/exp/sft12-s0/prm-list240-e6/model   (the 12-epoch pi0 and its
#      evaluations in runs/exp/sft12-s0/crn by default)
source "$(dirname "$0")/common.sh"
Q=$1; P=${2:-$EXP/sft12-s0/policy}; BASE=${3:-$EXP/sft12-s0/crn}; OUT=${4:-$Q.bon}; mkdir -p "$OUT"
[ -f "$BASE/pi0-eval4/summary.json" ] || heldout "$P" "$BASE/pi0-eval4" 4
[ -f "$BASE/pi0-train4/summary.json" ] || train_games "$P" "$BASE/pi0-train4" 4 32
for name in bon4 all; do
  extra=(--model.init_args.prm="$Q" --model.init_args.best_of_n=4)
  [ "$name" = all ] && extra=(--model.init_args.prm="$Q" --model.init_args.candidates=all)
  s=$(date +%s)
  [ -f "$OUT/$name-eval4/summary.json" ] || heldout "$P" "$OUT/$name-eval4" 4 "${extra[@]}"
  [ -f "$OUT/$name-train4/summary.json" ] || train_games "$P" "$OUT/$name-train4" 4 32 "${extra[@]}"
  echo "$name: $(( $(date +%s) - s )) s"
  echo "  held-out:    $($AGENTPRM compare "$BASE/pi0-eval4" "$OUT/$name-eval4" | tail -1)"
  echo "  train games: $($AGENTPRM compare "$BASE/pi0-train4" "$OUT/$name-train4" | tail -1)"
done
