#!/usr/bin/env bash
# Run every algorithm in algos/ on its default env and gather the results into one table.
#
#   ./run_all.sh                       default budgets, seeds 1 2 3
#   ./run_all.sh --quick               a few seconds per algorithm (a smoke run; used by the tests)
#   ./run_all.sh --seeds "1 2" -j 2    pick the seeds; run two jobs at a time
#   ./run_all.sh --only "dqn ddqn"     a subset of the algorithms
#
# Writes runs/results.jsonl (one summary line per run), runs/results.md (the table), logs in
# runs/logs/, prints the table, and exits non-zero if any run failed or missed its threshold
# (in --quick mode only crashes count: tiny budgets learn nothing).
set -uo pipefail
cd "$(dirname "$0")"

SEEDS="1 2 3"; JOBS=1; QUICK=0; ONLY=""; OUT=runs
while [[ $# -gt 0 ]]; do
  case "$1" in
    --quick) QUICK=1; shift ;;
    --seeds) SEEDS="$2"; shift 2 ;;
    -j|--jobs) JOBS="$2"; shift 2 ;;
    --only) ONLY="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "run_all.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
[[ "$JOBS" =~ ^[1-9][0-9]*$ ]] || { echo "run_all.sh: -j needs a positive integer, got '$JOBS'" >&2; exit 2; }

# Per benchmark entry: the file it runs, extra flags for the benchmark run, flags for --quick,
# and the threshold its issue set. An entry is a file name, or file@env for a second env.
declare -A FILE FULL QUICKF THRESH
FILE[tabular_q]=tabular_q; FULL[tabular_q]="--eval-episodes 1000"; THRESH[tabular_q]=0.70
QUICKF[tabular_q]="--total-episodes 200"
for f in dqn ddqn; do
  FILE[$f]=$f; FULL[$f]=""; THRESH[$f]=475
  QUICKF[$f]="--total-timesteps 1500 --learning-starts 500 --eval-frequency 0"
done
FILE[reinforce]=reinforce; FULL[reinforce]=""; THRESH[reinforce]=475
QUICKF[reinforce]="--total-timesteps 2000 --eval-frequency 0"
FILE[a2c]=a2c; FULL[a2c]=""; THRESH[a2c]=475
QUICKF[a2c]="--total-timesteps 2048 --eval-frequency 0"
FILE[ppo]=ppo; FULL[ppo]=""; THRESH[ppo]=475
QUICKF[ppo]="--total-timesteps 2048 --eval-frequency 0"
FILE[ppo@Pendulum-v1]=ppo; THRESH[ppo@Pendulum-v1]=-400
FULL[ppo@Pendulum-v1]="--env-id Pendulum-v1 --total-timesteps 300000 --gamma 0.9 --gae-lambda 0.95 --num-steps 256 \
--num-minibatches 8 --update-epochs 10 --target-return -400 --eval-frequency 30000"
QUICKF[ppo@Pendulum-v1]="--env-id Pendulum-v1 --total-timesteps 2048 --eval-frequency 0"
FILE[ddpg]=ddpg; FULL[ddpg]="--target-return -200"; THRESH[ddpg]=-200
QUICKF[ddpg]="--total-timesteps 1000 --learning-starts 500 --eval-frequency 0 --eval-episodes 2"
FILE[maddpg]=maddpg; FULL[maddpg]=""; THRESH[maddpg]=-17
QUICKF[maddpg]="--total-timesteps 500 --learning-starts 200 --batch-size 64 --eval-frequency 0 --eval-episodes 5"

ALGOS=()
for entry in tabular_q dqn ddqn reinforce a2c ppo ppo@Pendulum-v1 ddpg maddpg; do
  [[ -n "${FILE[$entry]:-}" && -f "algos/${FILE[$entry]}.py" ]] || continue
  [[ -z "$ONLY" || " $ONLY " == *" $entry "* || " $ONLY " == *" ${FILE[$entry]} "* ]] || continue
  ALGOS+=("$entry")
done

mkdir -p "$OUT/logs"
STAMP=$(date +%s)
T0=$SECONDS
RESULTS="$OUT/results.jsonl"; : > "$RESULTS"
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1   # one thread per training process; -j sets the parallelism

