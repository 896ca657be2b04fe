#!/usr/bin/env bash
# System packages the test suite needs beyond .venv: a real Prometheus server (and promtool)
# that the metrics tests scrape with. Debian's package; needs root (CI runs as root).
set -euo pipefail
if command -v prometheus >/dev/null && command -v promtool >/dev/null; then
    echo "[test-deps] prometheus $(prometheus --version 2>&1 | head -1 | awk '{print $3}') present"
    exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
    echo "[test-deps] prometheus missing; install it (apt-get install prometheus) or run as root" >&2
    exit 1
fi
echo "[test-deps] installing prometheus (Debian package)"
# The package would start its own daemon on :9090 where an init system runs; the tests start
# their own servers. Debian's policy-rc.d hook (exit 101: "action forbidden") keeps the package
# from starting one, so nothing needs stopping afterwards (and no other prometheus is touched).
POLICY=/usr/sbin/policy-rc.d
if [[ ! -e "$POLICY" ]]; then
    printf '#!/bin/sh\nexit 101\n' > "$POLICY"
    chmod +x "$POLICY"
    trap 'rm -f "$POLICY"' EXIT
fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
