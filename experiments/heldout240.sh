#!/usr/bin/env bash
# More held-out games, for power: the 48 built-in held-out games leave a by-game interval of about
# +-7 points on a paired difference, so effects of 3-6 points cannot show. This generates 240 new
# small games from the held-out (ALFRED test) layouts with another generation seed (1; the shipped
# set uses 0, so these are new games) and evaluates the given policies on them x 4, paired with pi0
# (common random numbers).
#   experiments/heldout240.sh NAME=POLICY[:PRM]...   (POLICY alone: the policy sampled; with :PRM,
#   Best-of-4 over its samples by that PRM)
# e.g. experiments/heldout240.sh oracle-s0=runs/exp/dpo/wide-oracle-seed0/model \
#        bon4=runs/exp/sft12-s0/policy:runs/exp/sft12-s0/prm-list240-e6/model
source "$(dirname "$0")/common.sh"
G=$EXP/games-unseen240-s1; OUT=$EXP/heldout240; P=$EXP/sft12-s0/policy; mkdir -p "$OUT"
[ -f "$G/games.json.gz" ] || $AGENTPRM games generate --output "$G" --size small --train 0 \
  --valid-unseen 240 --seed 1 --quiet
on240() { heldout "$1" "$2" 4 --data.init_args.data="$G" "${@:3}"; }
s=$(date +%s); [ -f "$OUT/pi0/summary.json" ] || on240 "$P" "$OUT/pi0"
echo "pi0: $(rate "$OUT/pi0") ($(( $(date +%s) - s )) s)"
for spec in "$@"; do
  name=${spec%%=*}; rest=${spec#*=}; policy=${rest%%:*}; prm=${rest#"$policy"}; prm=${prm#:}
  extra=(); [ -n "$prm" ] && extra=(--model.init_args.prm="$prm" --model.init_args.best_of_n=4)
  s=$(date +%s); [ -f "$OUT/$name/summary.json" ] || on240 "$policy" "$OUT/$name" "${extra[@]}"
  echo "$name ($(( $(date +%s) - s )) s): $($AGENTPRM compare "$OUT/pi0" "$OUT/$name" | tail -1)"
done