run_one() {  # entry seed -> runs/logs/<entry>__<seed>__<stamp>.{log,json,rc}
  local algo=$1 seed=$2 flags base="$OUT/logs/${1}__${2}__$STAMP"
  if [[ $QUICK == 1 ]]; then flags=${QUICKF[$algo]:-}; else flags=${FULL[$algo]:-}; fi
  # shellcheck disable=SC2086  # flags are words on purpose
  python "algos/${FILE[$algo]}.py" --seed "$seed" --log-dir "$OUT/bench" $flags > "$base.log" 2>&1
  local rc=$?
  echo "$rc" > "$base.rc"
  if [[ $rc == 0 ]]; then tail -n 1 "$base.log" > "$base.json"; fi
  echo "  $algo seed $seed: exit $rc  ($base.log)"
}

echo "run_all.sh: ${ALGOS[*]} x seeds {$SEEDS}, $JOBS at a time$([[ $QUICK == 1 ]] && echo ', quick')"
for algo in "${ALGOS[@]}"; do
  for seed in $SEEDS; do
    while [[ $(jobs -rp | wc -l) -ge $JOBS ]]; do wait -n; done
    run_one "$algo" "$seed" &
  done
done
wait

FAILED=0
for algo in "${ALGOS[@]}"; do
  for seed in $SEEDS; do
    base="$OUT/logs/${algo}__${seed}__$STAMP"
    if [[ "$(cat "$base.rc" 2>/dev/null)" == 0 ]]; then
      python -c 'import json,sys; d=json.loads(open(sys.argv[1]).read()); d["threshold"]=float(sys.argv[2]); print(json.dumps(d))' \
        "$base.json" "${THRESH[$algo]}" >> "$RESULTS" || FAILED=1
    else
      FAILED=1
      echo "{\"algo\": \"$algo\", \"seed\": $seed, \"failed\": true, \"log\": \"$base.log\"}" >> "$RESULTS"
    fi
  done
done

python - "$RESULTS" "$OUT/results.md" "$QUICK" <<'PY'
import json, statistics as st, sys
from collections import defaultdict
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
quick = sys.argv[3] == "1"
by = defaultdict(list)
for r in rows:
    by[(r["algo"].split("/")[0], r.get("env_id", "-"))].append(r)
head = ("| algo | env | budget | eval mean ± std over seeds | worst seed | steps to threshold | seconds to threshold "
        "| SPS | threshold | passed |\n|---|---|---|---|---|---|---|---|---|---|")
lines, n_pass, n_all = [head], 0, 0
for (algo, _env), rs in by.items():
    ok = [r for r in rs if not r.get("failed")]
    n_all += len(rs)
    if not ok:
        lines.append(f"| {algo} | - | - | crashed | - | - | - | - | - | 0/{len(rs)} |")
        continue
    means = [r["eval_return_mean"] for r in ok]
    thr = ok[0]["threshold"]
    passed = [r for r in ok if r["eval_return_mean"] >= thr]
    n_pass += len(passed)
    worst = min(ok, key=lambda r: r["eval_return_mean"])
    # the first evaluation (periodic or final) whose mean reached this entry's threshold: [step, seconds, mean, std]
    first = [next((e for e in r.get("evals", []) if e[2] >= thr), None) for r in ok]
    solved = [e for e in first if e is not None]
    steps = f"{st.median(e[0] for e in solved):,.0f} (median of {len(solved)})" if solved else "-"
    secs = f"{st.median(e[1] for e in solved):.0f}" if solved else "-"
    budget = f"{ok[0]['total_episodes']:,} episodes" if "total_episodes" in ok[0] else f"{ok[0]['total_timesteps']:,} steps"
    sd = st.pstdev(means) if len(means) > 1 else 0.0
    lines.append(
        f"| {algo} | {ok[0]['env_id']} | {budget} | {st.mean(means):.2f} ± {sd:.2f} | "
        f"{worst['eval_return_mean']:.2f} (seed {worst['seed']}) | {steps} | {secs} | "
        f"{st.median(r['sps'] for r in ok):,.0f} | {thr:g} | {len(passed)}/{len(rs)} |"
    )
lines.append("")
lines.append(f"{n_pass}/{n_all} algorithm x seed runs reached their threshold" + (" (quick mode: budgets too small to learn)" if quick else ""))
text = "\n".join(lines)
open(sys.argv[2], "w").write(text + "\n")
print(text)
if not quick and n_pass < n_all:
    sys.exit(1)
PY
TABLE_RC=$?
echo "run_all.sh: $(( SECONDS - T0 )) s wall for ${#ALGOS[@]} entries x seeds {$SEEDS} at -j $JOBS"
[[ $FAILED == 0 && $TABLE_RC == 0 ]] || { echo "run_all.sh: some runs failed (see $OUT/logs/)" >&2; exit 1; }
