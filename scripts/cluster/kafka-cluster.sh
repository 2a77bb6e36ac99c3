# kafka-cluster: three KRaft nodes, each a combined controller and broker (sourced by scripts/cluster.sh).
#
# Node N (1..3, index N-1): clients on 127.0.0.1:919N (advertised as is), the inter-broker
# listener on 127.0.0.1:939N (advertised as kafka-N:939N), the controller listener on
# 127.0.0.1:929N (voters 1@kafka-1:9291,2@kafka-2:9292,3@kafka-3:9293, and advertised as
# kafka-N:929N too: Kafka 3.9 tells the followers the Raft leader's advertised controller
# endpoint, and without it they fetched from 127.0.0.1:929N directly, past the proxies, so a cut
# off active controller went on leading the quorum and no new one was elected while it was
# cut off). Heap -Xmx384m each; the Raft layer logs at INFO in each node's server.log.
# Broker defaults: default.replication.factor 3, min.insync.replicas 2 (the channel topics
# get the same from the adapter's defaults), internal topics RF 3; short failure detection:
# broker.session.timeout.ms 3000, replica.lag.time.max.ms 5000.
#
# The links between the nodes go through a toxiproxy server (built from the module's
# github.com/Shopify/toxiproxy/v2, the library channelstest/linkfault runs in-process; API on
# 127.0.0.1:8494): each JVM resolves the peer names with a hosts file of its own
# (-Djdk.net.hosts.file), where kafka-J is 127.0.N.J for node N, the address of the proxies
# "N-J-internal" and "N-J-controller" to node J's inter-broker and controller listeners. So
# every connection from node N to node J (replica fetches, Raft, broker heartbeats) has its own
# proxy, and the clients reach the brokers directly.
#
# isolate N: the proxies from and to node N are disabled (their connections closed, new ones
# refused): node N is cut off from the controller quorum and from the other brokers while its
# clients still reach it. A partition it leads cannot get acks=all sends through (its followers
# no longer fetch, and only the controller it cannot reach could shrink the ISR), so such sends
# fail; the majority fences it and elects new leaders. heal N enables the proxies again and
# waits until every partition is fully replicated. While cut off, node N hears of none of this:
# it still names itself the leader of the partitions it led (its high watermark frozen), so a
# client that asks it for metadata reads nothing new from it until the client asks another node
# (measured: consumption resumed 17-31 s after the cut, against 3-4 s when only node N's broker
# heartbeats were cut and its Raft fetches still brought it the new leaders).
#
# Measured on 2 cores: up (format, 3 JVMs) 20-23 s; the three scenarios about 120 s.

KC_NODES=3
KC_CLUSTER_ID=${KC_CLUSTER_ID:-Y2hhbm5lbHMta2Fma2EtY2w}
KC_API=127.0.0.1:8494
kc_libs() { echo "$STATE/kafka/libs"; }
kc_cp() { echo "$(kc_libs)/*"; }
kc_dir() { echo "$CSTATE/n$(( $1 + 1 ))"; }
kc_port() { echo $(( 9191 + $1 )); }
kc_bootstrap() { echo "127.0.0.1:9191,127.0.0.1:9192,127.0.0.1:9193"; }

# kc_closefds: closes every descriptor above stderr of the current (sub)shell, so that a daemon
# started from it keeps no lock open (flock /tmp/cluster.lock -c ... passes its lock on).
kc_closefds() {
  local fd
  for fd in /proc/$BASHPID/fd/*; do
    fd=${fd##*/}
    (( fd > 2 )) && eval "exec $fd>&-" 2>/dev/null || true
  done
}

kc_tool() {
  java -Xmx256m -XX:TieredStopAtLevel=1 -cp "$(kc_cp)" -Dlog4j.configuration="file:$CSTATE/tools-log4j.properties" "$@"
}

kc_jars() {
  command -v java >/dev/null || ensure_packages default-jre-headless
  local libs; libs=$(kc_libs)
  if [[ ! -f $libs/.complete ]]; then
    command -v mvn >/dev/null || ensure_packages maven
    mkdir -p "$STATE/kafka"
    local t; t=$(now)
    log "kafka: resolving the broker jars from Maven Central"
    mvn -q -f "$ROOT/scripts/kafka/pom.xml" dependency:copy-dependencies -DincludeScope=runtime \
      -DoutputDirectory="$libs" >"$STATE/kafka/mvn.log" 2>&1 || { tail -30 "$STATE/kafka/mvn.log" >&2; die "maven could not resolve Kafka"; }
    touch "$libs/.complete"
    log "kafka: jars resolved in $(since "$t")"
  fi
}

# --- the proxies between the nodes -----------------------------------------------------------

kc_toxiproxy_bin() { echo "$STATE/bin/toxiproxy-server"; }

