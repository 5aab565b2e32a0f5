#!/usr/bin/env bash
# Brings up the lab's external fixtures (directory, ticket DB, internet/Google sink on ext) with the
# credentials of the lab stack: Pulumi.lab.yaml is the single source of truth for them.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cache=${LAB_CACHE:-/var/cache/mailinfra/lab}/fixtures
install -d -m 700 "$cache"
# a fresh checkout has no lab stack in its state backend yet (its config is in Pulumi.lab.yaml)
"$repo/scripts/pulumi" stack select --create --stack lab >/dev/null
write_secret() {  # $1 stack key, $2 fixture password file
    local value
    value=$("$repo/scripts/pulumi" config get "mailinfra:$1" --stack lab)
    if [ ! -f "$cache/$2" ] || [ "$(cat "$cache/$2")" != "$value" ]; then
        (umask 077; printf '%s' "$value" > "$cache/$2.tmp" && mv "$cache/$2.tmp" "$cache/$2")
    fi
}
# the program reloads the lab DNS through this fixed path, whichever checkout it runs from
run_dir=${LAB_RUN:-/var/tmp/mailinfra-lab}
install -d "$run_dir"
printf '#!/bin/sh\nexec %q dns-reload "$@"\n' "$repo/lab/lab.sh" > "$run_dir/dns-reload.tmp"
chmod 755 "$run_dir/dns-reload.tmp" && mv "$run_dir/dns-reload.tmp" "$run_dir/dns-reload"
write_secret ldapPassword ldap-eximagent.password
write_secret otrsDbPassword otrs-exim.password
"$repo/lab/fixtures.sh" up
# Warm the apt proxy's indexes once, serially: lab hosts converging in parallel then get them from the
# cache (FreshIndexMaxAge) instead of racing to refresh the same InRelease (an apt-cacher-ng bug).
ssh -F "${LAB_CACHE:-/var/cache/mailinfra/lab}/ssh_config" ext 'timeout 60 apt-get -q update >/dev/null' || echo "warning: apt index warm-up failed" >&2
