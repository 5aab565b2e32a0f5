#!/usr/bin/env bash
# The main job: fresh machine → bare lab hosts → real `pulumi up --refresh --stack lab` (the converge verb:
# it also repairs drift and rebuilds re-imaged hosts) → smoke mail → idempotency.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
hosts=(mchenry sanger lily otrs streber)
t0=$(date +%s)
declare -a summary
mark() { summary+=("$(printf '%-36s %5ss' "$1" "$(( $(date +%s) - $2 ))")"); }

s=$(date +%s); scripts/setup.sh; mark "setup (packages, lab, engine)" "$s"

s=$(date +%s)
scripts/lab-fresh.sh "${hosts[@]}"
mark "bare lab hosts + fixtures up" "$s"

s=$(date +%s); scripts/pulumi up --refresh --stack lab --yes --skip-preview --non-interactive; mark "pulumi up --refresh (bare -> converged)" "$s"
s=$(date +%s); node scripts/run-ts.js scripts/smoke.ts lab; mark "smoke mail" "$s"
s=$(date +%s); scripts/pulumi preview --refresh --stack lab --expect-no-changes --non-interactive >/dev/null; mark "preview --refresh, expecting no changes" "$s"

echo
echo "== mailinfra lab: converged and delivering mail =="
printf '  %s\n' "${summary[@]}"
printf '  %-36s %5ss\n' "total" "$(( $(date +%s) - t0 ))"
