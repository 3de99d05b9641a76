#!/usr/bin/env bash
# Do the held-out gains of one iteration add up over several? K on-policy iterations from the
# 12-epoch pi0: pi_{i-1}'s rollouts of the 32 training games x 4 (rollout seed i, so each round
# sees fresh states), then 60 online-DPO steps from and towards pi_{i-1} (beta 0.3, lr 1e-4, as
# sections 6-9) against SCORER, then pi_i on the 32 training games x 4 and on the 240 new held-out
# games x 4 of experiments/heldout240.sh, each paired with pi0 (common random numbers).
#   experiments/iterated.sh SCORER [K]     (K defaults to 3)
# SCORER: oracle   the search expert's Q^mu, 4 distinct candidates per state (the ceiling)
#         control  pi_{i-1}'s own likelihood, no labels, candidates pi_{i-1}'s own 4 samples
#                  (the sharpening control of section 9, iterated)
source "$(dirname "$0")/common.sh"
SCORER=$1; K=${2:-3}
D=$EXP/sft12-s0; G=$EXP/games-unseen240-s1; OUT=$EXP/iter-$SCORER; prev=$D/policy
[ -f "$EXP/heldout240/pi0/summary.json" ] || { echo "run experiments/heldout240.sh first"; exit 1; }
[ -f "$D/crn/pi0-train4/summary.json" ] || train_games "$D/policy" "$D/crn/pi0-train4" 4 32
mkdir -p "$OUT"
for i in $(seq 1 "$K"); do
  I=$OUT/iter$i; R=$I/rollouts; mkdir -p "$I"; s=$(date +%s)
  [ -f "$R/manifest.json" ] || $AGENTPRM predict -c configs/rollout/quickstart.yaml \
    --model.init_args.model="$prev" --model.init_args.output_dir="$R" --trainer.default_root_dir="$R" \
    --data.init_args.max_games=32 --model.init_args.seed="$i" --seed_everything="$i" > "$I/roll.log" 2>&1
  case $SCORER in
    oracle) prm=oracle; cand=distinct ;;
    control)
      prm=$I/prior-only; prior_only "$prev" "$prm"
      cand=sample ;;
    *) echo "SCORER: expected oracle or control, got '$SCORER'"; exit 2 ;;
  esac
  r=$(date +%s)
  [ -f "$I/model/config.json" ] || $AGENTPRM fit -c configs/policy/quickstart.yaml \
    --model.init_args.model="$prev" --model.init_args.prm="$prm" --model.init_args.candidates="$cand" \
    "${DPO_SETTINGS[@]}" --data.init_args.rollouts="[$R]" \
    --trainer.default_root_dir="$I" --model.init_args.output_dir="$I/model" > "$I/fit.log" 2>&1
  f=$(date +%s)
  [ -f "$I/train4/summary.json" ] || train_games "$I/model" "$I/train4" 4 32
  [ -f "$I/eval240/summary.json" ] || heldout "$I/model" "$I/eval240" 4 --data.init_args.data="$G"
  echo "$SCORER iteration $i (rollouts $(( r - s )) s, DPO $(( f - r )) s, eval $(( $(date +%s) - f )) s)"
  echo "  train games vs pi0:   $($AGENTPRM compare "$D/crn/pi0-train4" "$I/train4" | tail -1)"
  echo "  240 held-out vs pi0:  $($AGENTPRM compare "$EXP/heldout240/pi0" "$I/eval240" | tail -1)"
  prev=$I/model
done
