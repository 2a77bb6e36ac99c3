# Shell helpers of scripts/services.sh and scripts/cluster.sh (sourced; needs STATE set).

log() { printf '[services] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
now() { date +%s.%N; }
since() { awk -v s="$1" -v e="$(now)" 'BEGIN { printf "%.1fs", e - s }'; }

# wait_until SECONDS DESCRIPTION COMMAND...: polls COMMAND until it succeeds.
wait_until() {
  local limit=$1 what=$2; shift 2
  local deadline=$(( $(date +%s) + limit ))
  until "$@" >/dev/null 2>&1; do
    if (( $(date +%s) >= deadline )); then
      return 1
    fi
    sleep 0.2
  done
  log "$what ready"
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# --- packages --------------------------------------------------------------------------------

APT_UPDATED=0
ensure_packages() {
  local missing=()
  local pkg
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  (( ${#missing[@]} == 0 )) && return 0
  [[ $(id -u) -eq 0 ]] || die "packages missing: ${missing[*]} (run as root, or install them: apt-get install ${missing[*]})"
  local t; t=$(now)
  log "installing ${missing[*]}"
  # Keep Debian's maintainer scripts from starting the daemons: this script starts them itself.
  local policy=/usr/sbin/policy-rc.d created_policy=0
  if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"; chmod +x "$policy"; created_policy=1
  fi
  if (( APT_UPDATED == 0 )); then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq; APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >"$STATE/apt.log" 2>&1 \
    || { (( created_policy )) && rm -f "$policy"; tail -20 "$STATE/apt.log" >&2; die "apt-get install ${missing[*]} failed"; }
  (( created_policy )) && rm -f "$policy"
  log "installed ${missing[*]} in $(since "$t")"
}

# --- pid bookkeeping -------------------------------------------------------------------------

pid_alive() { [[ -f $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }
ours() { pid_alive "$1" && echo " (started here, pid $(cat "$1"))" || echo " (not started here)"; }

stop_pidfile() {
  local pidfile=$1 name=$2
  if pid_alive "$pidfile"; then
    local pid; pid=$(cat "$pidfile")
    kill "$pid" 2>/dev/null || true
    local _
    for _ in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -9 "$pid" 2>/dev/null || true
    log "$name stopped (pid $pid)"
  fi
  rm -f "$pidfile"
}

# not_ours NAME PIDFILE: logs that a running broker was not started here and is left alone.
not_ours() { [[ -f $2 ]] || log "$1: nothing started by this script to stop (a broker found running is left alone)"; }

