#!/usr/bin/env bash
# The quickstart's SFT (pi0 kept at its best valid_seen epoch) over seeds, each evaluated on the
# 48 held-out games x 8 sampled episodes and greedily (issue 15, item 4).
#   experiments/sft_seeds.sh [SEEDS…]   (default 0 1 2)
source "$(dirname "$0")/common.sh"
seeds=("$@"); [ ${#seeds[@]} -gt 0 ] || seeds=(0 1 2)
for seed in "${seeds[@]}"; do
  OUT=$EXP/sft-keep-s$seed; s=$(date +%s)
  [ -f "$OUT/policy/config.json" ] || $AGENTPRM fit -c configs/sft/quickstart.yaml --seed_everything="$seed" \
    --trainer.default_root_dir="$OUT" > "$OUT.log" 2>&1
  m=$(date +%s)
  [ -f "$OUT/eval8/summary.json" ] || heldout "$OUT/policy" "$OUT/eval8" 8
  [ -f "$OUT/greedy/summary.json" ] || heldout "$OUT/policy" "$OUT/greedy" 1 --model.init_args.greedy=true
  kept=$(grep -o "kept the weights of step [0-9]* (success [0-9.]*)" "$OUT.log" | tail -1 || true)
  echo "seed $seed: SFT $(( m - s )) s ($kept), sampled $(rate "$OUT/eval8"), greedy $(rate "$OUT/greedy")"
done
