#!/usr/bin/env bash
# Does the policy update work on a better-trained pi0? The quickstart's SFT stops at 6 epochs while
# its validation loss still falls ~15% an epoch. This trains pi0 for EPOCHS (keeping the best
# valid_seen epoch), evaluates it (48 held-out x 4, 32 training games x 4, common random numbers),
# makes its rollouts (32 training games x 4) and runs online DPO against the noise-free oracle and
# against a Monte-Carlo PRM of those rollouts, each paired with pi0.
#   experiments/longer_sft.sh [EPOCHS] [SEED]     (defaults 12 0)
source "$(dirname "$0")/common.sh"
E=${1:-12}; SEED=${2:-0}; D=$EXP/sft$E-s$SEED; P=$D/policy; R=$D/rollouts
mkdir -p "$D/crn"; s=$(date +%s)
[ -f "$P/config.json" ] || $AGENTPRM fit -c configs/sft/quickstart.yaml --seed_everything="$SEED" \
  --trainer.max_epochs="$E" --trainer.max_time=00:00:30:00 --trainer.default_root_dir="$D" > "$D/sft.log" 2>&1
echo "SFT $(( $(date +%s) - s )) s: $(grep -o "kept the weights of step [0-9]* (success [0-9.]*)" "$D/sft.log" | tail -1)"
[ -f "$D/crn/pi0-train4/summary.json" ] || train_games "$P" "$D/crn/pi0-train4" 4 32
[ -f "$D/crn/pi0-eval4/summary.json" ] || heldout "$P" "$D/crn/pi0-eval4" 4
echo "pi0 train games $(rate "$D/crn/pi0-train4"), held-out $(rate "$D/crn/pi0-eval4")"
[ -f "$R/manifest.json" ] || $AGENTPRM predict -c configs/rollout/quickstart.yaml --model.init_args.model="$P" \
  --model.init_args.output_dir="$R" --trainer.default_root_dir="$R" --data.init_args.max_games=32 > "$D/roll.log" 2>&1
export BASE=$D/crn EXP
experiments/dpo_oracle.sh "sft$E-s$SEED-oracle" "$R" "$P" --model.init_args.prm=oracle \
  --model.init_args.candidates=distinct --model.init_args.beta=0.3 --model.init_args.lr=1e-4
if [ ! -f "$D/prm/model/head.pt" ]; then
  $AGENTPRM fit -c configs/prm/absolute.yaml --model.init_args.model="$P" --data.init_args.rollouts="[$R]" \
    --trainer.max_epochs=1 --trainer.default_root_dir="$D/prm" --model.init_args.output_dir="$D/prm/model" > "$D/prm.log" 2>&1
fi
experiments/dpo_oracle.sh "sft$E-s$SEED-mc" "$R" "$P" --model.init_args.prm="$D/prm/model"
