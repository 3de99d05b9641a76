#!/usr/bin/env bash
# Can a learned PRM rank pi0's commands as the search expert does once it is trained as a ranker?
# On the 12-epoch pi0 (experiments/longer_sft.sh 12 0) and its 240 x 2 rollouts with Q^mu on 4
# sampled turns per episode (experiments/wide_states.sh makes them): a listwise PRM (one softmax
# over each labelled state's ~10 commands, ListwiseObjective) from pi0, EPOCHS epochs within
# MINUTES at learning rate LR; probed at pi0's held-out and training-game states against the
# oracle; then 60 online DPO steps against it for each SEED, each paired with pi0 (common random
# numbers).
#   [HISTORY=k] [MARGIN=m] [CANDIDATES=c] [PRIOR=w] experiments/listwise.sh [EPOCHS] [MINUTES] [LR] [SEED...]
#   (defaults 6 30 3e-4 0 1 2; HISTORY: the PRM's history window, 1 as pi0's, "null" for every
#   turn; MARGIN: DPO's minimum PRM-score gap between chosen and rejected, default 0; CANDIDATES:
#   DPO's candidates, distinct (default) or sample: 4 samples of the policy, repeats allowed; PRIOR:
#   the PRM's likelihood_prior w, score = head + w * log pi0(response | state), default 0)
source "$(dirname "$0")/common.sh"
EPOCHS=${1:-6}; MINUTES=${2:-30}; LR=${3:-3e-4}; shift 3 || shift $#; SEEDS=${*:-0 1 2}
HISTORY=${HISTORY:-1}; MARGIN=${MARGIN:-0}; CANDIDATES=${CANDIDATES:-distinct}; PRIOR=${PRIOR:-0}
D=$EXP/sft12-s0; P=$D/policy; R=$D/rollouts240-ref
TAG=e$EPOCHS$([ "$LR" = 3e-4 ] || echo "-lr$LR")$([ "$HISTORY" = 1 ] || echo "-h$HISTORY")$([ "$PRIOR" = 0 ] || echo "-w$PRIOR")
Q=$D/prm-list240-$TAG; RUN=list-$TAG$([ "$MARGIN" = 0 ] || echo "-m$MARGIN")$([ "$CANDIDATES" = distinct ] || echo "-$CANDIDATES")
[ -f "$R/manifest.json" ] || { echo "run experiments/wide_states.sh first (its rollouts)"; exit 1; }
s=$(date +%s)
[ -f "$Q/model/head.pt" ] || $AGENTPRM fit -c configs/prm/listwise.yaml --model.init_args.model="$P" \
  --data.init_args.rollouts="[$R]" --trainer.max_epochs="$EPOCHS" --model.init_args.lr="$LR" \
  --model.init_args.history_window="$HISTORY" --model.init_args.likelihood_prior="$PRIOR" --data.init_args.max_length=1024 \
  --trainer.max_time="00:00:$MINUTES:00" --trainer.default_root_dir="$Q" --model.init_args.output_dir="$Q/model" > "$Q.log" 2>&1
echo "PRM fit: $(( $(date +%s) - s )) s"
for split in eval4 train4; do
  [ -f "$Q.probe-$split.json" ] || $AGENTPRM probe --prm "$Q/model" --policy "$P" --states "$D/crn/pi0-$split" \
    --max-states 300 --output "$Q.probe-$split.json" > /dev/null 2>&1
  python3 - "$Q.probe-$split.json" "$split" <<'PY'
import json, sys
r = json.load(open(sys.argv[1])); o = r["oracle"]
print(f"probe {sys.argv[2]}: expert-first {r['prm_top1']:.3f} | oracle-best first {o['prm_top1']:.3f} pair acc "
      f"{o['prm_pair_acc']:.3f} Q ratio {o['prm_q_ratio']:.3f} beats pi0 {o['prm_beats_policy']:.3f} | "
      f"pi0 oracle-best first {o['policy_top1']:.3f}")
PY
done
export BASE=$D/crn EXP
for seed in $SEEDS; do
  dpo_seeded "$RUN-seed$seed" "$R" "$P" "$seed" "$Q/model" --model.init_args.candidates="$CANDIDATES" \
    --model.init_args.margin="$MARGIN"
done
pooled "$D/crn" "$RUN" $SEEDS
