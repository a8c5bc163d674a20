#!/usr/bin/env bash
# The single-machine quick start, in one command on a fresh Debian/Ubuntu machine:
# installs what is missing (scripts/setup.sh: mosquitto and a .venv with particle-sim),
# starts a local broker and three worker agents in the background, runs the example
# sweep (configs/tasks.yaml, about a minute), and prints its results.
#
#   scripts/quickstart.sh [TASKFILE]
#
# Afterwards the local cluster keeps running for more `simctl run`s; stop it with
#   .venv/bin/simctl local down
set -euo pipefail
cd "$(dirname "$0")/.."
taskfile=${1:-configs/tasks.yaml}

scripts/setup.sh
simctl=.venv/bin/simctl

echo "==> starting a local broker and three worker agents"
"$simctl" local up --workers 3

echo "==> running $taskfile"
rc=0
summary=$("$simctl" run "$taskfile" --json) || rc=$?
if [[ -z "$summary" ]]; then
    echo "simctl run failed (exit $rc) before the run finished; see the message above" >&2
    exit "$rc"
fi
run_id=$(printf '%s' "$summary" | .venv/bin/python -c 'import json, sys; print(json.load(sys.stdin)["run_id"])')

echo "==> results of run $run_id"
"$simctl" results "$run_id"
printf '%s' "$summary" | .venv/bin/python -c '
import json, sys
s = json.load(sys.stdin)
reused = " ({reused} reused from an earlier run: --no-reuse runs them)" if s["reused"] else ""
print(("\nrun {run_id}: {state}, {done}/{tasks} done" + reused
       + ", {failed} failed, {duplicates} duplicates, {elapsed_s:.1f} s").format(**s))'

# The hints as command/description pairs, the descriptions aligned in one column however long
# the run id (and so the results command) is.
hints=(
    "$simctl status" "workers and runs"
    "$simctl results $run_id --format csv" "results for analysis (also --format json --observables)"
    "$simctl monitor --interval 5" "live view (Ctrl-C leaves)"
    "$simctl local down" "stop the local broker and workers"
)
width=0
for ((i = 0; i < ${#hints[@]}; i += 2)); do
    (( ${#hints[i]} > width )) && width=${#hints[i]}
done
printf '\nMore:\n'
for ((i = 0; i < ${#hints[@]}; i += 2)); do
    printf '  %-*s   %s\n' "$width" "${hints[i]}" "${hints[i + 1]}"
done
exit "$rc"
