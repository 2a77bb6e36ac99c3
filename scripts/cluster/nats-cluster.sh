# Profile nats-cluster (sourced by scripts/cluster.sh): 3 nats-server nodes with JetStream,
# joined by routes, on 127.0.0.1. Node N (0-based, server_name nN): clients 4231+N, routes
# 6231+N, monitoring 8231+N. Every node lists the other two as routes; the route connections
# authenticate (cluster authorization, user "route"). Client URLs are not gossiped
# (cluster no_advertise): a client reaches the nodes it was given, so an adapter built on one
# URL reaches that node only.
#
# Isolate/heal: node N gets another route password and reloads its configuration
# (nats-server --signal reload): it closes its routes, and neither the routes it dials nor
# those the others dial to it authenticate any more, in both directions, while its clients
# still reach it. Heal puts the shared password back and reloads; the routes come back (each
# node keeps dialing its configured routes) and heal returns once every node sees two routes
# and reports healthy (/healthz: JetStream meta leader, streams and consumers current).
#
# Measured start (2 cores): about 1 s (0.8-1.2 s); a node back after kill: under 1 s.
NC_CLIENT=(4231 4232 4233)
NC_ROUTE=(6231 6232 6233)
NC_MON=(8231 8232 8233)
NC_PASS=channels-routes

nc_dir() { echo "$CSTATE/n$1"; }

# nc_conf N PASSWORD: writes node N's configuration with that route password.
nc_conf() {
  local i=$1 pass=$2 dir routes="" j
  dir=$(nc_dir "$i")
  mkdir -p "$dir/store"
  for j in 0 1 2; do
    (( j == i )) && continue
    routes+="    nats://route:$pass@127.0.0.1:${NC_ROUTE[$j]}"$'\n'
  done
  cat >"$dir/nats.conf.tmp" <<CONF
server_name: n$i
listen: 127.0.0.1:${NC_CLIENT[$i]}
http: 127.0.0.1:${NC_MON[$i]}
jetstream {
  store_dir: "$dir/store"
  max_memory_store: 128MB
  max_file_store: 1GB
}
cluster {
  name: channels
  listen: 127.0.0.1:${NC_ROUTE[$i]}
  no_advertise: true
  authorization {
    user: route
    password: $pass
  }
  routes: [
$routes  ]
}
CONF
  mv "$dir/nats.conf.tmp" "$dir/nats.conf"
}

nc_start_node() {
  local i=$1 dir; dir=$(nc_dir "$1")
  [[ -f $dir/nats.conf ]] || nc_conf "$i" "$NC_PASS"
  nohup nats-server -c "$dir/nats.conf" >>"$dir/nats.log" 2>&1 &
  echo $! >"$dir/nats.pid"
  wait_until 30 "nats-cluster node $i" port_open "${NC_CLIENT[$i]}" || die "nats node $i did not start; see $dir/nats.log"
}

nc_routes() { curl -sf "http://127.0.0.1:${NC_MON[$1]}/routez" | awk -F'[:,]' '/"num_routes"/ {gsub(/ /, "", $2); print $2}'; }
nc_healthy() { curl -sf "http://127.0.0.1:${NC_MON[$1]}/healthz" >/dev/null; }

# nc_whole: every node has its two routes and reports healthy.
nc_whole() {
  local i
  for i in 0 1 2; do
    [[ $(nc_routes "$i") == 2 ]] || return 1
    nc_healthy "$i" || return 1
  done
}

cluster_up() {
  ensure_packages nats-server curl
  local i
  for i in 0 1 2; do
    pid_alive "$(nc_dir "$i")/nats.pid" || nc_start_node "$i"
  done
  wait_until 60 "nats-cluster" nc_whole || die "nats-cluster not whole; see $CSTATE/n*/nats.log"
}

cluster_down() {
  local i pf
  for i in 0 1 2; do
    pf=$(nc_dir "$i")/nats.pid
    pid_alive "$pf" && kill -9 "$(cat "$pf")" 2>/dev/null
    rm -f "$pf" # its data goes too
  done
  rm -rf "${CSTATE:?}"/n[0-9]
}

cluster_status() {
  local i
  for i in 0 1 2; do
    if pid_alive "$(nc_dir "$i")/nats.pid"; then
      echo "n$i: up, routes=$(nc_routes "$i")$(nc_healthy "$i" && echo ", healthy")"
    else
      echo "n$i: down"
    fi
  done
  nc_whole && echo "nats-cluster: whole" || echo "nats-cluster: not whole"
}

node_kill() {
  local pf; pf=$(nc_dir "$1")/nats.pid
  pid_alive "$pf" || { log "node $1 is not running"; return 0; }
  kill -9 "$(cat "$pf")"
  rm -f "$pf"
}

node_start() {
  pid_alive "$(nc_dir "$1")/nats.pid" || nc_start_node "$1"
  wait_until 90 "nats-cluster (node $1 rejoined)" nc_whole || die "node $1 did not rejoin"
}

nc_reload() {
  local pf; pf=$(nc_dir "$1")/nats.pid
  pid_alive "$pf" || die "node $1 is not running"
  nats-server --signal "reload=$(cat "$pf")" >/dev/null
}

node_isolate() {
  nc_conf "$1" "isolated-$RANDOM$RANDOM"
  nc_reload "$1"
  wait_until 30 "nats-cluster node $1 cut off" nc_cut "$1" || die "node $1 still has routes"
}

# nc_cut N: node N has no route, the others see only each other.
nc_cut() {
  local i
  [[ $(nc_routes "$1") == 0 ]] || return 1
  for i in 0 1 2; do
    (( i == $1 )) && continue
    [[ $(nc_routes "$i") == 1 ]] || return 1
  done
}

node_heal() {
  nc_conf "$1" "$NC_PASS"
  nc_reload "$1"
  wait_until 90 "nats-cluster (node $1 healed)" nc_whole || die "node $1 did not rejoin"
}
