#!/bin/bash
# lab.sh - "bare-metal-like" Debian 12 test hosts for the mail-infra Pulumi program.
#
# Every host is a systemd-nspawn container booting a real systemd, with its own IP on the
# bridge labbr0 (198.51.100.0/24), its own machine-id and SSH host keys, reachable as root
# with the key $LAB_CACHE/id_lab. Hosts get packages through apt-cacher-ng on
# 198.51.100.1:3142 and names from a lab-only unbound on 198.51.100.1:53. The build machine
# does no forwarding and no NAT: hosts reach nothing but 198.51.100.0/24.
#
#   lab.sh prepare            host packages, bridge, apt proxy, lab DNS, base rootfs + layers (cached)
#   lab.sh up [NAME...]       boot hosts (default: all in lab/hosts), wait for systemd over SSH
#   lab.sh down [NAME...]     clean poweroff, upper dirs kept (state survives the next up)
#   lab.sh reset NAME...      down + wipe the host's upper dir (next up = bare host again)
#   lab.sh destroy            down all + delete host state, DNS records, bridge; stop proxy+DNS (caches kept)
#   lab.sh status             hosts and services
#   lab.sh ssh NAME [CMD...]  ssh root@NAME
#   lab.sh dns-reload         regenerate 00-hosts.conf, check the config, reload unbound
#
# See lab/README.md. Environment: LAB_CACHE, LAB_RUN, LAB_HOSTS, MIRROR.
set -euo pipefail
export LC_ALL=C

LAB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
LAB_CACHE=${LAB_CACHE:-/var/cache/mailinfra/lab}
LAB_RUN=${LAB_RUN:-/var/tmp/mailinfra-lab}
LAB_HOSTS=${LAB_HOSTS:-$LAB_DIR/hosts}
LAB_LOCK=${LAB_LOCK:-/run/lock/mailinfra-lab.lock}

SUITE=bookworm
NET=198.51.100
GW=$NET.1
BR=labbr0
BR_MAC=02:00:c6:33:64:01    # fixed: a bridge without one takes the lowest port MAC, which changes as hosts come and go
DOMAIN=lab.test
ZONES=(lab.test wikimedia.test wikipedia.test 100.51.198.in-addr.arpa)
ACNG_PORT=3142
HOST_PKGS=(debootstrap systemd-container iproute2 apt-cacher-ng unbound openssh-client)
BASE_INCLUDE=systemd,systemd-sysv,dbus,openssh-server,iproute2,ca-certificates,netbase
# Bump a revision to force a rebuild of that image (and of everything stacked on it).
BASE_REV=1
LAB_REV=1
declare -A LAYER_REV=([tools]=1)
declare -A LAYER_PKGS=(
  [tools]="swaks libnet-ssleay-perl libio-socket-ssl-perl libauthen-sasl-perl libnet-dns-perl
           openssl python3 sqlite3 curl netcat-openbsd dnsutils iputils-ping"
)

BASE=$LAB_CACHE/base
LAYERS_DIR=$LAB_CACHE/layers
KEY=$LAB_CACHE/id_lab
SSH_CONFIG=$LAB_CACHE/ssh_config
HOST_KEYS=$LAB_RUN/known_hosts   # every lab host's SSH host keys: the lab stack's pins, checked by $SSH_CONFIG
ACNG_CACHE=$LAB_CACHE/apt-cacher-ng
HOSTS_RUN=$LAB_RUN/hosts
DNS_DIR=$LAB_RUN/dns
UNBOUND_DIR=$LAB_RUN/unbound
ACNG_RUN=$LAB_RUN/apt-cacher-ng

log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }
die() { printf 'lab.sh: %s\n' "$*" >&2; exit 1; }
now_us() { local t=${EPOCHREALTIME/./}; echo "$((10#$t))"; }
secs_since() { local d=$(( $(now_us) - $1 )); printf '%d.%01d' $((d / 1000000)) $(( (d % 1000000) / 100000 )); }

# ---------------------------------------------------------------- hosts file
declare -a HOSTS=()
declare -A HIP=() HLAYER=()

load_hosts() {
  [ -r "$LAB_HOSTS" ] || die "hosts file $LAB_HOSTS not found"
  local name ip layer extra n=0 o
  declare -A seen_ip=()
  while read -r name ip layer extra || [ -n "${name:-}" ]; do
    n=$((n + 1))
    case ${name:-} in ''|'#'*) continue ;; esac
    [ -z "${extra:-}" ] || die "$LAB_HOSTS:$n: expected 'NAME IP [LAYER]'"
    [[ $name =~ ^[a-z][a-z0-9-]{0,11}$ ]] || die "$LAB_HOSTS:$n: bad name '$name' (a-z0-9-, at most 12 chars: veth vb-NAME)"
    [ "$name" != ns ] || die "$LAB_HOSTS:$n: 'ns' is reserved (ns.$DOMAIN = $GW)"
    [[ ${ip:-} =~ ^198\.51\.100\.([0-9]{1,3})$ ]] || die "$LAB_HOSTS:$n: IP must be in $NET.0/24"
    o=${BASH_REMATCH[1]}
    if [ "$o" -lt 2 ] || [ "$o" -gt 254 ]; then die "$LAB_HOSTS:$n: IP $ip not usable ($GW is the lab gateway)"; fi
    [ -z "${HIP[$name]:-}" ] || die "$LAB_HOSTS:$n: duplicate host $name"
    [ -z "${seen_ip[$ip]:-}" ] || die "$LAB_HOSTS:$n: duplicate IP $ip"
    if [ -n "${layer:-}" ]; then
      [ -n "${LAYER_PKGS[$layer]:-}" ] || die "$LAB_HOSTS:$n: unknown layer '$layer' (known: ${!LAYER_PKGS[*]}; one per host)"
    fi
    seen_ip[$ip]=1; HOSTS+=("$name"); HIP[$name]=$ip; HLAYER[$name]=${layer:-}
  done < "$LAB_HOSTS"
  [ "${#HOSTS[@]}" -gt 0 ] || die "no hosts in $LAB_HOSTS"
}