kc_proxies_json() {
  local n j sep=""
  echo "["
  for (( n = 1; n <= KC_NODES; n++ )); do
    for (( j = 1; j <= KC_NODES; j++ )); do
      (( n == j )) && continue
      printf '%s{"name":"%d-%d-internal","listen":"127.0.%d.%d:%d","upstream":"127.0.0.1:%d","enabled":true}\n' "$sep" "$n" "$j" "$n" "$j" $(( 9390 + j )) $(( 9390 + j ))
      sep=","
      printf '%s{"name":"%d-%d-controller","listen":"127.0.%d.%d:%d","upstream":"127.0.0.1:%d","enabled":true}\n' "$sep" "$n" "$j" "$n" "$j" $(( 9290 + j )) $(( 9290 + j ))
    done
  done
  echo "]"
}

kc_api_up() { curl -sf "http://$KC_API/version" >/dev/null; }

kc_proxy_up() {
  ensure_packages curl
  local bin; bin=$(kc_toxiproxy_bin)
  if [[ ! -x $bin ]]; then
    mkdir -p "$(dirname "$bin")"
    (cd "$ROOT" && go build -o "$bin" github.com/Shopify/toxiproxy/v2/cmd/server) || die "could not build toxiproxy-server"
  fi
  kc_proxies_json >"$CSTATE/proxies.json"
  if ! pid_alive "$CSTATE/toxiproxy.pid"; then
    (kc_closefds; nohup "$bin" -host 127.0.0.1 -port "${KC_API##*:}" -config "$CSTATE/proxies.json" >"$CSTATE/toxiproxy.log" 2>&1 & echo $! >"$CSTATE/toxiproxy.pid")
  fi
  wait_until 20 "toxiproxy on $KC_API" kc_api_up || { tail -20 "$CSTATE/toxiproxy.log" >&2; die "toxiproxy did not start"; }
}

# kc_links I on|off: enables or disables the proxies from and to node index I.
kc_links() {
  local n=$(( $1 + 1 )) enabled=true j kind
  [[ $2 == off ]] && enabled=false
  for (( j = 1; j <= KC_NODES; j++ )); do
    (( j == n )) && continue
    for kind in internal controller; do
      curl -sf -X POST -H 'Content-Type: application/json' -d "{\"enabled\":$enabled}" \
        "http://$KC_API/proxies/$n-$j-$kind" >/dev/null || die "toxiproxy: $n-$j-$kind"
      curl -sf -X POST -H 'Content-Type: application/json' -d "{\"enabled\":$enabled}" \
        "http://$KC_API/proxies/$j-$n-$kind" >/dev/null || die "toxiproxy: $j-$n-$kind"
    done
  done
}

# --- the nodes -------------------------------------------------------------------------------

kc_write_config() {
  local i=$1 n=$(( $1 + 1 )) dir; dir=$(kc_dir "$i")
  mkdir -p "$dir"
  {
    echo "127.0.0.1 localhost"
    local j
    for (( j = 1; j <= KC_NODES; j++ )); do
      if (( j == n )); then echo "127.0.0.1 kafka-$j"; else echo "127.0.$n.$j kafka-$j"; fi
    done
  } >"$dir/hosts"
  cat >"$dir/log4j.properties" <<EOF
log4j.rootLogger=WARN, file
log4j.appender.file=org.apache.log4j.RollingFileAppender
log4j.appender.file.File=$dir/server.log
log4j.appender.file.MaxFileSize=10MB
log4j.appender.file.MaxBackupIndex=1
log4j.appender.file.layout=org.apache.log4j.PatternLayout
log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.server.KafkaServer=INFO
log4j.logger.kafka.server.BrokerServer=INFO
log4j.logger.org.apache.kafka.raft=INFO
EOF
  cat >"$dir/server.properties" <<EOF
process.roles=broker,controller
node.id=$n
controller.quorum.voters=1@kafka-1:9291,2@kafka-2:9292,3@kafka-3:9293
listeners=CLIENT://127.0.0.1:$(( 9190 + n )),INTERNAL://127.0.0.1:$(( 9390 + n )),CONTROLLER://127.0.0.1:$(( 9290 + n ))
advertised.listeners=CLIENT://127.0.0.1:$(( 9190 + n )),INTERNAL://kafka-$n:$(( 9390 + n )),CONTROLLER://kafka-$n:$(( 9290 + n ))
controller.listener.names=CONTROLLER
inter.broker.listener.name=INTERNAL
listener.security.protocol.map=CONTROLLER:PLAINTEXT,CLIENT:PLAINTEXT,INTERNAL:PLAINTEXT
log.dirs=$dir/data
num.partitions=1
auto.create.topics.enable=false
default.replication.factor=3
min.insync.replicas=2
unclean.leader.election.enable=false
offsets.topic.replication.factor=3
offsets.topic.num.partitions=6
transaction.state.log.replication.factor=3
transaction.state.log.min.isr=2
share.coordinator.state.topic.replication.factor=3
group.min.session.timeout.ms=1000
group.initial.rebalance.delay.ms=0
broker.heartbeat.interval.ms=500
broker.session.timeout.ms=3000
replica.lag.time.max.ms=5000
controller.quorum.election.timeout.ms=1000
controller.quorum.fetch.timeout.ms=2000
log.retention.hours=1
log.segment.bytes=16777216
log.retention.check.interval.ms=60000
num.network.threads=2
num.io.threads=2
num.replica.fetchers=1
background.threads=2
EOF
}

