#!/usr/bin/env bash
# Bare lab hosts and an empty lab stack: what `pulumi up --stack lab` must converge from.
#   scripts/lab-fresh.sh HOST...     (hosts are reset to bare, booted; fixtures up; stack state dropped)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
for h in "$@"; do "$repo/lab/lab.sh" reset "$h" >/dev/null; done
"$repo/lab/lab.sh" up "$@"
"$repo/scripts/lab-fixtures.sh"
"$repo/scripts/pulumi" stack rm --stack lab --force --preserve-config --yes >/dev/null 2>&1 || true
"$repo/scripts/pulumi" stack select --create --stack lab
# which checkout's state describes the fleet now (tests reuse a converged fleet only if it is theirs)
echo "$repo" > "${LAB_RUN:-/var/tmp/mailinfra-lab}/fleet-owner"
