#!/usr/bin/env bash
# Online DPO of a policy against a scorer (by default the noise-free oracle), then its success on
# the 32 training games x 4 and the 48 held-out games x 4, paired with the policy's own.
#   experiments/dpo_oracle.sh NAME [ROLLOUTS] [POLICY] [overrides of configs/policy/quickstart.yaml…]
# e.g. experiments/dpo_oracle.sh p0.2 runs/exp/roll-s0 runs/exp/sft-s0/model \
#        '--model.init_args.prm=oracle?noise=0.2' --model.init_args.candidates=distinct
source "$(dirname "$0")/common.sh"
NAME=$1; R=${2:-$EXP/roll-s0}; P=${3:-$EXP/sft-s0/model}; shift $(( $# < 3 ? $# : 3 ))
OUT=$EXP/dpo/$NAME; BASE=${BASE:-$EXP/crn}; mkdir -p "$OUT" "$BASE"
[ -f "$BASE/pi0-train4/summary.json" ] || train_games "$P" "$BASE/pi0-train4" 4 32
[ -f "$BASE/pi0-eval4/summary.json" ] || heldout "$P" "$BASE/pi0-eval4" 4
s=$(date +%s)
if [ ! -f "$OUT/model/config.json" ]; then
  $AGENTPRM fit -c configs/policy/quickstart.yaml --model.init_args.model="$P" \
    --data.init_args.rollouts="[$R]" --trainer.default_root_dir="$OUT" \
    --model.init_args.output_dir="$OUT/model" "$@" > "$OUT/fit.log" 2>&1
fi
m=$(date +%s)
[ -f "$OUT/train4/summary.json" ] || train_games "$OUT/model" "$OUT/train4" 4 32
[ -f "$OUT/eval4/summary.json" ] || heldout "$OUT/model" "$OUT/eval4" 4
echo "$NAME fit $(( m - s )) s, eval $(( $(date +%s) - m )) s"
echo "  train games: $($AGENTPRM compare "$BASE/pi0-train4" "$OUT/train4" | tail -1)"
echo "  held-out:    $($AGENTPRM compare "$BASE/pi0-eval4" "$OUT/eval4" | tail -1)"
