# rabbitmq-cluster: three RabbitMQ nodes joined into one cluster (sourced by scripts/cluster.sh).
#
# Nodes rabbitc1..3@localhost: AMQP 127.0.0.1:5681-5683, distribution 25681-25683, the epmd on
# 4369 (started here only when none runs). Each node has its own RABBITMQ_MNESIA_BASE,
# LOG_BASE and config under $CSTATE/nN (owned by rabbitmq:rabbitmq); they share the Erlang
# cookie of the rabbitmq user's home. Nodes 2 and 3 join node 1 (stop_app, join_cluster,
# start_app). cluster_partition_handling = pause_minority: a node that loses sight of the
# majority stops serving (closes its client connections and its listener) until it sees the
# majority again.
#
# Group queues are quorum queues (the adapter's default) with one member per node (RabbitMQ's
# default x-quorum-initial-group-size is every cluster node): a publisher confirm comes once a
# Raft majority (2 of 3) has the message on disk.
#
# isolate N: node N's Erlang cookie for the two other nodes is changed and its distribution
# links to them are closed (erlang:set_cookie/2 per peer, erlang:disconnect_node/1): every
# reconnection, from either side, fails the cookie check, while rabbitmqctl (which uses the
# node's own cookie) and AMQP clients still reach it. pause_minority then pauses node N. heal N
# restores the cookie, reconnects and waits until the three nodes run again.
# (A firewall was not an option: no iptables/nft here, and the distribution ports are found
# through epmd, which a proxy on the dist port would bypass.)
#
# leader CH: the node index of the leader of the quorum queue(s) "<group>.CH".
#
# Measured on 2 cores: up (3 fresh nodes, 2 joins) 19 s alone, 32-54 s beside other work; a killed
# node back in the cluster in about 7 s; the three scenarios about 85 s.

RC_NODES=3
rc_name() { echo "rabbitc$(( $1 + 1 ))@localhost"; }
rc_port() { echo $(( 5681 + $1 )); }
rc_dir() { echo "$CSTATE/n$(( $1 + 1 ))"; }

rc_env() {
  local i=$1 dir; dir=$(rc_dir "$i")
  export RABBITMQ_NODENAME; RABBITMQ_NODENAME=$(rc_name "$i")
  export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
  export RABBITMQ_NODE_PORT; RABBITMQ_NODE_PORT=$(rc_port "$i")
  export RABBITMQ_DIST_PORT=$(( 25681 + i ))
  export ERL_EPMD_ADDRESS=127.0.0.1
  export RABBITMQ_MNESIA_BASE=$dir/mnesia
  export RABBITMQ_LOG_BASE=$dir/log
  export RABBITMQ_CONFIG_FILE=$dir/rabbitmq.conf
  export RABBITMQ_ENABLED_PLUGINS_FILE=$dir/enabled_plugins
  export RABBITMQ_PID_FILE=$dir/rabbit.pid
  export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
}

rc_ctl() { local i=$1; shift; rabbitmqctl -q -n "$(rc_name "$i")" "$@"; }

