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
