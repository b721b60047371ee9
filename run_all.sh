#!/usr/bin/env bash
# Run the algorithms in algos/ and gather the results into one table and one picture of learning curves.
#
#   ./run_all.sh                       the default table: each file on its default env, seeds 1 2 3
#   ./run_all.sh --suite               the standard suite: each file on the standard envs of its action space
#   ./run_all.sh --quick               a few seconds per entry (a smoke run; used by the tests)
#   ./run_all.sh --seeds "1 2" -j 2    pick the seeds; run two jobs at a time
#   ./run_all.sh --only "dqn ppo@Hopper-v5"   a subset: entry names or file names
#   ./run_all.sh --suite --list        print the commands it would run, and run nothing
#
# The entries, their flags and thresholds come from tests/facts.toml, which the tests read too.
# Writes OUT/results.jsonl (one summary line per run), OUT/results.md (the table), OUT/curves.png
# (greedy eval return against env steps and against training seconds, mean ± std over seeds, one row
# per entry), logs in OUT/logs/; prints the table; exits non-zero if any run failed or missed its
# threshold (with --quick only crashes count: tiny budgets learn nothing). OUT is runs/ unless --out.
set -uo pipefail
cd "$(dirname "$0")"

SEEDS="1 2 3"; JOBS=1; QUICK=0; ONLY=""; OUT=runs; GROUP=table; LIST=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --quick) QUICK=1; shift ;;
    --suite) GROUP=suite; shift ;;
    --list) LIST=1; shift ;;
    --seeds) SEEDS="$2"; shift 2 ;;
    -j|--jobs) JOBS="$2"; shift 2 ;;
    --only) ONLY="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "run_all.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
[[ "$JOBS" =~ ^[1-9][0-9]*$ ]] || { echo "run_all.sh: -j needs a positive integer, got '$JOBS'" >&2; exit 2; }

# One line per entry: name, file, flags, threshold, from tests/facts.toml (split at \x1f, not a tab:
# read collapses runs of whitespace separators, and flags may be empty).
declare -A FILE FLAGS THRESH
ENTRIES=()
while IFS=$'\x1f' read -r name file flags thresh; do
  FILE[$name]=$file; FLAGS[$name]=$flags; THRESH[$name]=$thresh; ENTRIES+=("$name")
