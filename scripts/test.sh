#!/usr/bin/env bash
# Run the whole test suite from a fresh machine: installs what is missing, starts the
# Docker engine for the deploy tests, then runs pytest (extra arguments go to pytest).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --test

if ! docker info >/dev/null 2>&1; then
    echo "==> starting the Docker engine"
    sudo_cmd=()
    [[ $(id -u) -ne 0 ]] && sudo_cmd=(sudo)
    "${sudo_cmd[@]}" sh -c 'nohup dockerd >/var/log/dockerd.log 2>&1 &'
    for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
    docker info >/dev/null 2>&1 || { echo "dockerd did not start; see /var/log/dockerd.log" >&2; exit 1; }
fi

export CKERNEL_REQUIRE_EXT=1
exec .venv/bin/python -m pytest "$@"
