set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
installed() { dpkg-query -W -f='${db:Status-Abbrev}' "$1" 2>/dev/null | grep -q '^ii'; }
if installed znuny && installed otrs2; then exit 0; fi
apt_opts="-o Acquire::http::Timeout=30 -o Acquire::Retries=3"
for try in 1 2 3; do timeout 120 apt-get $apt_opts -q update >/dev/null && break; sleep 2; done
start=$(date +%s)
timeout 1200 apt-get $apt_opts install -y -q --no-install-recommends -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold znuny/bookworm-backports otrs2/bookworm-backports 2>&1 | grep -E '^(E:|dpkg:|Error)' || true
installed znuny && installed otrs2 || { echo "znuny did not install (see apt output above)" >&2; exit 1; }
echo "znuny installed in $(( $(date +%s) - start )) s"