kc_format() {
  local i=$1 dir; dir=$(kc_dir "$i")
  [[ -f $dir/data/meta.properties ]] && return 0
  kc_tool kafka.tools.StorageTool format -t "$KC_CLUSTER_ID" -c "$dir/server.properties" >"$dir/format.log" 2>&1 \
    || { cat "$dir/format.log" >&2; die "kafka storage format of node $i failed"; }
}

kc_launch() {
  local i=$1 dir; dir=$(kc_dir "$i")
  (
    kc_closefds
    # shellcheck disable=SC2046
    nohup java -Xms128m -Xmx384m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Xss512k -Djava.awt.headless=true \
      -Djdk.net.hosts.file="$dir/hosts" -Dlog4j.configuration="file:$dir/log4j.properties" \
      -cp "$(kc_cp)" kafka.Kafka "$dir/server.properties" >"$dir/stdout.log" 2>&1 &
    echo $! >"$dir/kafka.pid"
  )
}

# kc_ready I: node I answers a metadata request that lists all three brokers.
kc_ready() {
  port_open "$(kc_port "$1")" || return 1
  [[ $(kc_tool kafka.admin.BrokerApiVersionsCommand --bootstrap-server "127.0.0.1:$(kc_port "$1")" 2>/dev/null \
    | grep -c '^127.0.0.1:919[1-3] (id: [0-9]') == "$KC_NODES" ]]
}

# kc_replicated: every partition of the cluster has its full ISR (none under-replicated).
kc_replicated() {
  local out
  out=$(kc_tool org.apache.kafka.tools.TopicCommand --bootstrap-server "$(kc_bootstrap)" --describe --under-replicated-partitions 2>/dev/null) || return 1
  [[ -z $out ]]
}

cluster_up() {
  kc_jars
  cat >"$CSTATE/tools-log4j.properties" <<'EOF'
log4j.rootLogger=ERROR, stderr
log4j.appender.stderr=org.apache.log4j.ConsoleAppender
log4j.appender.stderr.Target=System.err
log4j.appender.stderr.layout=org.apache.log4j.PatternLayout
log4j.appender.stderr.layout.ConversionPattern=[%d] %p %m (%c)%n
EOF
  kc_proxy_up
  local i
  for (( i = 0; i < KC_NODES; i++ )); do kc_write_config "$i"; done
  for (( i = 0; i < KC_NODES; i++ )); do kc_format "$i" & done
  wait
  for (( i = 0; i < KC_NODES; i++ )); do
    pid_alive "$(kc_dir "$i")/kafka.pid" || kc_launch "$i"
  done
  for (( i = 0; i < KC_NODES; i++ )); do
    wait_until 120 "kafka-cluster node $i" kc_ready "$i" \
      || { tail -n 30 "$(kc_dir "$i")/stdout.log" "$(kc_dir "$i")/server.log" >&2 || true; die "kafka-cluster node $i did not start"; }
  done
}

cluster_down() {
  local i
  for (( i = 0; i < KC_NODES; i++ )); do
    # No graceful shutdown: the data is removed below.
    pid_alive "$(kc_dir "$i")/kafka.pid" && kill -9 "$(cat "$(kc_dir "$i")/kafka.pid")" 2>/dev/null
    stop_pidfile "$(kc_dir "$i")/kafka.pid" "kafka-cluster node $i"
  done
  stop_pidfile "$CSTATE/toxiproxy.pid" "kafka-cluster toxiproxy"
  rm -rf "$CSTATE"
  log "kafka-cluster: down"
}

cluster_status() {
  local i
  for (( i = 0; i < KC_NODES; i++ )); do
    if port_open "$(kc_port "$i")"; then echo "kafka-cluster node $i: up on $(kc_port "$i")"; else echo "kafka-cluster node $i: down"; fi
  done
}

node_kill() {
  local i=$1 f pid; f=$(kc_dir "$1")/kafka.pid
  pid_alive "$f" || die "kafka-cluster node $i is not running"
  pid=$(cat "$f")
  kill -9 "$pid"
  wait_until 10 "kafka-cluster node $i killed" bash -c "! kill -0 $pid" || die "node $i survived SIGKILL"
  rm -f "$f"
}

node_start() {
  local i=$1
  pid_alive "$(kc_dir "$i")/kafka.pid" || kc_launch "$i"
  wait_until 120 "kafka-cluster node $i back" kc_ready "$i" || die "kafka-cluster node $i did not come back"
  wait_until 120 "kafka-cluster fully replicated" kc_replicated || die "kafka-cluster: partitions still under-replicated"
}

node_isolate() { kc_links "$1" off; log "kafka-cluster: node $1 cut off"; }

node_heal() {
  kc_links "$1" on
  wait_until 120 "kafka-cluster fully replicated" kc_replicated || die "kafka-cluster: partitions still under-replicated after heal"
}
