#!/usr/bin/env bash
# Does online DPO generalise to held-out games when its states come from all 240 training games
# instead of 32, and does a PRM fitted on many more search-expert labels rank well enough to carry
# the gain? On the 12-epoch pi0 (experiments/longer_sft.sh 12 0): pi0's rollouts of the 240
# training games x 2 with the expert's Q^mu on 4 sampled turns per episode; a reference-target PRM
# (Q^mu pairs, relative loss, from pi0, EPOCHS epochs) probed at pi0's held-out states; then 60 DPO
# steps against the oracle and against that PRM for each SEED, each paired with pi0.
#   experiments/wide_states.sh [EPOCHS] [SEED...]     (defaults 3 0 1 2)
source "$(dirname "$0")/common.sh"
EPOCHS=${1:-3}; shift || true; SEEDS=${*:-0 1 2}
D=$EXP/sft12-s0; P=$D/policy; R=$D/rollouts240-ref; Q=$D/prm-ref240-e$EPOCHS
[ -f "$P/config.json" ] || { echo "run experiments/longer_sft.sh 12 0 first"; exit 1; }
s=$(date +%s)
[ -f "$R/manifest.json" ] || $AGENTPRM predict -c configs/rollout/quickstart.yaml --model.init_args.model="$P" \
  --model.init_args.output_dir="$R" --trainer.default_root_dir="$R" --data.init_args.max_games=240 \
  --data.init_args.rollouts_per_game=2 --model.init_args.reference_turns=4 > "$R.log" 2>&1
echo "rollouts 240 x 2 with 4 labelled turns: $(( $(date +%s) - s )) s"
s=$(date +%s)
[ -f "$Q/model/head.pt" ] || $AGENTPRM fit -c configs/prm/relative.yaml --model.init_args.model="$P" \
  --data.init_args.rollouts="[$R]" --model.init_args.objective.init_args.target=reference --trainer.max_epochs="$EPOCHS" \
  --trainer.max_time=00:00:30:00 --trainer.default_root_dir="$Q" --model.init_args.output_dir="$Q/model" > "$Q.log" 2>&1
echo "PRM fit: $(( $(date +%s) - s )) s"
[ -f "$Q.probe.json" ] || $AGENTPRM probe --prm "$Q/model" --policy "$P" --states "$D/crn/pi0-eval4" \
  --max-states 300 --output "$Q.probe.json" > /dev/null 2>&1
python3 - "$Q.probe.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1])); o = r["oracle"]
print(f"probe: expert-first {r['prm_top1']:.3f} | oracle-best first {o['prm_top1']:.3f} pair acc "
      f"{o['prm_pair_acc']:.3f} Q ratio {o['prm_q_ratio']:.3f} beats pi0 {o['prm_beats_policy']:.3f} | "
      f"pi0 oracle-best first {o['policy_top1']:.3f}")
PY
export BASE=$D/crn EXP
dpo() { dpo_seeded "$1" "$R" "$P" "$2" "$3" --model.init_args.candidates=distinct; }  # name seed prm
for seed in $SEEDS; do dpo "wide-oracle-seed$seed" "$seed" oracle; done
dpo "wide-refprm-e$EPOCHS-seed0" 0 "$Q/model"  # one seed: -14 / -6 points, the direction is clear
pooled "$D/crn" wide-oracle $SEEDS
