#!/bin/bash
# fixtures.sh - external test fixtures for the mail-infra lab, all on the lab host ext (198.51.100.20):
# directory server (slapd, ldap://198.51.100.20, dc=corp,dc=wikimedia,dc=test), OTRS ticket DB (MariaDB,
# 198.51.100.20:3306, otrs.system_address), mail sink / "Google Apps" / "the internet" (Exim on :25 into
# /var/mail/sink/<recipient>/), and their DNS records ($LAB_RUN/dns/10-fixtures.conf).
#
#   fixtures.sh up            boot ext if needed, write DNS records, converge ext (idempotent; about 1 s when done)
#   fixtures.sh status        probe each fixture; exit 1 if one does not answer
#   fixtures.sh reset-data    restore the seed LDAP entries and otrs.system_address rows
#   fixtures.sh sql [SQL]     run SQL as the MariaDB admin in database otrs (SQL from stdin without argument)
#   fixtures.sh ldif          apply LDIF (ldapmodify syntax, changetype: add/modify/delete) from stdin, as root
#   fixtures.sh sink-clear    delete every message in the sink
#
# Secrets (generated once, root 0600, 24 alphanumerics, no trailing newline) in $LAB_CACHE/fixtures/:
#   ldap-eximagent.password   cn=eximagent,ou=other,dc=corp,dc=wikimedia,dc=test (the relays bind as it)
#   ldap-admin.password       cn=admin,dc=corp,dc=wikimedia,dc=test (slapd rootdn)
#   otrs-exim.password        MariaDB 'exim'@'198.51.100.11' and 'exim'@'198.51.100.13' (SELECT on otrs.system_address)
# See lab/README.md, section "Fixtures". Only the host ext is touched; never the product hosts.
set -euo pipefail
export LC_ALL=C

LAB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
LAB_CACHE=${LAB_CACHE:-/var/cache/mailinfra/lab}
LAB_RUN=${LAB_RUN:-/var/tmp/mailinfra-lab}
FIX_SRC=$LAB_DIR/fixtures
FIX_CACHE=$LAB_CACHE/fixtures
FIX_LOCK=${FIX_LOCK:-/run/lock/mailinfra-fixtures.lock}
SSH_CONFIG=$LAB_CACHE/ssh_config
HOST=ext
DNS_FILE=$LAB_RUN/dns/10-fixtures.conf
SECRETS=(ldap-eximagent ldap-admin otrs-exim)
SHIP=(ext-setup.sh seed.ldif otrs.sql exim4.conf sink-deliver)

log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }
die() { printf 'fixtures.sh: %s\n' "$*" >&2; exit 1; }
now_us() { local t=${EPOCHREALTIME/./}; echo "$((10#$t))"; }
secs_since() { local d=$(( $(now_us) - $1 )); printf '%d.%01d' $((d / 1000000)) $(( (d % 1000000) / 100000 )); }

ext_ssh() { ssh -F "$SSH_CONFIG" "$HOST" "$@"; }

take_lock() {  # fd 8; every command that may start a daemon gets 8>&- (see ensure_ext_up)
  mkdir -p "$(dirname "$FIX_LOCK")"
  exec 8>"$FIX_LOCK"
  flock -w 900 8 || die "another fixtures.sh holds $FIX_LOCK"
}

ensure_secrets() {
  local s f pw
  install -d -m 700 "$FIX_CACHE"
  for s in "${SECRETS[@]}"; do
    f=$FIX_CACHE/$s.password
    if [ ! -s "$f" ]; then
      pw=$(head -c 4096 /dev/urandom | tr -dc 'A-Za-z0-9')
      [ "${#pw}" -ge 24 ] || die "could not generate a password"
      (umask 077; printf '%s' "${pw:0:24}" > "$f.tmp" && mv "$f.tmp" "$f")
      log "generated $f"
    fi
    chmod 600 "$f"
  done
}

stamp() {  # everything that defines the converged state of ext
  ( cd "$FIX_SRC" && cat "${SHIP[@]}"; cd "$FIX_CACHE" && for s in "${SECRETS[@]}"; do cat "$s.password"; echo; done ) \
    | sha256sum | cut -c1-16
}

# run ext-setup.sh on ext with the fixture files and secrets shipped in one ssh call (private temp dir on ext)
run_on_ext() {
  local tmp rc=0
  tmp=$(mktemp -d)
  cp -p "${SHIP[@]/#/$FIX_SRC/}" "$tmp/"
  install -d -m 700 "$tmp/secrets"
  for s in "${SECRETS[@]}"; do install -m 600 "$FIX_CACHE/$s.password" "$tmp/secrets/"; done
  # shellcheck disable=SC2016  # $d and $rc are expanded on ext
  tar -C "$tmp" -czf - . | ext_ssh 'd=$(mktemp -d /root/.fixtures.XXXXXX) && tar -xzf - -C "$d" && bash "$d/ext-setup.sh" '"$(printf '%q ' "$@")"'; rc=$?; rm -rf "$d"; exit $rc' || rc=$?
  rm -rf "$tmp"
  return $rc
}

