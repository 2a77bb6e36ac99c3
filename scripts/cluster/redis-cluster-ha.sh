# Profile redis-cluster-ha (sourced by scripts/cluster.sh): Redis Cluster of 3 masters and
# 3 replicas on 127.0.0.1:7101-7106 (cluster bus +10000: 17101-17106). Node N (0-based) is
# the process on port 7101+N; `redis-cli --cluster create` makes 7101-7103 the first masters.
#
# Settings: appendonly yes (appendfsync everysec), cluster-node-timeout 1000 ms (a dead master
# is replaced in about 2-3 s), cluster-require-full-coverage no (the other slots keep serving
# while one is failing over), cluster-replica-validity-factor 0 (a replica is always allowed to
# take over, however long it was cut off: with one replica per master there is no other
# candidate).
#
# Isolate/heal: not offered (Cluster.Isolate stays nil). Cutting one node off from its peers
# while its clients still reach it needs the cluster bus filtered per peer: there is no
# iptables/nft here (tc and its htb qdisc are, with cap_net_admin: a u32 filter dropping the
# node's bus port on lo is the way still to try); a TCP proxy per node (toxiproxy) is not enough, because a Redis node announces one
# bus port to every peer, so a proxy in front of node N cuts only the links the peers open to N,
# and the pings N sends on its own links to them keep N alive in their eyes (Redis 7 counts
# data received on either link).
#
# Measured start (2 cores, warm packages): about 7 s (6.2-7.1 s); a node back after kill: about 5 s.
RHA_PORTS=(7101 7102 7103 7104 7105 7106)

rha_dir() { echo "$CSTATE/${RHA_PORTS[$1]}"; }
rha_ping() { [[ $(redis-cli -h 127.0.0.1 -p "$1" ping 2>/dev/null) == PONG ]]; }

rha_start_node() {
  local i=$1 port=${RHA_PORTS[$1]} dir; dir=$(rha_dir "$1")
  mkdir -p "$dir"
  redis-server --bind 127.0.0.1 --port "$port" --dir "$dir" --appendonly yes --save '' \
    --daemonize yes --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" \
    --cluster-enabled yes --cluster-config-file nodes.conf --cluster-node-timeout 1000 \
    --cluster-require-full-coverage no --cluster-replica-validity-factor 0
  wait_until 30 "redis-cluster-ha node $i ($port)" rha_ping "$port" || die "redis node $port did not start; see $dir/redis.log"
}

# rha_whole: every node up, cluster_state ok on each, every master has a replica in sync.
rha_whole() {
  local p masters=0 synced=0
  for p in "${RHA_PORTS[@]}"; do
    redis-cli -h 127.0.0.1 -p "$p" cluster info 2>/dev/null | grep -q 'cluster_state:ok' || return 1
  done
  local info
  for p in "${RHA_PORTS[@]}"; do
    info=$(redis-cli -h 127.0.0.1 -p "$p" info replication 2>/dev/null) || return 1
    if grep -q '^role:master' <<<"$info"; then
      masters=$((masters + 1))
      grep -q '^connected_slaves:1' <<<"$info" || return 1
    else
      grep -q '^master_link_status:up' <<<"$info" || return 1
      grep -q '^master_sync_in_progress:0' <<<"$info" || return 1
      synced=$((synced + 1))
    fi
  done
  (( masters == 3 && synced == 3 )) || return 1
  # Every node agrees on the masters (no node still believes a dead master serves).
  local views
  views=$(for p in "${RHA_PORTS[@]}"; do
    redis-cli -h 127.0.0.1 -p "$p" cluster nodes 2>/dev/null | awk '$3 ~ /master/ && $3 !~ /fail/ && $8 == "connected" && NF > 8 {print $2}' | sort | tr '\n' ' '; echo
  done | sort -u | wc -l)
  (( views == 1 ))
}

cluster_up() {
  ensure_packages redis-tools redis-server
  local i
  for i in "${!RHA_PORTS[@]}"; do
    rha_ping "${RHA_PORTS[$i]}" || rha_start_node "$i"
  done
  local known; known=$(redis-cli -h 127.0.0.1 -p 7101 cluster info | awk -F: '/cluster_known_nodes/ {print $2+0}')
  if (( known < ${#RHA_PORTS[@]} )); then
    local addrs=() p
    for p in "${RHA_PORTS[@]}"; do addrs+=("127.0.0.1:$p"); done
    redis-cli --cluster create "${addrs[@]}" --cluster-replicas 1 --cluster-yes >"$CSTATE/create.log" 2>&1 \
      || { cat "$CSTATE/create.log" >&2; die "redis-cli --cluster create failed"; }
  fi
  wait_until 60 "redis-cluster-ha" rha_whole || die "redis-cluster-ha not whole; see $CSTATE/*/redis.log"
}

cluster_down() {
  local i
  for i in "${!RHA_PORTS[@]}"; do
    local pf; pf=$(rha_dir "$i")/redis.pid
    pid_alive "$pf" && kill -9 "$(cat "$pf")" 2>/dev/null; rm -f "$pf" # its data goes too
  done
  rm -rf "${CSTATE:?}"/71*
}

cluster_status() {
  local p
  for p in "${RHA_PORTS[@]}"; do
    if rha_ping "$p"; then
      echo "$p: $(redis-cli -h 127.0.0.1 -p "$p" info replication | awk -F: '/^role/ {gsub(/\r/,""); print $2}')"
    else
      echo "$p: down"
    fi
  done
  rha_whole && echo "redis-cluster-ha: whole" || echo "redis-cluster-ha: not whole"
}

node_kill() {
  local pidfile; pidfile=$(rha_dir "$1")/redis.pid
  pid_alive "$pidfile" || { log "node $1 is not running"; return 0; }
  kill -9 "$(cat "$pidfile")"
  rm -f "$pidfile"
}

node_start() {
  rha_start_node "$1"
  wait_until 90 "redis-cluster-ha (node $1 rejoined)" rha_whole || die "node $1 did not rejoin"
}

node_isolate() { die "isolate is not offered by redis-cluster-ha (see the profile header)"; }
node_heal() { die "heal is not offered by redis-cluster-ha (see the profile header)"; }

# node_leader CH: the node index of the master serving the slot of key CH.
node_leader() {
  local slot addr
  slot=$(redis-cli -h 127.0.0.1 -p 7101 cluster keyslot "$1")
  for addr in "${RHA_PORTS[@]}"; do
    rha_ping "$addr" || continue
    redis-cli -h 127.0.0.1 -p "$addr" cluster shards >/dev/null 2>&1 || true
    break
  done
  local port
  port=$(redis-cli -h 127.0.0.1 -p "$addr" cluster nodes | awk -v s="$slot" '$3 ~ /master/ && $3 !~ /fail/ {
      for (f = 9; f <= NF; f++) { n = split($f, r, "-"); lo = r[1]; hi = (n > 1 ? r[2] : r[1]); if (s >= lo && s <= hi) { split($2, a, "[:@]"); print a[2] } } }')
  [[ -n $port ]] || die "no master serves slot $slot"
  echo $((port - 7101))
}