done < <(python - "$GROUP" "$QUICK" "$ONLY" <<'PY'
import sys, tomllib
group, quick, only = sys.argv[1], sys.argv[2] == "1", sys.argv[3].split()
facts = tomllib.load(open("tests/facts.toml", "rb"))
for e in facts[group]:
    if not e.get(group, True) or (only and e["name"] not in only and e["file"] not in only):
        continue
    if group == "suite":  # env and budget given; evaluate 10 times along the way
        env = f"--env-id {e['env']}"
        flags = f"{env} {facts['files'][e['file']]['quick']}" if quick else \
            f"{env} --total-timesteps {e['budget']} --eval-frequency {e['budget'] // 10} {e.get('flags', '')}"
    else:
        flags = e.get("quick", facts["files"][e["file"]]["quick"]) if quick else e["flags"]
    print(e["name"], e["file"], flags.strip(), e["threshold"], sep="\x1f")
PY
)
[[ ${#ENTRIES[@]} -gt 0 ]] || { echo "run_all.sh: no entry matches --only '$ONLY'" >&2; exit 2; }
if [[ $LIST == 1 ]]; then
  for entry in "${ENTRIES[@]}"; do
    for seed in $SEEDS; do echo "python algos/${FILE[$entry]}.py --seed $seed ${FLAGS[$entry]}"; done
  done
  exit 0
fi

mkdir -p "$OUT/logs"
STAMP=$(date +%s)
T0=$SECONDS
RESULTS="$OUT/results.jsonl"; : > "$RESULTS"
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1   # one thread per training process; -j sets the parallelism

run_one() {  # entry seed -> OUT/logs/<entry>__<seed>__<stamp>.{log,json,rc}
  local entry=$1 seed=$2 base="$OUT/logs/${1}__${2}__$STAMP" start=$SECONDS
  # shellcheck disable=SC2086  # flags are words on purpose
  python "algos/${FILE[$entry]}.py" --seed "$seed" --log-dir "$OUT/bench" ${FLAGS[$entry]} > "$base.log" 2>&1
  local rc=$?
  echo "$rc $(( SECONDS - start ))" > "$base.rc"  # exit status, wall seconds of the whole run
  if [[ $rc == 0 ]]; then tail -n 1 "$base.log" > "$base.json"; fi
  echo "  $entry seed $seed: exit $rc  ($base.log)"
}

echo "run_all.sh: ${ENTRIES[*]} x seeds {$SEEDS}, $JOBS at a time$([[ $QUICK == 1 ]] && echo ', quick')"
for entry in "${ENTRIES[@]}"; do
  for seed in $SEEDS; do
    while [[ $(jobs -rp | wc -l) -ge $JOBS ]]; do wait -n; done
    run_one "$entry" "$seed" &
  done
done
wait

FAILED=0
for entry in "${ENTRIES[@]}"; do
  for seed in $SEEDS; do
    base="$OUT/logs/${entry}__${seed}__$STAMP"
    read -r rc wall 2>/dev/null < "$base.rc" || rc=missing
    if [[ "$rc" == 0 ]]; then
      python -c 'import json,sys; d=json.loads(open(sys.argv[1]).read()); d.update(entry=sys.argv[2], threshold=float(sys.argv[3]), flags=sys.argv[4], wall_seconds=int(sys.argv[5])); print(json.dumps(d))' \
        "$base.json" "$entry" "${THRESH[$entry]}" "${FLAGS[$entry]}" "$wall" >> "$RESULTS" || FAILED=1
    else
      FAILED=1
      echo "{\"algo\": \"${FILE[$entry]}\", \"entry\": \"$entry\", \"seed\": $seed, \"failed\": true, \"log\": \"$base.log\"}" >> "$RESULTS"
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
    by[r["entry"]].append(r)
head = ("| entry | env | budget | eval mean ± std over seeds | worst seed | steps to threshold | seconds to threshold "
        "| train / wall seconds per run | SPS | threshold | passed |\n|---|---|---|---|---|---|---|---|---|---|---|")
lines, n_pass, n_all = [head], 0, 0
for entry, rs in by.items():
    ok = [r for r in rs if not r.get("failed")]
    n_all += len(rs)
    if not ok:
        lines.append(f"| {entry} | - | - | crashed | - | - | - | - | - | - | 0/{len(rs)} |")
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
        f"| {entry} | {ok[0]['env_id']} | {budget} | {st.mean(means):.2f} ± {sd:.2f} | "
        f"{worst['eval_return_mean']:.2f} (seed {worst['seed']}) | {steps} | {secs} | "
        f"{st.median(r['train_seconds'] for r in ok):.0f} / {st.median(r['wall_seconds'] for r in ok):.0f} | "
        f"{st.median(r['sps'] for r in ok):,.0f} | {thr:g} | "
        f"{len(passed)}/{len(rs)} |"
    )
lines.append("")
lines.append(f"{n_pass}/{n_all} entry x seed runs reached their threshold" + (" (quick mode: budgets too small to learn)" if quick else ""))
text = "\n".join(lines)
open(sys.argv[2], "w").write(text + "\n")
print(text)
if not quick and n_pass < n_all:
    sys.exit(1)
PY
TABLE_RC=$?

python - "$RESULTS" "$OUT/curves.png" <<'PY' || FAILED=1
# The learning curves: at each evaluation (the k-th of every seed comes at the same step), the mean and
# std over seeds of the greedy eval return, against env steps and against training seconds (mean over seeds).
import json, sys
from collections import defaultdict
import matplotlib
matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt
import numpy as np
by = defaultdict(list)
for line in open(sys.argv[1]):
    r = json.loads(line)
    if not r.get("failed") and r.get("evals"):
        by[r["entry"]].append(r)
fig, axes = plt.subplots(max(len(by), 1), 2, figsize=(10, 2.6 * max(len(by), 1)), squeeze=False)
for row, (entry, rs) in zip(axes, by.items()):
    k = min(len(r["evals"]) for r in rs)
    evals = np.array([r["evals"][:k] for r in rs], dtype=float)  # (seeds, k, [step, seconds, mean, std])
    mean, std = evals[:, :, 2].mean(0), evals[:, :, 2].std(0)
    for ax, x, label in ((row[0], evals[0, :, 0], "env steps"), (row[1], evals[:, :, 1].mean(0), "training seconds")):
        ax.plot(x, mean, marker="o", markersize=3, label=f"mean of {len(rs)} seed{'s' * (len(rs) > 1)}")
        ax.fill_between(x, mean - std, mean + std, alpha=0.25, label="± std over seeds")
        ax.axhline(rs[0]["threshold"], color="grey", linestyle="--", linewidth=1, label="threshold")
        ax.set(title=f"{entry} on {rs[0]['env_id']}", xlabel=label, ylabel="greedy eval return")
        ax.set_xlim(left=0)
        ax.grid(alpha=0.3)
    row[0].legend(fontsize=7, loc="best")
fig.tight_layout()
fig.savefig(sys.argv[2], dpi=80)
print(f"run_all.sh: learning curves of {len(by)} entries in {sys.argv[2]}")
PY

echo "run_all.sh: $(( SECONDS - T0 )) s wall for ${#ENTRIES[@]} entries x seeds {$SEEDS} at -j $JOBS"
# a crash and a miss need different fixes: say which it was
[[ $FAILED == 0 ]] || { echo "run_all.sh: some runs crashed or wrote no summary (see $OUT/logs/)" >&2; exit 1; }
[[ $TABLE_RC == 0 ]] || { echo "run_all.sh: some runs ended below their threshold (the passed column above)" >&2; exit 1; }
