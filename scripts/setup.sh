#!/usr/bin/env bash
# Installs everything this project needs on a fresh Debian 12 machine (idempotent, cached):
# lab prerequisites and lab network (lab/lab.sh prepare), npm packages, the Pulumi engine.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
t0=$(date +%s)
step() { echo "[setup $(( $(date +%s) - t0 ))s] $*" >&2; }

step "lab prerequisites, bridge, apt proxy, lab DNS, base layers"
lab/lab.sh prepare
if ! command -v openssl >/dev/null; then apt-get install -y -q openssl >/dev/null; fi
# testssl.sh judges every TLS port of the lab from here (test/lab/tls.test.ts)
if ! command -v testssl >/dev/null; then apt-get install -y -q --no-install-recommends testssl.sh >/dev/null; fi

step "npm packages"
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
    npm ci --no-audit --no-fund --loglevel=error
fi

step "Pulumi engine"
scripts/engine.sh >/dev/null
step "done"
