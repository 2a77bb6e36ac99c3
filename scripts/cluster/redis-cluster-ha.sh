# Profile redis-cluster-ha (sourced by scripts/cluster.sh): Redis Cluster of 3 masters and
# 3 replicas. Node N (0-based) has a loopback address of its own, 127.0.1.(N+1), and listens
# there on port 7101+N (cluster bus +10000: 17101+N); `redis-cli --cluster create` makes nodes
# 0-2 the first masters. Each node binds only its address, announces it (cluster-announce-ip)
# and opens its own connections (cluster bus, replication) from it (bind-source-addr), so the
# traffic between two nodes always goes from one 127.0.1.x address to another, while a client
# on 127.0.0.1 reaches every node from 127.0.0.1. protected-mode is off: it lets in only
# 127.0.0.1 and ::1 when no password is set, which would refuse the replicas (every address
# is a loopback one anyway).
#
# Settings: appendonly yes (appendfsync everysec), cluster-node-timeout 1000 ms (a dead master
# is replaced in about 2-3 s), cluster-require-full-coverage no (the other slots keep serving
# while one is failing over), cluster-replica-validity-factor 0 (a replica is always allowed to
# take over, however long it was cut off: with one replica per master there is no other
# candidate).
#
# Isolate/heal: a traffic-control black hole on lo (tc, needs cap_net_admin; there is no
# iptables/nft here, nor the tc `drop` action or netem). Isolate N adds, once, an htb root on
# lo whose default class (100gbit) carries all traffic as before and whose class 1:2 (8 bit/s,
# a pfifo of limit 0) drops whatever enters it, then two u32 filters (filter priority 71+N)
# sending into 1:2 the packets from node N's address to 127.0.1.0/24 and from 127.0.1.0/24 to
# node N's address: every link between N and its peers goes silent (cluster bus and
# replication, both directions, established connections included), the links of clients on
# 127.0.0.1 are untouched. Isolate returns once every other node flags N as failed. Heal removes
# N's filters, and the root qdisc once no filter is left (heal is idempotent; down removes what
# isolate added), then waits until the cluster is whole again (the cut-off master, outvoted,
# comes back as the replica of the one promoted meanwhile). Measured here: every peer flags the
# cut-off node failed 1.4 s after isolate, its replica had taken over its slots 3 s later at the
# latest, heal returns in about 5 s (the old master resynced as a replica); with the htb root
# on lo, loopback PINGs, pipelined PINGs and 64 KiB SETs ran as fast as without (within the
# noise of two shared cores).
#
# Measured start (2 cores, warm packages): about 7 s (6.2-7.1 s); a node back after kill: about 5 s.
RHA_PORTS=(7101 7102 7103 7104 7105 7106)
RHA_NET=127.0.1      # node N: $RHA_NET.(N+1)
RHA_PRIO=71          # tc filter priority of node N's filters: RHA_PRIO+N

rha_dir() { echo "$CSTATE/${RHA_PORTS[$1]}"; }
rha_ip() { echo "$RHA_NET.$(( $1 + 1 ))"; }
rha_cli() { local i=$1; shift; redis-cli -h "$(rha_ip "$i")" -p "${RHA_PORTS[$i]}" "$@"; }
rha_ping() { [[ $(rha_cli "$1" ping 2>/dev/null) == PONG ]]; }

rha_start_node() {
  local i=$1 ip port=${RHA_PORTS[$1]} dir
  ip=$(rha_ip "$i"); dir=$(rha_dir "$i")
  mkdir -p "$dir"
  redis-server --bind "$ip" --bind-source-addr "$ip" --cluster-announce-ip "$ip" --port "$port" \
    --protected-mode no --dir "$dir" --appendonly yes --save '' \
    --daemonize yes --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" \
    --cluster-enabled yes --cluster-config-file nodes.conf --cluster-node-timeout 1000 \
    --cluster-require-full-coverage no --cluster-replica-validity-factor 0
  wait_until 30 "redis-cluster-ha node $i ($ip:$port)" rha_ping "$i" || die "redis node $ip:$port did not start; see $dir/redis.log"
}

# rha_whole: every node up, cluster_state ok on each, every master has a replica in sync.
rha_whole() {
  local i masters=0 synced=0
  for i in "${!RHA_PORTS[@]}"; do
    rha_cli "$i" cluster info 2>/dev/null | grep -q 'cluster_state:ok' || return 1
  done
  local info
  for i in "${!RHA_PORTS[@]}"; do
    info=$(rha_cli "$i" info replication 2>/dev/null) || return 1
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
  views=$(for i in "${!RHA_PORTS[@]}"; do
    rha_cli "$i" cluster nodes 2>/dev/null | awk '$3 ~ /master/ && $3 !~ /fail/ && $8 == "connected" && NF > 8 {print $2}' | sort | tr '\n' ' '; echo
  done | sort -u | wc -l)
  (( views == 1 ))
}

