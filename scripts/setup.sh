#!/usr/bin/env bash
# Prepare this machine for particle-sim: system packages and a virtualenv in .venv.
#
#   scripts/setup.sh            runtime only (broker + CLI + workers), for the quick start
#   scripts/setup.sh --test     also what the test suite needs (Docker engine, mmdebstrap, ...)
#
# Debian/Ubuntu only (apt). Safe to run again: it installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

want_test=0
[[ "${1:-}" == "--test" ]] && want_test=1

sudo_cmd=()
[[ $(id -u) -ne 0 ]] && sudo_cmd=(sudo)

apt_packages=(mosquitto mosquitto-clients python3-venv gcc python3-dev)
if (( want_test )); then
    apt_packages+=(docker.io mmdebstrap iproute2 curl openssl openssh-client git)
fi

missing=()
for pkg in "${apt_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if (( ${#missing[@]} )); then
    echo "==> installing system packages: ${missing[*]}"
    "${sudo_cmd[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

python=${PYTHON:-python3}
if [[ ! -x .venv/bin/python ]]; then
    echo "==> creating .venv with $($python --version)"
    "$python" -m venv .venv
fi
extras="."
(( want_test )) && extras=".[test,deploy,dev,analysis]"
echo "==> installing particle-sim into .venv (builds the Cython kernels)"
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e "$extras"
if (( want_test )); then
    # The tests run sweeps of a plugin kind (pip fetches its build requirements).
    echo "==> installing the example kind plugin (examples/fput-chain)"
    .venv/bin/python -m pip install -q ./examples/fput-chain
fi
