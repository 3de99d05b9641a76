#!/usr/bin/env bash
# Online DPO of the 12-epoch pi0 (experiments/longer_sft.sh) against a PRM with reference targets
# (search-expert labels on 2 sampled turns per episode, Q^mu pairs: data.target=reference with the
# relative loss, the best variant of docs/experiments.md section 4), paired with pi0.
#   experiments/ref_prm_dpo.sh [SEED]     (default 0)
source "$(dirname "$0")/common.sh"
SEED=${1:-0}; D=$EXP/sft12-s0; P=$D/policy; R=$D/rollouts-ref
[ -f "$R/manifest.json" ] || $AGENTPRM predict -c configs/rollout/quickstart.yaml --model.init_args.model="$P" \
  --model.init_args.output_dir="$R" --trainer.default_root_dir="$R" --data.init_args.max_games=32 \
  --model.init_args.reference_turns=2 > "$D/roll-ref.log" 2>&1
if [ ! -f "$D/prm-ref/model/head.pt" ]; then
  $AGENTPRM fit -c configs/prm/relative.yaml --model.init_args.model="$P" --data.init_args.rollouts="[$R]" \
    --model.init_args.objective.init_args.target=reference --trainer.max_epochs=1 --trainer.default_root_dir="$D/prm-ref" \
    --model.init_args.output_dir="$D/prm-ref/model" > "$D/prm-ref.log" 2>&1
fi
export BASE=$D/crn EXP
experiments/dpo_oracle.sh "sft12-s0-refprm-seed$SEED" "$R" "$P" --model.init_args.prm="$D/prm-ref/model" \
  --model.init_args.candidates=distinct --model.init_args.beta=0.3 --model.init_args.lr=1e-4 \
  --seed_everything="$SEED" --model.init_args.seed="$SEED"