# rc_handshake PORT: the first frame RabbitMQ answers the AMQP 0-9-1 header with is a method frame.
rc_handshake() {
  local reply
  reply=$(timeout 3 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1 && printf 'AMQP\0\0\x09\x01' >&3 && head -c 3 <&3 | od -An -tx1" 2>/dev/null) || return 1
  [[ ${reply//[[:space:]]/} == 010000 ]]
}

# rc_running I: the number of cluster nodes node I sees running (0 when it does not answer).
rc_running() { rc_ctl "$1" eval 'length(rabbit_nodes:all_running()).' 2>/dev/null || echo 0; }

# rc_whole I: node I serves AMQP and sees the whole cluster running.
rc_whole() { rc_handshake "$(rc_port "$1")" && [[ $(rc_running "$1") == "$RC_NODES" ]]; }

# rc_closefds: closes every descriptor above stderr of the current (sub)shell, so that a daemon
# started from it keeps no lock open (flock /tmp/cluster.lock -c ... passes its lock on).
rc_closefds() {
  local fd
  for fd in /proc/$BASHPID/fd/*; do
    fd=${fd##*/}
    (( fd > 2 )) && eval "exec $fd>&-" 2>/dev/null || true
  done
}

rc_launch() {
  local i=$1 dir; dir=$(rc_dir "$i")
  (
    rc_closefds
    rc_env "$i"
    nohup rabbitmq-server >"$dir/server.out" 2>&1 &
    echo $! >"$dir/launcher.pid"
  )
}

rc_write_config() {
  local i=$1 dir; dir=$(rc_dir "$i")
  mkdir -p "$dir/mnesia" "$dir/log"
  cat >"$dir/rabbitmq.conf" <<EOF
listeners.tcp.default = 127.0.0.1:$(rc_port "$i")
loopback_users = none
log.console = false
log.file.level = warning
cluster_partition_handling = pause_minority
vm_memory_high_watermark.relative = 0.2
disk_free_limit.absolute = 50MB
EOF
  echo '[].' >"$dir/enabled_plugins"
}

cluster_up() {
  ensure_packages rabbitmq-server
  local i
  if rc_whole 0 2>/dev/null; then log "rabbitmq-cluster: reusing the running cluster"; return; fi
  for (( i = 0; i < RC_NODES; i++ )); do rc_write_config "$i"; done
  chown -R rabbitmq:rabbitmq "$CSTATE"
  if ! port_open 4369; then
    (rc_closefds; nohup epmd -address 127.0.0.1 >"$CSTATE/epmd.log" 2>&1 & echo $! >"$CSTATE/epmd.pid")
    wait_until 10 "epmd on 4369" port_open 4369 || die "epmd did not start"
  fi
  for (( i = 0; i < RC_NODES; i++ )); do
    pid_alive "$(rc_dir "$i")/rabbit.pid" || rc_launch "$i"
  done
  for (( i = 0; i < RC_NODES; i++ )); do
    wait_until 120 "$(rc_name "$i")" rc_handshake "$(rc_port "$i")" \
      || { tail -30 "$(rc_dir "$i")/server.out" >&2; die "$(rc_name "$i") did not start"; }
  done
  for (( i = 1; i < RC_NODES; i++ )); do
    if [[ $(rc_ctl "$i" eval 'lists:member(rabbitc1@localhost, rabbit_nodes:all()).' 2>/dev/null) != true ]]; then
      rc_ctl "$i" stop_app >/dev/null
      rc_ctl "$i" join_cluster "$(rc_name 0)" >/dev/null || die "$(rc_name "$i") could not join $(rc_name 0)"
      rc_ctl "$i" start_app >/dev/null
    fi
  done
  for (( i = 0; i < RC_NODES; i++ )); do
    wait_until 60 "$(rc_name "$i") in the cluster" rc_whole "$i" || die "$(rc_name "$i") does not see the whole cluster"
  done
}

cluster_down() {
  local i dir
  for (( i = 0; i < RC_NODES; i++ )); do
    dir=$(rc_dir "$i")
    if pid_alive "$dir/rabbit.pid"; then
      # No graceful stop: the data is removed below.
      kill -9 "$(cat "$dir/rabbit.pid")" 2>/dev/null || true
    fi
    stop_pidfile "$dir/launcher.pid" "$(rc_name "$i") launcher"
  done
  # The epmd started here, once no Erlang node is registered with it.
  if pid_alive "$CSTATE/epmd.pid"; then
    wait_until 10 "epmd empty" bash -c '! epmd -names 2>/dev/null | grep -q "^name "' || true
    epmd -names 2>/dev/null | grep -q '^name ' || stop_pidfile "$CSTATE/epmd.pid" epmd
  fi
  if ! pid_alive "$CSTATE/epmd.pid"; then rm -rf "$CSTATE"; fi
  log "rabbitmq-cluster: down"
}

cluster_status() {
  local i
  for (( i = 0; i < RC_NODES; i++ )); do
    if rc_handshake "$(rc_port "$i")"; then
      echo "$(rc_name "$i"): up on $(rc_port "$i"), sees $(rc_running "$i") running"
    else
      echo "$(rc_name "$i"): down"
    fi
  done
}

node_kill() {
  local i=$1 dir pid; dir=$(rc_dir "$1")
  pid_alive "$dir/rabbit.pid" || die "$(rc_name "$i") is not running"
  pid=$(cat "$dir/rabbit.pid")
  kill -9 "$pid"
  wait_until 10 "$(rc_name "$i") killed" bash -c "! kill -0 $pid" || die "$(rc_name "$i") survived SIGKILL"
  rm -f "$dir/rabbit.pid"
}

node_start() {
  local i=$1
  pid_alive "$(rc_dir "$i")/rabbit.pid" || rc_launch "$i"
  wait_until 120 "$(rc_name "$i") back in the cluster" rc_whole "$i" \
    || { tail -30 "$(rc_dir "$i")/server.out" >&2; die "$(rc_name "$i") did not rejoin"; }
}

# rc_others I: the Erlang list of the other nodes' names.
rc_others() {
  local i=$1 j out=""
  for (( j = 0; j < RC_NODES; j++ )); do
    (( j == i )) && continue
    out+="${out:+,}'$(rc_name "$j")'"
  done
  echo "[$out]"
}

node_isolate() {
  local i=$1 others; others=$(rc_others "$1")
  rc_ctl "$i" eval "[begin erlang:set_cookie(N, channels_isolated), erlang:disconnect_node(N) end || N <- $others], ok." >/dev/null \
    || die "could not isolate $(rc_name "$i")"
  # The node sees none of the others (pause_minority then pauses it).
  wait_until 30 "$(rc_name "$i") cut off" bash -c "[[ \$(rabbitmqctl -q -n $(rc_name "$i") eval 'length(nodes()).' 2>/dev/null) == 0 ]]" \
    || die "$(rc_name "$i") still connected to its peers"
}

node_heal() {
  local i=$1 others; others=$(rc_others "$1")
  rc_ctl "$i" eval "Cookie = erlang:get_cookie(), [begin erlang:set_cookie(N, Cookie), net_kernel:connect_node(N) end || N <- $others], ok." >/dev/null \
    || die "could not heal $(rc_name "$i")"
  local j
  for (( j = 0; j < RC_NODES; j++ )); do
    wait_until 120 "$(rc_name "$j") sees the whole cluster" rc_whole "$j" || die "$(rc_name "$j") does not see the whole cluster after heal"
  done
}

node_leader() {
  local ch=$1 i out
  for (( i = 0; i < RC_NODES; i++ )); do
    out=$(rc_ctl "$i" list_queues name leader --no-table-headers 2>/dev/null) || continue
    local leader
    leader=$(awk -v ch=".$ch" '{ n = length(ch); if (substr($1, length($1) - n + 1) == ch && $2 ~ /@/) { print $2; exit } }' <<<"$out")
    [[ -n $leader ]] || die "no quorum queue for channel $ch"
    local j
    for (( j = 0; j < RC_NODES; j++ )); do
      [[ $leader == "$(rc_name "$j")" ]] && { echo "$j"; return; }
    done
    die "leader $leader is not a node of the cluster"
  done
  die "no node answers"
}