check_names() {  # every argument must be a host from the hosts file
  local n
  for n in "$@"; do [ -n "${HIP[$n]:-}" ] || die "unknown host '$n' (not in $LAB_HOSTS)"; done
}

# host dirs under $HOSTS_RUN that exist (also hosts since removed from the hosts file)
known_host_dirs() {
  local d
  [ -d "$HOSTS_RUN" ] || return 0
  for d in "$HOSTS_RUN"/*/; do [ -d "$d" ] && basename "$d"; done
  return 0
}

all_host_names() {  # hosts file order, then host dirs of hosts no longer in the file
  local h
  declare -A seen=()
  for h in "${HOSTS[@]}"; do seen[$h]=1; echo "$h"; done
  while read -r h; do [ -n "${seen[$h]:-}" ] || echo "$h"; done < <(known_host_dirs)
}

lowerdirs() {  # $1 = host: topmost first
  local l=$LAYERS_DIR/lab:$BASE
  [ -z "${HLAYER[$1]:-}" ] || l=$LAYERS_DIR/${HLAYER[$1]}:$l
  echo "$l"
}

# ---------------------------------------------------------------- locking
take_lock() {
  mkdir -p "$(dirname "$LAB_LOCK")"
  exec 9>"$LAB_LOCK"
  flock -w 600 9 || die "another lab.sh holds $LAB_LOCK"
}
# every daemon we start gets 9>&- so that it does not keep the lock

# ---------------------------------------------------------------- pid helpers
pid_is() {  # $1 = pid, $2 = expected comm, [$3 = substring of the cmdline]
  local p=$1 c
  [[ $p =~ ^[0-9]+$ ]] || return 1
  [ -r "/proc/$p/comm" ] || return 1
  c=$(cat "/proc/$p/comm" 2>/dev/null) || return 1
  [ "$c" = "$2" ] || return 1
  [ -z "${3:-}" ] || tr '\0' ' ' < "/proc/$p/cmdline" 2>/dev/null | grep -qF -- "$3"
}

pidfile_pid() {  # $1 = pidfile, $2 = comm, [$3 = cmdline substring]: prints the pid if that process runs
  local p
  [ -s "$1" ] || return 1
  p=$(tr -dc '0-9' < "$1")
  pid_is "$p" "$2" "${3:-}" || return 1
  echo "$p"
}

stop_pid() {  # $1 = pid, $2 = timeout (s): TERM, wait, then KILL
  local p=$1 i
  kill -TERM "$p" 2>/dev/null || return 0
  for ((i = 0; i < ${2:-10} * 10; i++)); do kill -0 "$p" 2>/dev/null || return 0; sleep 0.1; done
  log "pid $p did not stop in ${2:-10}s: KILL"
  kill -KILL "$p" 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do kill -0 "$p" 2>/dev/null || return 0; sleep 0.1; done
}

# ---------------------------------------------------------------- cgroups
# With --keep-unit nspawn puts the container in "<its own cgroup>/payload". Started from one shell,
# every container would share /payload, so each nspawn is first moved into lab/NAME.
cg_roots() {
  if [ "$(stat -fc %T /sys/fs/cgroup)" = cgroup2fs ]; then
    echo /sys/fs/cgroup                                     # pure cgroup v2 (untested here)
  else
    if [ -d /sys/fs/cgroup/unified ] && [ "$(stat -fc %T /sys/fs/cgroup/unified)" = cgroup2fs ]; then
      echo /sys/fs/cgroup/unified                           # hybrid
    fi
    [ -d /sys/fs/cgroup/systemd ] && echo /sys/fs/cgroup/systemd   # name=systemd (v1)
  fi
  return 0
}

cg_pids() {  # $1 = host: pids in its cgroup subtrees
  local r
  for r in $(cg_roots); do
    if [ -d "$r/lab/$1" ]; then find "$r/lab/$1" -name cgroup.procs -exec cat {} + 2>/dev/null || true; fi
  done | sort -un
}

cg_remove() {  # $1 = host
  local r
  for r in $(cg_roots); do
    [ -d "$r/lab/$1" ] && find "$r/lab/$1" -depth -type d -exec rmdir {} + 2>/dev/null
    rmdir "$r/lab" 2>/dev/null || true       # only succeeds when the last host is gone
  done
  return 0
}

# ---------------------------------------------------------------- prepare: host side
ensure_host_packages() {
  local p missing=()
  for p in "${HOST_PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [ "${#missing[@]}" -gt 0 ] || return 0
  log "installing host packages: ${missing[*]}"
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null 9>&-
  # Without a policy-rc.d (this machine has one: exit 101) apt would have started the system
  # instances. Ours run with their own config; stop the ones this install started.
  for p in apt-cacher-ng unbound; do
    if [[ " ${missing[*]} " == *" $p "* ]] && [ -x "/etc/init.d/$p" ] && /etc/init.d/"$p" status >/dev/null 2>&1; then
      log "stopping the $p system service that apt just started"
      /etc/init.d/"$p" stop >/dev/null 2>&1 9>&- || true
    fi
  done
}

mirror() {
  local m=${MIRROR:-}
  if [ -z "$m" ]; then
    m=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
    [ -n "$m" ] || m=$(awk '$1 == "deb" && $2 !~ /^\[/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
    [ -n "$m" ] || m=http://deb.debian.org/debian
  fi
  echo "${m%/}"
}

ensure_bridge() {  # returns 0 if it had to (re)create the address, 1 if all was there
  local changed=1
  if ! ip link show "$BR" >/dev/null 2>&1; then
    log "bridge $BR $GW/24 (no ip_forward, no NAT)"
    ip link add "$BR" address "$BR_MAC" type bridge
    # IPv4 only: no link-local/RA chatter on the lab segment
    echo 1 > "/proc/sys/net/ipv6/conf/$BR/disable_ipv6" 2>/dev/null || true
    changed=0
  fi
  if ! ip -4 addr show dev "$BR" | grep -q "inet $GW/24"; then
    ip addr replace "$GW/24" dev "$BR"
    changed=0
  fi
  ip link set "$BR" up
  return $changed
}

acng_pid() { pidfile_pid "$ACNG_RUN/pid" apt-cacher-ng "$ACNG_RUN"; }

start_acng() {
  local m p i
  m=$(mirror)
  # FreshIndexMaxAge: an index checked upstream less than 10 min ago is served as is. Without it, hosts
  # refreshing the same InRelease in the same second race on rotating the cached file and one apt-get hangs.
  # Debian ships backends_debian EMPTY, and then every request answers "503 Host not found".
  if [ "$(cat /etc/apt-cacher-ng/backends_debian 2>/dev/null)" != "$m/" ]; then
    echo "$m/" > /etc/apt-cacher-ng/backends_debian
  fi
  mkdir -p "$ACNG_RUN" "$ACNG_CACHE"
  chown apt-cacher-ng:apt-cacher-ng "$ACNG_RUN" "$ACNG_CACHE"
  rm -f "$ACNG_RUN/pid"
  log "apt-cacher-ng on $GW:$ACNG_PORT (cache $ACNG_CACHE)"
  start-stop-daemon --start --quiet --chuid apt-cacher-ng --group apt-cacher-ng --pidfile "$ACNG_RUN/pid" \
    --exec /usr/sbin/apt-cacher-ng -- -c /etc/apt-cacher-ng foreground=0 pidfile="$ACNG_RUN/pid" \
    SocketPath="$ACNG_RUN/socket" CacheDir="$ACNG_CACHE" LogDir="$ACNG_RUN" \
    BindAddress="$GW" Port="$ACNG_PORT" FreshIndexMaxAge=600 </dev/null >/dev/null 2>&1 9>&-
  for ((i = 0; i < 50; i++)); do
    if p=$(acng_pid) && port_open "$GW" "$ACNG_PORT"; then return 0; fi
    sleep 0.1
  done
  die "apt-cacher-ng did not start (is port $ACNG_PORT taken by another instance? see $ACNG_RUN/apt-cacher.err)"
}

stop_acng() {
  local p
  if p=$(acng_pid); then log "stopping apt-cacher-ng (pid $p)"; stop_pid "$p" 10; fi
  rm -f "$ACNG_RUN/pid"
}

port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

ensure_acng() {  # $1 = "restart" to force
  if [ "${1:-}" = restart ]; then stop_acng; fi
  if acng_pid >/dev/null; then return 0; fi
  start_acng
}

# ---------------------------------------------------------------- lab DNS
unbound_pid() { pidfile_pid "$UNBOUND_DIR/unbound.pid" unbound "$UNBOUND_DIR/unbound.conf"; }

write_dns_config() {  # writes unbound.conf and 00-hosts.conf; returns 0 if anything changed
  local tmp z h changed=1 ip
  mkdir -p "$DNS_DIR" "$UNBOUND_DIR"
  chown unbound "$UNBOUND_DIR"          # so unbound can write its log and remove its pidfile
  chmod 755 "$LAB_RUN" "$DNS_DIR"
  tmp=$(mktemp)
  {
    echo "# generated by lab.sh - lab DNS: authoritative for the lab zones only, never recurses"
    echo "server:"
    echo "  interface: $GW"
    echo "  port: 53"
    echo "  do-ip6: no"
    echo "  access-control: 0.0.0.0/0 refuse"
    echo "  access-control: $NET.0/24 allow"
    echo "  access-control: 127.0.0.0/8 allow"
    echo "  username: unbound"
    echo "  chroot: \"\""
    echo "  directory: \"$UNBOUND_DIR\""
    echo "  pidfile: \"$UNBOUND_DIR/unbound.pid\""
    echo "  logfile: \"$UNBOUND_DIR/unbound.log\""
    echo "  use-syslog: no"
    echo "  verbosity: 1"
    echo "  num-threads: 1"
    echo "  module-config: \"iterator\""
    echo "  # everything not below is NXDOMAIN: no query ever leaves this machine"
    echo "  local-zone: \".\" static"
    for z in "${ZONES[@]}"; do
      echo "  local-zone: \"$z.\" static"
      echo "  local-data: \"$z. 3600 IN SOA ns.$DOMAIN. hostmaster.$DOMAIN. 1 3600 600 86400 60\""
      echo "  local-data: \"$z. 3600 IN NS ns.$DOMAIN.\""
    done
    echo "  # host records (00-hosts.conf, generated) and the Pulumi program's records (e.g. 50-program.conf)"
    echo "  include: \"$DNS_DIR/*.conf\""
    echo "remote-control:"
    echo "  control-enable: yes"
    echo "  control-interface: \"$UNBOUND_DIR/control.sock\""
    echo "  control-use-cert: no"
  } > "$tmp"
  if ! cmp -s "$tmp" "$UNBOUND_DIR/unbound.conf"; then mv "$tmp" "$UNBOUND_DIR/unbound.conf"; changed=0; else rm -f "$tmp"; fi
  chmod 644 "$UNBOUND_DIR/unbound.conf"

  tmp=$(mktemp)
  {
    echo "# generated by lab.sh from $LAB_HOSTS on every up/prepare/dns-reload - do not edit."
    echo "# Put other records into another file in this directory (e.g. 50-program.conf) and run lab.sh dns-reload."
    echo "server:"
    echo "  local-data: \"ns.$DOMAIN. 300 IN A $GW\""
    echo "  local-data-ptr: \"$GW 300 ns.$DOMAIN.\""
    for h in "${HOSTS[@]}"; do
      ip=${HIP[$h]}
      echo "  local-data: \"$h.$DOMAIN. 300 IN A $ip\""
      echo "  local-data-ptr: \"$ip 300 $h.$DOMAIN.\""
    done
  } > "$tmp"
  if ! cmp -s "$tmp" "$DNS_DIR/00-hosts.conf"; then mv "$tmp" "$DNS_DIR/00-hosts.conf"; changed=0; else rm -f "$tmp"; fi
  chmod 644 "$DNS_DIR/00-hosts.conf"
  return $changed
}

start_unbound() {
  local i
  log "unbound (lab DNS) on $GW:53"
  rm -f "$UNBOUND_DIR/unbound.pid"
  unbound -c "$UNBOUND_DIR/unbound.conf" </dev/null >>"$UNBOUND_DIR/unbound.start.log" 2>&1 9>&- \
    || die "unbound failed to start, see $UNBOUND_DIR/unbound.start.log and unbound.log"
  for ((i = 0; i < 50; i++)); do unbound_pid >/dev/null && return 0; sleep 0.1; done
  die "unbound did not write its pidfile, see $UNBOUND_DIR/unbound.log"
}

stop_unbound() {
  local p
  if p=$(unbound_pid); then log "stopping unbound (pid $p)"; stop_pid "$p" 10; fi
  rm -f "$UNBOUND_DIR/unbound.pid"
}

# $1 = "restart" forces a restart (dns-reload); otherwise restart only if the generated files changed
ensure_dns() {
  local changed=1 out
  write_dns_config && changed=0
  # unbound re-reads the files as user unbound on reload
  find "$DNS_DIR" -maxdepth 1 -name '*.conf' -type f ! -perm -o=r -exec chmod a+r {} +
  if ! out=$(unbound-checkconf "$UNBOUND_DIR/unbound.conf" 2>&1); then
    printf '%s\n' "$out" >&2
    if unbound_pid >/dev/null; then die "DNS config invalid: unbound NOT restarted, the old records are still served"; fi
    die "DNS config invalid: unbound not started"
  fi
  if unbound_pid >/dev/null; then
    [ "${1:-}" = restart ] || [ "$changed" = 0 ] || return 0
    # reload keeps the sockets: no window in which the hosts' lookups are refused
    unbound-control -c "$UNBOUND_DIR/unbound.conf" reload >/dev/null 2>&1 && return 0
    log "unbound-control reload failed: restarting unbound"
    stop_unbound
  fi
  start_unbound
}

# ---------------------------------------------------------------- images (cached)
stamp_of() { cat "$1/.lab-stamp" 2>/dev/null || true; }

any_host_running() {
  local h
  while read -r h; do nspawn_pid "$h" >/dev/null && return 0; done < <(known_host_dirs)
  return 1
}

warn_stale_uppers() {
  local h
  while read -r h; do
    [ -d "$HOSTS_RUN/$h/upper" ] && log "WARNING: host $h has an upper dir made on the old image: lab.sh reset $h"
  done < <(known_host_dirs)
  return 0
}

image_needs_build() {  # $1 = dir, $2 = wanted stamp
  [ -d "$1" ] && [ "$(stamp_of "$1")" = "$2" ] && return 1
  if [ -d "$1" ]; then
    any_host_running && die "$1 is outdated but hosts are running on it: lab.sh down first"
    warn_stale_uppers
  fi
  return 0
}

base_stamp() { echo "base rev=$BASE_REV suite=$SUITE include=$BASE_INCLUDE mirror=$(mirror)"; }

ensure_base() {
  local want t0 tmp=$BASE.tmp
  want=$(base_stamp)
  image_needs_build "$BASE" "$want" || return 0
  t0=$(now_us)
  log "debootstrap $SUITE minbase -> $BASE (about 45 s)"
  mkdir -p "$LAB_CACHE"
  rm -rf --one-file-system "$tmp"
  debootstrap --variant=minbase --include="$BASE_INCLUDE" "$SUITE" "$tmp" "$(mirror)" \
    > "$LAB_CACHE/debootstrap.log" 2>&1 9>&- || die "debootstrap failed, see $LAB_CACHE/debootstrap.log"
  # generalize: nothing host-specific may be shared by the hosts
  : > "$tmp/etc/machine-id"
  rm -f "$tmp/var/lib/dbus/machine-id" "$tmp/var/lib/systemd/random-seed"
  ln -s /etc/machine-id "$tmp/var/lib/dbus/machine-id"
  rm -f "$tmp"/etc/ssh/ssh_host_*
  echo localhost > "$tmp/etc/hostname"
  printf '127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\nff02::1\t\tip6-allnodes\nff02::2\t\tip6-allrouters\n' \
    > "$tmp/etc/hosts"
  chroot "$tmp" apt-get clean 9>&-
  find "$tmp/var/lib/apt/lists" -maxdepth 1 -type f ! -name lock -delete   # like a cloud image: apt-get update first
  rm -rf "$tmp"/var/log/journal/*
  echo "$want" > "$tmp/.lab-stamp"
  rm -rf --one-file-system "$BASE"
  mv "$tmp" "$BASE"
  log "base rootfs ready ($(secs_since "$t0") s, $(du -sh "$BASE" | cut -f1))"
}

ensure_key() {
  mkdir -p "$LAB_CACHE"
  [ -f "$KEY" ] || ssh-keygen -q -t ed25519 -N "" -C "mailinfra-lab" -f "$KEY"
  chmod 600 "$KEY"
}

write_ssh_config() {
  local tmp h
  tmp=$(mktemp)
  {
    echo "# generated by lab.sh: ssh -F $SSH_CONFIG NAME|NAME.$DOMAIN|IP"
    for h in "${HOSTS[@]}"; do
      printf 'Host %s %s.%s\n  HostName %s\n' "$h" "$h" "$DOMAIN" "${HIP[$h]}"
    done
    printf 'Host *\n  User root\n  IdentityFile %s\n  IdentitiesOnly yes\n  StrictHostKeyChecking yes\n' "$KEY"
    printf '  UserKnownHostsFile %s\n  GlobalKnownHostsFile /dev/null\n  LogLevel ERROR\n  BatchMode yes\n  ConnectTimeout 5\n' "$HOST_KEYS"
  } > "$tmp"
  if cmp -s "$tmp" "$SSH_CONFIG"; then rm -f "$tmp"; else mv "$tmp" "$SSH_CONFIG"; chmod 644 "$SSH_CONFIG"; fi
}

# Mount an overlay build root: $1 = upper, $2 = work, $3 = merged, $4 = lowerdirs
BUILD_MOUNTS=()
build_mount() {
  mkdir -p "$1" "$2" "$3"
  mount -t overlay overlay -o "lowerdir=$4,upperdir=$1,workdir=$2" "$3"
  BUILD_MOUNTS=("$3")
}
build_chroot_mounts() {  # $1 = root
  local r=$1
  mount --bind /proc "$r/proc"; BUILD_MOUNTS=("$r/proc" "${BUILD_MOUNTS[@]}")
  mount --bind /sys "$r/sys"; BUILD_MOUNTS=("$r/sys" "${BUILD_MOUNTS[@]}")
  mount --bind /dev "$r/dev"; BUILD_MOUNTS=("$r/dev" "${BUILD_MOUNTS[@]}")
  mount --bind /dev/pts "$r/dev/pts"; BUILD_MOUNTS=("$r/dev/pts" "${BUILD_MOUNTS[@]}")
}
kill_chroot_procs() {  # $1 = root: processes whose root is inside the build root (e.g. daemons left by postinst)
  local p pid i left
  for ((i = 0; i < 30; i++)); do
    left=0
    for p in /proc/[0-9]*; do
      pid=${p#/proc/}
      [ "$(readlink "$p/root" 2>/dev/null)" = "$1" ] || continue
      left=1
      log "killing leftover build process $pid ($(cat "$p/comm" 2>/dev/null))"
      if [ "$i" -lt 20 ]; then kill -TERM "$pid" 2>/dev/null || true; else kill -KILL "$pid" 2>/dev/null || true; fi
    done
    [ "$left" = 0 ] && return 0
    sleep 0.2
  done
}
build_umount() {
  local m
  for m in "${BUILD_MOUNTS[@]}"; do mountpoint -q "$m" && umount "$m"; done
  BUILD_MOUNTS=()
}
build_cleanup() {  # on error
  [ "${#BUILD_MOUNTS[@]}" -gt 0 ] || return 0
  kill_chroot_procs "${BUILD_MOUNTS[-1]}" || true
  build_umount || true
}
trap build_cleanup EXIT

lab_stamp() {
  echo "lab rev=$LAB_REV gw=$GW mirror=$(mirror) key=$(cut -d' ' -f2 "$KEY.pub") base=$(stamp_of "$BASE" | md5sum | cut -c1-12)"
}

# The lab layer: what makes the base a lab host (same for every host).
ensure_lab_layer() {
  local L=$LAYERS_DIR/lab want t0 R B=$LAYERS_DIR/lab.build
  want=$(lab_stamp)
  image_needs_build "$L" "$want" || return 0
  t0=$(now_us)
  log "lab layer -> $L"
  rm -rf --one-file-system "$B"
  build_mount "$B/upper" "$B/work" "$B/merged" "$BASE"
  R=$B/merged
  install -d -m 700 "$R/root/.ssh"
  install -m 600 "$KEY.pub" "$R/root/.ssh/authorized_keys"
  chroot "$R" systemctl enable -q systemd-networkd.service 9>&-
  chroot "$R" systemctl mask -q apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer fstrim.timer 9>&-
  echo "Acquire::http::Proxy \"http://$GW:$ACNG_PORT\";" > "$R/etc/apt/apt.conf.d/01lab-proxy"
  # what a fresh bookworm install has; security goes through apt-cacher-ng's Remap-secdeb
  cat > "$R/etc/apt/sources.list" <<EOF
deb http://deb.debian.org/debian $SUITE main non-free-firmware
deb http://deb.debian.org/debian $SUITE-updates main non-free-firmware
deb http://deb.debian.org/debian-security $SUITE-security main non-free-firmware
EOF
  rm -f "$R/etc/resolv.conf"
  echo "nameserver $GW" > "$R/etc/resolv.conf"
  build_umount
  rm -rf "$B/work"
  echo "$want" > "$B/upper/.lab-stamp"
  rm -rf --one-file-system "$L"
  mv "$B/upper" "$L"
  rm -rf "$B"
  log "lab layer ready ($(secs_since "$t0") s)"
}

layer_stamp() { echo "$1 rev=${LAYER_REV[$1]} pkgs=$(echo "${LAYER_PKGS[$1]}" | tr -s ' \n' ' ') lab=$(stamp_of "$LAYERS_DIR/lab" | md5sum | cut -c1-12)"; }

# An extra layer: packages installed by chroot on an overlay over lab+base; its upper dir is the layer.
ensure_layer() {  # $1 = layer name
  local name=$1 L=$LAYERS_DIR/$1 want t0 R B=$LAYERS_DIR/$1.build
  want=$(layer_stamp "$name")
  image_needs_build "$L" "$want" || return 0
  t0=$(now_us)
  log "layer $name -> $L (chroot apt-get install via the proxy)"
  rm -rf --one-file-system "$B"
  build_mount "$B/upper" "$B/work" "$B/merged" "$LAYERS_DIR/lab:$BASE"
  R=$B/merged
  build_chroot_mounts "$R"
  # without this, postinst scripts would start daemons in the BUILD machine's namespaces
  printf '#!/bin/sh\nexit 101\n' > "$R/usr/sbin/policy-rc.d"; chmod 755 "$R/usr/sbin/policy-rc.d"
  # shellcheck disable=SC2086  # word splitting of the package list is wanted
  if ! chroot "$R" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive \
        sh -c 'apt-get update -q && apt-get install -y -q --no-install-recommends "$@" && apt-get clean' sh \
        ${LAYER_PKGS[$name]} > "$LAYERS_DIR/$name.log" 2>&1 9>&-; then
    die "layer $name: install failed, see $LAYERS_DIR/$name.log"
  fi
  rm -f "$R/usr/sbin/policy-rc.d" "$R/etc/mailname"
  find "$R/var/lib/apt/lists" -maxdepth 1 -type f ! -name lock -delete
  kill_chroot_procs "$R"
  build_umount
  rm -rf "$B/work"
  echo "$want" > "$B/upper/.lab-stamp"
  rm -rf --one-file-system "$L"
  mv "$B/upper" "$L"
  rm -rf "$B"
  log "layer $name ready ($(secs_since "$t0") s, $(du -sh "$L" | cut -f1))"
}

# $@ = hosts whose layers are needed
ensure_images() {
  local h l
  declare -A need=()
  ensure_key
  write_ssh_config
  ensure_base
  ensure_lab_layer
  for h in "$@"; do l=${HLAYER[$h]:-}; [ -z "$l" ] || need[$l]=1; done
  for l in "${!need[@]}"; do ensure_layer "$l"; done
}

# infrastructure needed by both prepare and up
ensure_infra() {
  local restart=""
  ensure_host_packages
  mkdir -p "$LAB_CACHE" "$LAB_RUN" "$HOSTS_RUN"
  chmod 755 "$LAB_RUN"
  ensure_bridge && restart=restart   # daemons bound to a vanished address must rebind
  ensure_acng $restart
  if [ -n "$restart" ]; then stop_unbound; fi
  ensure_dns
}

cmd_prepare() {
  local t0
  t0=$(now_us)
  ensure_infra
  ensure_images "${HOSTS[@]}"
  log "prepare done ($(secs_since "$t0") s)"
}

# ---------------------------------------------------------------- hosts
nspawn_pid() { pidfile_pid "$HOSTS_RUN/$1/nspawn.pid" systemd-nspawn "--machine=$1 "; }

host_init() {  # first boot of a fresh upper dir: identity of the host
  local h=$1 R=$2 ip=${HIP[$1]}
  echo "$h.$DOMAIN" > "$R/etc/hostname"
  printf '127.0.0.1\tlocalhost\n%s\t%s.%s %s\n\n::1\t\tlocalhost ip6-localhost ip6-loopback\nff02::1\t\tip6-allnodes\nff02::2\t\tip6-allrouters\n' \
    "$ip" "$h" "$DOMAIN" "$h" > "$R/etc/hosts"
  tr -d '-' < /proc/sys/kernel/random/uuid > "$R/etc/machine-id"
  rm -f "$R"/etc/ssh/ssh_host_*
  ssh-keygen -q -A -f "$R" >/dev/null
  sed -i "s/ root@[^ ]*\$/ root@$h.$DOMAIN/" "$R"/etc/ssh/ssh_host_*.pub
}

# The record of the hosts' SSH host keys ($HOST_KEYS, known_hosts format "NAME,FQDN,IP type key"), read from each
# host's own disk, never over the network. Rewritten for the running hosts at every `up`.
record_host_keys() {  # $@ = hosts whose root is mounted
  local h f tmp
  mkdir -p "$LAB_RUN"
  tmp=$(mktemp "$LAB_RUN/.known_hosts.XXXXXX")
  if [ -f "$HOST_KEYS" ]; then
    awk -v names=" $* " '{ split($1, id, ","); if (index(names, " " id[1] " ") == 0) print }' "$HOST_KEYS" > "$tmp"
  fi
  for h in "$@"; do
    for f in "$HOSTS_RUN/$h/merged"/etc/ssh/ssh_host_*_key.pub; do
      [ -f "$f" ] && awk -v id="$h,$h.$DOMAIN,${HIP[$h]}" '{ print id, $1, $2 }' "$f" >> "$tmp"
    done
  done
  chmod 644 "$tmp"
  mv -f "$tmp" "$HOST_KEYS"
}

host_start() {  # $1 = host. Prints nothing; writes nspawn.pid
  local h=$1 H=$HOSTS_RUN/$1 R r i cgprocs=""
  R=$H/merged
  mkdir -p "$H/upper" "$H/work" "$R"
  mountpoint -q "$R" || mount -t overlay overlay -o "lowerdir=$(lowerdirs "$h"),upperdir=$H/upper,workdir=$H/work" "$R"
  [ -f "$H/init.done" ] || { host_init "$h" "$R"; date -u +%FT%TZ > "$H/init.done"; }
  # lab plumbing, rewritten at every up. Must sort before /lib/systemd/network/80-container-host0.network
  # (that one does DHCP + link-local on host0).
  printf '[Match]\nName=host0\n\n[Network]\nAddress=%s/24\nGateway=%s\nDNS=%s\nLinkLocalAddressing=no\nIPv6AcceptRA=no\n' \
    "${HIP[$h]}" "$GW" "$GW" > "$R/etc/systemd/network/10-lab.network"
  for r in $(cg_roots); do
    mkdir -p "$r/lab/$h"
    cgprocs+=" $r/lab/$h/cgroup.procs"
  done
  # --register=no --keep-unit: there is no machined and no system bus on this machine.
  # The launcher shell moves itself into lab/NAME, writes its pid, then execs nspawn (same pid).
  rm -f "$H/nspawn.pid"
  # shellcheck disable=SC2016  # $$, $f and $@ are for the inner sh
  LAB_CGPROCS=$cgprocs LAB_PIDFILE=$H/nspawn.pid setsid sh -c \
    'for f in $LAB_CGPROCS; do echo $$ > "$f" || exit 1; done; echo $$ > "$LAB_PIDFILE"; exec "$@"' sh \
    systemd-nspawn --quiet --directory="$R" --machine="$h" --hostname="$h.$DOMAIN" --boot \
      --register=no --keep-unit --network-bridge="$BR" --resolv-conf=off --timezone=off \
      --link-journal=no --console=passive \
    </dev/null >"$H/console.log" 2>&1 9>&- &
  for ((i = 0; i < 50; i++)); do [ -s "$H/nspawn.pid" ] && return 0; sleep 0.1; done
  die "$h: nspawn launcher did not start, see $H/console.log"
}

host_wait() {  # $1 = host, $2 = start time (us), $3 = note. Prints one line.
  local h=$1 ip=${HIP[$1]} t0=$2 note=${3:-} state="" deadline failed
  deadline=$(( t0 + 180 * 1000000 ))
  while :; do
    if ! nspawn_pid "$h" >/dev/null; then
      printf '%-10s %-15s FAILED: nspawn exited, see %s\n' "$h" "$ip" "$HOSTS_RUN/$h/console.log"
      tail -n 5 "$HOSTS_RUN/$h/console.log" | sed 's/^/    /'
      return 1
    fi
    state=$(ssh -F "$SSH_CONFIG" -o ConnectTimeout=2 "$ip" systemctl is-system-running 2>/dev/null) || true
    case $state in running|degraded) break ;; esac
    if [ "$(now_us)" -gt "$deadline" ]; then
      printf '%-10s %-15s TIMEOUT after 180 s (state: %s)\n' "$h" "$ip" "${state:-no ssh}"
      return 1
    fi
    sleep 0.2
  done
  printf '%-10s %-15s %-9s %5ss%s\n' "$h" "$ip" "$state" "$(secs_since "$t0")" "$note"
  if [ "$state" = degraded ]; then
    failed=$(ssh -F "$SSH_CONFIG" "$ip" systemctl --failed --plain --no-legend 2>/dev/null | awk '{print $1}' | tr '\n' ' ') || true
    printf '    failed units: %s\n' "$failed"
  fi
}

cmd_up() {
  local t0 h rc=0 p out
  local -a names=("$@") pids=()
  [ "${#names[@]}" -gt 0 ] || names=("${HOSTS[@]}")
  check_names "${names[@]}"
  t0=$(now_us)
  ensure_infra
  ensure_images "${names[@]}"
  declare -A start=() note=()
  for h in "${names[@]}"; do
    if nspawn_pid "$h" >/dev/null; then
      note[$h]=" (already up)"
    else
      host_stop "$h" quiet        # leftovers of a crashed run: mounts, cgroups, veth
      note[$h]=""
    fi
    start[$h]=$(now_us)
    [ -n "${note[$h]}" ] || host_start "$h"
  done
  # every running host, not only these: the record is complete whichever hosts a caller named
  local -a running=()
  for h in "${HOSTS[@]}"; do nspawn_pid "$h" >/dev/null && running+=("$h"); done
  record_host_keys "${running[@]}"
  out=$(mktemp -d)
  for h in "${names[@]}"; do
    host_wait "$h" "${start[$h]}" "${note[$h]}" > "$out/$h" &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p" || rc=1; done
  for h in "${names[@]}"; do cat "$out/$h"; done
  rm -rf "$out"
  log "up: ${#names[@]} host(s) in $(secs_since "$t0") s"
  return $rc
}

host_stop() {  # $1 = host, $2 = "quiet". Clean poweroff by nspawn PID; keeps upper/work.
  local h=$1 H=$HOSTS_RUN/$1 p t0 pids r
  t0=$(now_us)
  if p=$(nspawn_pid "$h"); then
    # nspawn forwards SIGTERM as SIGRTMIN+3 to the container's systemd = clean poweroff
    kill -TERM "$p" 2>/dev/null || true
    for ((r = 0; r < 600; r++)); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$p" 2>/dev/null; then log "$h: no poweroff in 60 s, killing nspawn $p"; kill -KILL "$p" 2>/dev/null || true; sleep 0.5; fi
    [ "${2:-}" = quiet ] || printf '%-10s stopped (%ss)\n' "$h" "$(secs_since "$t0")"
  elif [ "${2:-}" != quiet ]; then
    printf '%-10s not running\n' "$h"
  fi
  rm -f "$H/nspawn.pid"
  # orphans (only if nspawn died hard): the container's processes, by PID from its cgroup
  pids=$(cg_pids "$h")
  if [ -n "$pids" ]; then
    log "$h: leftover processes in its cgroup: $(echo "$pids" | tr '\n' ' ')"
    for p in $pids; do kill -KILL "$p" 2>/dev/null || true; done
    sleep 0.5
  fi
  if mountpoint -q "$H/merged" 2>/dev/null; then umount "$H/merged" || umount -l "$H/merged"; fi
  cg_remove "$h"
  ip link show "vb-$h" >/dev/null 2>&1 && ip link del "vb-$h" 2>/dev/null
  [ -d "/run/systemd/nspawn/propagate/$h" ] && rmdir "/run/systemd/nspawn/propagate/$h" 2>/dev/null
  return 0
}

hosts_stop() {  # parallel
  local h p rc=0
  local -a pids=()
  for h in "$@"; do host_stop "$h" & pids+=($!); done
  for p in "${pids[@]}"; do wait "$p" || rc=1; done
  return $rc
}

cmd_down() {
  local t0 h
  local -a names=("$@")
  if [ "${#names[@]}" -eq 0 ]; then
    mapfile -t names < <(all_host_names)
  else
    for h in "${names[@]}"; do [ -n "${HIP[$h]:-}" ] || [ -d "$HOSTS_RUN/$h" ] || die "unknown host '$h'"; done
  fi
  t0=$(now_us)
  hosts_stop "${names[@]}"
  log "down: ${#names[@]} host(s) in $(secs_since "$t0") s"
}

wipe_host_dir() {  # $1 = host
  local H=$HOSTS_RUN/$1
  [ -d "$H" ] || return 0
  if findmnt -rn -o TARGET | grep -q "^$H/"; then die "$H still has mounts, not deleting"; fi
  rm -rf --one-file-system "$H"
}

cmd_reset() {
  local h
  [ "$#" -gt 0 ] || die "usage: lab.sh reset NAME..."
  for h in "$@"; do [ -n "${HIP[$h]:-}" ] || [ -d "$HOSTS_RUN/$h" ] || die "unknown host '$h'"; done
  hosts_stop "$@"
  for h in "$@"; do wipe_host_dir "$h"; echo "$h: upper dir wiped (next up boots a bare host)"; done
}

cmd_destroy() {
  local t0 h
  t0=$(now_us)
  cmd_down
  while read -r h; do wipe_host_dir "$h"; done < <(known_host_dirs)
  stop_unbound
  stop_acng
  if ip link show "$BR" >/dev/null 2>&1; then log "deleting bridge $BR"; ip link del "$BR"; fi
  for h in $(cg_roots); do rmdir "$h/lab" 2>/dev/null || true; done
  # empty dirs systemd-nspawn leaves behind
  rmdir /run/systemd/nspawn/propagate /run/systemd/nspawn/locks /run/systemd/nspawn 2>/dev/null || true
  if [ -d "$LAB_RUN" ]; then
    if findmnt -rn -o TARGET | grep -q "^$LAB_RUN/"; then die "mounts left under $LAB_RUN, not deleting it"; fi
    rm -rf --one-file-system "$LAB_RUN"
  fi
  log "destroy done in $(secs_since "$t0") s (caches kept in $LAB_CACHE)"
}

cmd_status() {
  local h p st ip
  printf 'bridge        %s\n' "$(ip -br addr show "$BR" 2>/dev/null || echo absent)"
  if p=$(acng_pid); then printf 'apt proxy     http://%s:%s pid %s\n' "$GW" "$ACNG_PORT" "$p"; else echo "apt proxy     stopped"; fi
  if p=$(unbound_pid); then printf 'lab DNS       %s:53 pid %s, includes %s/*.conf\n' "$GW" "$p" "$DNS_DIR"; else echo "lab DNS       stopped"; fi
  printf 'images        base:%s lab:%s' "$([ -d "$BASE" ] && echo ok || echo missing)" "$([ -d "$LAYERS_DIR/lab" ] && echo ok || echo missing)"
  for p in "${!LAYER_PKGS[@]}"; do printf ' %s:%s' "$p" "$([ -d "$LAYERS_DIR/$p" ] && echo ok || echo missing)"; done
  echo
  printf '%-10s %-15s %-6s %-9s %-10s %s\n' NAME IP LAYER STATE SYSTEMD UPPER
  for h in $(all_host_names); do
    ip=${HIP[$h]:-?}
    if p=$(nspawn_pid "$h"); then
      st=$(ssh -F "$SSH_CONFIG" -o ConnectTimeout=1 "$ip" systemctl is-system-running 2>/dev/null) || true
      printf '%-10s %-15s %-6s %-9s %-10s %s\n' "$h" "$ip" "${HLAYER[$h]:--}" "up:$p" "${st:-?}" \
        "$(du -sh "$HOSTS_RUN/$h/upper" 2>/dev/null | cut -f1)"
    elif [ -d "$HOSTS_RUN/$h/upper" ]; then
      printf '%-10s %-15s %-6s %-9s %-10s %s\n' "$h" "$ip" "${HLAYER[$h]:--}" down - "$(du -sh "$HOSTS_RUN/$h/upper" | cut -f1)"
    else
      printf '%-10s %-15s %-6s %-9s %-10s %s\n' "$h" "$ip" "${HLAYER[$h]:--}" absent - -
    fi
  done
}

cmd_ssh() {
  [ "$#" -ge 1 ] || die "usage: lab.sh ssh NAME [CMD...]"
  check_names "$1"
  [ -f "$SSH_CONFIG" ] || die "no $SSH_CONFIG: run lab.sh prepare"
  local ip=${HIP[$1]}
  shift
  exec ssh -F "$SSH_CONFIG" "$ip" "$@"
}

cmd_dns_reload() {
  mkdir -p "$LAB_RUN"
  ensure_bridge >/dev/null || true
  ensure_dns restart
  echo "lab DNS reloaded (unbound pid $(unbound_pid)); zone files: $DNS_DIR/*.conf"
}

usage() {
  sed -n '/^#   lab.sh/s/^# *//p' "${BASH_SOURCE[0]}"
  exit 2
}

main() {
  [ "$(id -u)" = 0 ] || die "run as root"
  local cmd=${1:-}
  [ "$#" -eq 0 ] || shift
  case $cmd in
    prepare)    load_hosts; take_lock; cmd_prepare ;;
    up)         load_hosts; take_lock; cmd_up "$@" ;;
    down)       load_hosts; take_lock; cmd_down "$@" ;;
    reset)      load_hosts; take_lock; cmd_reset "$@" ;;
    destroy)    load_hosts; take_lock; cmd_destroy ;;
    status)     load_hosts; cmd_status ;;
    ssh)        load_hosts; cmd_ssh "$@" ;;
    dns-reload) load_hosts; take_lock; cmd_dns_reload ;;
    *)          usage ;;
  esac
}

main "$@"
