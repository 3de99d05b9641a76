#!/usr/bin/env bash
# PRM variants from pi0 on the same rollouts (32 training games x 4, search-expert labels on 2
# sampled turns per episode), each probed at pi0's own held-out states: expert-first on the
# demonstrations and agreement with the oracle's ranking (issue 15, item 3).
#   experiments/prm_variants.sh [POLICY] [STATES]   (STATES: an evaluation folder of the policy)
source "$(dirname "$0")/common.sh"
P=${1:-$EXP/sft-s0/model}; STATES=${2:-$EXP/ladder/pi0}; OUT=$EXP/prmv; R=$OUT/roll-ref; mkdir -p "$OUT"
[ -f "$STATES/summary.json" ] || heldout "$P" "$STATES" 8
if [ ! -f "$R/manifest.json" ]; then
  s=$(date +%s)
  $AGENTPRM predict -c configs/rollout/quickstart.yaml --model.init_args.model="$P" \
    --model.init_args.output_dir="$R" --data.init_args.max_games=32 --model.init_args.seed=1 \
    --model.init_args.reference_turns=2 > "$R.log" 2>&1
  echo "rollouts with reference labels: $(( $(date +%s) - s )) s"
fi
probe() { # name prm
  [ -f "$OUT/$1.probe.json" ] || $AGENTPRM probe --prm "$2" --policy "$P" --states "$STATES" --max-states 300 --output "$OUT/$1.probe.json" > /dev/null 2>&1
  python3 - "$1" "$OUT/$1.probe.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[2])); o = r["oracle"]
print(f"{sys.argv[1]}: expert-first {r['prm_top1']:.3f} mean rank {r['prm_mean_rank']:.2f} | oracle-best first "
      f"{o['prm_top1']:.3f} pair acc {o['prm_pair_acc']:.3f} Q ratio {o['prm_q_ratio']:.3f} "
      f"beats pi0 {o['prm_beats_policy']:.3f} | pi0 oracle-best first {o['policy_top1']:.3f}")
PY
}
fit() { # name config overrides…
  local n=$1 c=$2; shift 2; local s; s=$(date +%s)
  [ -f "$OUT/$n/prm/config.json" ] || $AGENTPRM fit -c "$c" --model.init_args.model="$P" \
    --data.init_args.rollouts="[$R]" --trainer.default_root_dir="$OUT/$n" \
    --model.init_args.output_dir="$OUT/$n/prm" --trainer.max_epochs=1 "$@" > "$OUT/$n.log" 2>&1
  echo "$n: fit $(( $(date +%s) - s )) s"; probe "$n" "$OUT/$n/prm"
}
fit mc-abs configs/prm/absolute.yaml
fit mc-rel configs/prm/relative.yaml
fit ref-abs configs/prm/absolute.yaml --model.init_args.objective.init_args.target=reference
fit ref-rel configs/prm/relative.yaml --model.init_args.objective.init_args.target=reference
probe oracle oracle
probe oracle-p0.2 "oracle?noise=0.2"
