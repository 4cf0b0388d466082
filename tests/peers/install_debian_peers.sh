#!/usr/bin/env bash
# Install the Debian packages of the test peers if any is missing (`make peers`).
#   nginx-light (nginx), tinyproxy (tinyproxy), dante-server (danted)
# Fast and silent when everything is there.  Runs `apt-get update` only when a
# package is missing.  Not root and something missing: says what, exits 1.
# The packages' services are NOT started (policy-rc.d): the tests run their own
# instances on 127.0.0.1, and a stray nginx on :80 or tinyproxy on :8888 helps nobody.
set -euo pipefail

PEERS=("nginx:nginx-light" "tinyproxy:tinyproxy" "danted:dante-server")
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

missing=()
for pair in "${PEERS[@]}"; do
    bin=${pair%%:*} pkg=${pair#*:}
    command -v "$bin" >/dev/null 2>&1 || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "peers: missing Debian packages: ${missing[*]}"
if [ "$(id -u)" != 0 ]; then
    echo "peers: not root; install them with: sudo apt-get install -y ${missing[*]}" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
policy=/usr/sbin/policy-rc.d
made_policy=
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy"
    chmod 755 "$policy"
    made_policy=1
fi
cleanup() { if [ -n "$made_policy" ]; then rm -f "$policy"; fi; }
trap cleanup EXIT

apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" </dev/null

for pair in "${PEERS[@]}"; do
    bin=${pair%%:*}
    command -v "$bin" >/dev/null 2>&1 || { echo "peers: $bin still missing" >&2; exit 1; }
done
echo "peers: installed ${missing[*]}"