ext_booted() {  # lab.sh's pidfile names a live nspawn (cheaper than an SSH timeout when ext is down)
  local p
  p=$(cat "$LAB_RUN/hosts/$HOST/nspawn.pid" 2>/dev/null) || return 1
  [ "$(cat "/proc/$p/comm" 2>/dev/null)" = systemd-nspawn ]
}

ensure_ext_up() {
  if ext_booted && ext_ssh -o ConnectTimeout=3 true 2>/dev/null; then return 0; fi
  log "ext is not up: lab.sh up ext"
  # 8>&-: nspawn (and unbound, if lab.sh restarts it) must not inherit our lock fd and hold it forever
  "$LAB_DIR/lab.sh" up "$HOST" >&2 8>&-
}

ensure_dns() {
  mkdir -p "$(dirname "$DNS_FILE")"
  if cmp -s "$FIX_SRC/dns.conf" "$DNS_FILE"; then return 0; fi
  install -m 644 "$FIX_SRC/dns.conf" "$DNS_FILE.tmp"
  mv "$DNS_FILE.tmp" "$DNS_FILE"
  log "wrote $DNS_FILE: lab.sh dns-reload"
  if ! "$LAB_DIR/lab.sh" dns-reload >&2 8>&-; then
    rm -f "$DNS_FILE"
    "$LAB_DIR/lab.sh" dns-reload >&2 8>&- || true
    die "the lab DNS refused $FIX_SRC/dns.conf (removed it again)"
  fi
}

cmd_up() {
  local t0
  t0=$(now_us)
  take_lock
  ensure_secrets
  ensure_ext_up
  ensure_dns
  run_on_ext up "$(stamp)"
  log "fixtures up ($(secs_since "$t0") s): ldap://198.51.100.20 mysql://198.51.100.20:3306/otrs smtp://198.51.100.20:25"
}

cmd_status() {
  local rc=0
  [ -f "$FIX_CACHE/otrs-exim.password" ] || die "no secrets in $FIX_CACHE: run fixtures.sh up"
  if [ -f "$DNS_FILE" ] && cmp -s "$FIX_SRC/dns.conf" "$DNS_FILE"; then
    printf '%-8s %-4s %s\n' dnsfile ok "$DNS_FILE"
  else
    printf '%-8s %-4s %s\n' dnsfile FAIL "$DNS_FILE missing or outdated (fixtures.sh up)"; rc=1
  fi
  if ! ext_ssh -o ConnectTimeout=2 true 2>/dev/null; then
    printf '%-8s %-4s %s\n' ext FAIL "198.51.100.20 does not answer SSH (fixtures.sh up)"
    return 1
  fi
  printf '%-8s %-4s %s\n' ext ok "198.51.100.20 (ssh -F $SSH_CONFIG ext)"
  run_on_ext status || rc=1
  return $rc
}

cmd_reset_data() {
  local t0
  t0=$(now_us)
  take_lock
  ensure_secrets
  run_on_ext reset-data
  log "reset-data done ($(secs_since "$t0") s)"
}

cmd_sql() {
  if [ "$#" -gt 0 ]; then
    printf '%s\n' "$*" | ext_ssh mariadb --batch otrs
  else
    ext_ssh mariadb --batch otrs
  fi
}

cmd_ldif() { ext_ssh ldapmodify -Q -Y EXTERNAL -H ldapi:///; }

cmd_sink_clear() {
  # shellcheck disable=SC2016  # expanded on ext
  ext_ssh 'find /var/mail/sink -mindepth 1 -maxdepth 1 -exec rm -rf {} + ; echo "sink cleared"'
}

usage() {
  sed -n '/^#   fixtures.sh/s/^# *//p' "${BASH_SOURCE[0]}"
  exit 2
}

main() {
  [ "$(id -u)" = 0 ] || die "run as root"
  [ -f "$SSH_CONFIG" ] || [ "${1:-}" = up ] || die "no $SSH_CONFIG: run lab/lab.sh up ext or fixtures.sh up"
  local cmd=${1:-}
  [ "$#" -eq 0 ] || shift
  case $cmd in
    up)         cmd_up ;;
    status)     cmd_status ;;
    reset-data) cmd_reset_data ;;
    sql)        cmd_sql "$@" ;;
    ldif)       cmd_ldif ;;
    sink-clear) cmd_sink_clear ;;
    *)          usage ;;
  esac
}

main "$@"
