#!/usr/bin/env bash
# Clustered brokers on 127.0.0.1, one profile at a time (make test-cluster).
#
#   scripts/cluster.sh PROFILE up          install if missing, start every node, wait until the cluster serves
#   scripts/cluster.sh PROFILE down        stop every node and remove the profile's data
#   scripts/cluster.sh PROFILE status
#   scripts/cluster.sh PROFILE kill N      SIGKILL node N (0-based)
#   scripts/cluster.sh PROFILE start N     start node N again (its data kept), wait until it rejoined
#   scripts/cluster.sh PROFILE isolate N   cut node N off from the other nodes (clients still reach it)
#   scripts/cluster.sh PROFILE heal N      join it again, wait until the cluster is whole
#   scripts/cluster.sh PROFILE leader CH   print the node leading channel CH (where the profile can tell)
#
# PROFILE: one file scripts/cluster/PROFILE.sh defining cluster_up, cluster_down,
# cluster_status, node_kill, node_start, node_isolate, node_heal (and optionally node_leader);
# its header says its ports, settings and measured start time. State lives under
# .services/cluster/PROFILE.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STATE=${CHANNELS_SERVICES_DIR:-$ROOT/.services}
READY_TIMEOUT=${CHANNELS_READY_TIMEOUT:-180}
. "$ROOT/scripts/lib.sh"

profile=${1:-}
verb=${2:-}
[[ -n $profile && -n $verb ]] || { sed -n '2,17p' "$0"; exit 2; }
file=$ROOT/scripts/cluster/$profile.sh
[[ -f $file ]] || die "unknown cluster profile '$profile' (one of: $(cd "$ROOT/scripts/cluster" && ls *.sh 2>/dev/null | sed 's/\.sh$//' | tr '\n' ' '))"
CSTATE=$STATE/cluster/$profile
mkdir -p "$CSTATE"
. "$file"

case $verb in
  up) t0=$(now); cluster_up; log "$profile: ready in $(since "$t0")" ;;
  down) cluster_down ;;
  status) cluster_status ;;
  kill) node_kill "${3:?node index}" ;;
  start) t0=$(now); node_start "${3:?node index}"; log "$profile: node $3 back in $(since "$t0")" ;;
  isolate) node_isolate "${3:?node index}" ;;
  heal) node_heal "${3:?node index}" ;;
  leader) node_leader "${3:?channel}" ;;
  *) die "unknown verb '$verb'" ;;
esac