cluster_up() {
  ensure_packages redis-tools redis-server iproute2
  local i
  for i in "${!RHA_PORTS[@]}"; do
    rha_ping "$i" || rha_start_node "$i"
  done
  local known; known=$(rha_cli 0 cluster info | awk -F: '/cluster_known_nodes/ {print $2+0}')
  if (( known < ${#RHA_PORTS[@]} )); then
    local addrs=()
    for i in "${!RHA_PORTS[@]}"; do addrs+=("$(rha_ip "$i"):${RHA_PORTS[$i]}"); done
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
  for i in "${!RHA_PORTS[@]}"; do rha_unblock "$i"; done # what a failed run left on lo
}

cluster_status() {
  local i
  for i in "${!RHA_PORTS[@]}"; do
    if rha_ping "$i"; then
      echo "$(rha_ip "$i"):${RHA_PORTS[$i]}: $(rha_cli "$i" info replication | awk -F: '/^role/ {gsub(/\r/,""); print $2}')"
    else
      echo "$(rha_ip "$i"):${RHA_PORTS[$i]}: down"
    fi
  done
  rha_whole && echo "redis-cluster-ha: whole" || echo "redis-cluster-ha: not whole"
  tc filter show dev lo parent 1: 2>/dev/null | grep -q . && echo "lo: isolation filters in place (tc filter show dev lo parent 1:)"
  return 0
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

# rha_shaped: lo carries the black-hole htb of node_isolate.
rha_shaped() { tc class show dev lo 2>/dev/null | grep -q '^class htb 1:2 '; }

# rha_blackhole: the htb root of node_isolate on lo (default class 1:1 unlimited, 1:2 drops).
rha_blackhole() {
  rha_shaped && return 0
  tc qdisc show dev lo | grep -q '^qdisc noqueue 0: root' \
    || die "lo has a root qdisc this profile did not add: $(tc qdisc show dev lo | head -1)"
  tc qdisc add dev lo root handle 1: htb default 1 &&
    tc class add dev lo parent 1: classid 1:1 htb rate 100gbit quantum 200000 &&
    tc class add dev lo parent 1: classid 1:2 htb rate 8bit ceil 8bit burst 1 cburst 1 quantum 1500 &&
    tc qdisc add dev lo parent 1:2 handle 20: pfifo limit 0 \
    || { tc qdisc del dev lo root 2>/dev/null; die "tc: could not set up the black hole on lo (needs cap_net_admin)"; }
}

# rha_unblock N: removes node N's filters, and the htb root once no filter is left.
rha_unblock() {
  rha_shaped || return 0
  tc filter del dev lo parent 1: prio $((RHA_PRIO + $1)) 2>/dev/null || true
  tc filter show dev lo parent 1: | grep -q . || tc qdisc del dev lo root
}

# rha_failed_by_all N: every other node flags node N as failed.
rha_failed_by_all() {
  local id j; id=$(rha_cli "$1" cluster myid) || return 1
  for j in "${!RHA_PORTS[@]}"; do
    (( j == $1 )) && continue
    rha_cli "$j" cluster nodes | awk -v id="$id" '$1 == id && $3 ~ /(^|,)fail(,|$)/ {ok = 1} END {exit !ok}' || return 1
  done
}

node_isolate() {
  local i=$1 ip prio=$((RHA_PRIO + $1)); ip=$(rha_ip "$1")
  rha_blackhole
  tc filter del dev lo parent 1: prio "$prio" 2>/dev/null || true # isolating twice: one pair of filters
  tc filter add dev lo parent 1: protocol ip prio "$prio" u32 match ip src "$ip/32" match ip dst "$RHA_NET.0/24" flowid 1:2 &&
    tc filter add dev lo parent 1: protocol ip prio "$prio" u32 match ip src "$RHA_NET.0/24" match ip dst "$ip/32" flowid 1:2 \
    || { rha_unblock "$i"; die "tc: could not add the filters isolating node $i"; }
  wait_until 30 "redis-cluster-ha node $i cut off" rha_failed_by_all "$i" || die "node $i is not flagged failed by its peers"
}

node_heal() {
  rha_unblock "$1"
  wait_until 90 "redis-cluster-ha (node $1 healed)" rha_whole || die "node $1 did not rejoin"
}

# node_leader CH: the node index of the master serving the slot of key CH.
node_leader() {
  local slot i
  for i in "${!RHA_PORTS[@]}"; do rha_ping "$i" && break; done
  slot=$(rha_cli "$i" cluster keyslot "$1")
  local ip
  ip=$(rha_cli "$i" cluster nodes | awk -v s="$slot" '$3 ~ /master/ && $3 !~ /fail/ {
      for (f = 9; f <= NF; f++) { n = split($f, r, "-"); lo = r[1]; hi = (n > 1 ? r[2] : r[1]); if (s >= lo && s <= hi) { split($2, a, ":"); print a[1] } } }')
  [[ -n $ip ]] || die "no master serves slot $slot"
  echo $(( ${ip##*.} - 1 ))
}
