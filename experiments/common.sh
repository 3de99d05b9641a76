# Shared helpers of the experiment scripts (source it; run from anywhere, it works in the repo root).
# Every evaluation samples at T = 1 in admissible mode with the evaluation seed 0, so two policies
# evaluated by these helpers meet the same games with the same random numbers (common random
# numbers): `agentprm compare A B` then gives their paired difference.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
AGENTPRM=${AGENTPRM:-.venv/bin/agentprm}
EXP=${EXP:-runs/exp}

# heldout MODEL OUT EPISODES_PER_GAME [extra overrides…]: the 48 valid_unseen games
heldout() {
  local model=$1 out=$2 rpg=$3; shift 3
  $AGENTPRM test -c configs/eval/quickstart.yaml --model.init_args.model="$model" \
    --model.init_args.greedy=false --model.init_args.seed=0 --model.init_args.prm=null \
    --data.init_args.rollouts_per_game="$rpg" --model.init_args.output_dir="$out" "$@" > "$out.log" 2>&1
}

# train_games MODEL OUT EPISODES_PER_GAME GAMES: the first GAMES training games (those the
# quickstart's rollouts practise on)
train_games() {
  local model=$1 out=$2 rpg=$3 games=$4; shift 4
  heldout "$model" "$out" "$rpg" --data.init_args.split=train --data.init_args.max_games="$games" "$@"
}

# rate OUT: "success won/episodes mean-actions" of an evaluation folder
rate() {
  python3 -c "import json,sys; s=json.load(open(sys.argv[1]+'/summary.json')); print(f\"{s['success_rate']:.3f} {s['won']}/{s['episodes']} {s['mean_actions']:.1f}\")" "$1"
}

# The DPO settings of sections 6-10: beta 0.3, lr 1e-4 (60 steps, from configs/policy/quickstart.yaml)
DPO_SETTINGS=(--model.init_args.beta=0.3 --model.init_args.lr=1e-4)

# prior_only POLICY OUT: the sharpening control's scorer, the likelihood prior with a zero head and
# no training (score = log POLICY(response | state)), saved as a PRM directory (skipped if there)
prior_only() {
  [ -f "$2/head.pt" ] || .venv/bin/python -c 'import sys
from agentprm.prm import PRMModule
PRMModule(sys.argv[1], head_init_std=0.0, likelihood_prior=1.0)._save(sys.argv[2])' "$1" "$2"
}

# dpo_seeded NAME ROLLOUTS POLICY SEED PRM [overrides…]: experiments/dpo_oracle.sh with the DPO
# settings of sections 6-9 (60 steps, beta 0.3, lr 1e-4, seeded by SEED) against the scorer PRM,
# paired with the policy's evaluations in $BASE
dpo_seeded() {
  local name=$1 rollouts=$2 policy=$3 seed=$4 prm=$5; shift 5
  experiments/dpo_oracle.sh "$name" "$rollouts" "$policy" --model.init_args.prm="$prm" \
    "${DPO_SETTINGS[@]}" --seed_everything="$seed" \
    --model.init_args.seed="$seed" "$@"
}

# pooled BASE RUN SEED…: the runs $EXP/dpo/RUN-seedS against the policy's evaluations in BASE,
# pooled by game (experiments/pool_seeds.py), held-out then training games
pooled() {
  local base=$1 run=$2 split s; shift 2
  for split in eval4 train4; do
    .venv/bin/python experiments/pool_seeds.py "$base/pi0-$split" $(for s in "$@"; do echo "$EXP/dpo/$run-seed$s/$split"; done)
  done
}
