#!/usr/bin/env bash
# Starts, stops and checks the brokers the e2e tests run against, on 127.0.0.1 only.
#
#   scripts/services.sh up [NAME...]       install if missing, start if not answering, wait until ready
#   scripts/services.sh down [NAME...]     stop what this script started (never a broker it found running)
#   scripts/services.sh status [NAME...]
#   scripts/services.sh restart NAME...    stop and start again, keeping the data
#
# NAME: redis, redis-cluster, rabbitmq, nats, kafka (default: all).
# Ports: redis 6379, cluster 7001-7003, rabbitmq 5672 (management 15672, dist 25672, epmd 4369), nats 4222
# (monitoring 8222), kafka 9092 (controller 9093). State, data, logs, pids and the Kafka jars
# live under .services/ at the repository root. Idempotent: running `up` twice reuses what runs.
# A broker found answering on its port (started by hand, by Docker, by an earlier run) is reused
# and never stopped by `down`; `down` only stops the processes whose pids this script wrote.
#
# Measured on 2 cores (Debian 12): cold `up` (no packages, no jars, empty state) about 55s
# (apt ~19s, Maven Central jars ~17s, first starts ~19s: RabbitMQ ~11s, Kafka ~6s, cluster ~2s);
# warm `up` (everything running) about 1.5s. `restart NAME` keeps each broker's data.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STATE=${CHANNELS_SERVICES_DIR:-$ROOT/.services}
ALL=(redis redis-cluster rabbitmq nats kafka)
KAFKA_CLUSTER_ID=${KAFKA_CLUSTER_ID:-bWljcm9jaGFubmVscy1rYWY}
READY_TIMEOUT=${CHANNELS_READY_TIMEOUT:-180}

mkdir -p "$STATE"

. "$ROOT/scripts/lib.sh"

# --- redis -----------------------------------------------------------------------------------

redis_ping() { [[ $(redis-cli -h 127.0.0.1 -p "$1" ping 2>/dev/null) == PONG ]]; }

start_redis_node() {
  local port=$1 dir=$2; shift 2
  mkdir -p "$dir"
  redis-server --bind 127.0.0.1 --port "$port" --dir "$dir" --appendonly yes --save '' \
    --daemonize yes --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" "$@"
}

up_redis() {
  ensure_packages redis-tools # redis-cli, for the probes
  if redis_ping 6379; then log "redis: reusing the server on 6379"; return; fi
  ensure_packages redis-server
  local t; t=$(now)
  start_redis_node 6379 "$STATE/redis"
  wait_until 30 "redis on 6379" redis_ping 6379 || die "redis did not start; see $STATE/redis/redis.log"
  log "redis: started in $(since "$t")"
}
down_redis() { not_ours redis "$STATE/redis/redis.pid"; stop_pidfile "$STATE/redis/redis.pid" redis; }
status_redis() { redis_ping 6379 && echo "redis: up on 6379$(ours "$STATE/redis/redis.pid")" || echo "redis: down"; }

CLUSTER_PORTS=(7001 7002 7003)
cluster_ok() {
  local p
  for p in "${CLUSTER_PORTS[@]}"; do
    redis-cli -h 127.0.0.1 -p "$p" cluster info 2>/dev/null | grep -q 'cluster_state:ok' || return 1
  done
  # A real round trip through every node: keys that hash to different slots, followed by -c.
  local k
  for k in a b c d e f; do
    redis-cli -c -h 127.0.0.1 -p 7001 set "channels:probe:$k" "$k" >/dev/null 2>&1 || return 1
    [[ $(redis-cli -c -h 127.0.0.1 -p 7002 get "channels:probe:$k" 2>/dev/null) == "$k" ]] || return 1
  done
}

up_redis_cluster() {
  ensure_packages redis-tools
  if cluster_ok; then log "redis-cluster: reusing the cluster on 7001-7003"; return; fi
  ensure_packages redis-server
  local t p; t=$(now)
  for p in "${CLUSTER_PORTS[@]}"; do
    if ! redis_ping "$p"; then
      start_redis_node "$p" "$STATE/redis-cluster/$p" --cluster-enabled yes --cluster-config-file nodes.conf --cluster-node-timeout 5000
    fi
  done
  for p in "${CLUSTER_PORTS[@]}"; do
    wait_until 30 "redis-cluster node $p" redis_ping "$p" || die "redis node $p did not start"
  done
  local known; known=$(redis-cli -h 127.0.0.1 -p 7001 cluster info | awk -F: '/cluster_known_nodes/ {print $2+0}')
  if (( known < ${#CLUSTER_PORTS[@]} )); then
    redis-cli --cluster create 127.0.0.1:7001 127.0.0.1:7002 127.0.0.1:7003 --cluster-replicas 0 --cluster-yes >"$STATE/redis-cluster/create.log" 2>&1 \
      || { cat "$STATE/redis-cluster/create.log" >&2; die "redis-cli --cluster create failed"; }
  fi
  wait_until 60 "redis-cluster" cluster_ok || die "redis cluster not ok; see $STATE/redis-cluster/*/redis.log"
  log "redis-cluster: started in $(since "$t")"
}
down_redis_cluster() {
  local p
  for p in "${CLUSTER_PORTS[@]}"; do
    not_ours "redis-cluster $p" "$STATE/redis-cluster/$p/redis.pid"
    stop_pidfile "$STATE/redis-cluster/$p/redis.pid" "redis-cluster $p" & # the three at once
  done
  wait
}
status_redis_cluster() { cluster_ok && echo "redis-cluster: up on 7001-7003$(ours "$STATE/redis-cluster/7001/redis.pid")" || echo "redis-cluster: down"; }

# --- rabbitmq --------------------------------------------------------------------------------

rabbit_env() {
  export RABBITMQ_NODENAME=rabbit@localhost
  export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
  export RABBITMQ_NODE_PORT=5672
  export RABBITMQ_DIST_PORT=25672
  export ERL_EPMD_ADDRESS=127.0.0.1
  export RABBITMQ_MNESIA_BASE=$STATE/rabbitmq/mnesia
  export RABBITMQ_LOG_BASE=$STATE/rabbitmq/log
  export RABBITMQ_CONFIG_FILE=$STATE/rabbitmq/rabbitmq.conf
  export RABBITMQ_ENABLED_PLUGINS_FILE=$STATE/rabbitmq/enabled_plugins
  export RABBITMQ_PID_FILE=$STATE/rabbitmq/rabbit.pid
  export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
}

# amqp_handshake: a real AMQP round trip: send the 0-9-1 protocol header, expect the first
# frame back to be a method frame (type 1) on channel 0, i.e. connection.start.
amqp_handshake() {
  local reply
  reply=$(timeout 3 bash -c 'exec 3<>/dev/tcp/127.0.0.1/5672 && printf "AMQP\0\0\x09\x01" >&3 && head -c 3 <&3 | od -An -tx1' 2>/dev/null) || return 1
  [[ ${reply//[[:space:]]/} == 010000 ]]
}

rabbit_ready() {
  rabbit_env
  rabbitmq-diagnostics -q -n rabbit@localhost check_port_connectivity >/dev/null 2>&1
}

rabbit_and_amqp_ready() { rabbit_ready && amqp_handshake; }

up_rabbitmq() {
  if amqp_handshake; then log "rabbitmq: reusing the server on 5672"; return; fi
  ensure_packages rabbitmq-server
  local t; t=$(now)
  rabbit_env
  mkdir -p "$STATE/rabbitmq/mnesia" "$STATE/rabbitmq/log"
  cat >"$RABBITMQ_CONFIG_FILE" <<'EOF'
listeners.tcp.default = 127.0.0.1:5672
loopback_users = none
log.console = false
log.file.level = warning
vm_memory_high_watermark.relative = 0.3
disk_free_limit.absolute = 50MB
management.tcp.ip = 127.0.0.1
management.tcp.port = 15672
EOF
  # The management HTTP API lists exchanges and queues (amqp.Adapter.Channels).
  echo '[rabbitmq_management].' >"$RABBITMQ_ENABLED_PLUGINS_FILE"
  if id rabbitmq >/dev/null 2>&1; then chown -R rabbitmq:rabbitmq "$STATE/rabbitmq"; fi
  # epmd (Erlang port mapper) on loopback, with a pid file so `down` can stop it again.
  if ! port_open 4369; then
    nohup epmd -address 127.0.0.1 >"$STATE/rabbitmq/epmd.log" 2>&1 &
    echo $! >"$STATE/rabbitmq/epmd.pid"
    wait_until 10 "epmd on 4369" port_open 4369 || die "epmd did not start"
  fi
  nohup rabbitmq-server >"$STATE/rabbitmq/server.out" 2>&1 &
  echo $! >"$STATE/rabbitmq/launcher.pid"
  wait_until "$READY_TIMEOUT" "rabbitmq on 5672" rabbit_and_amqp_ready || { tail -30 "$STATE/rabbitmq/server.out" >&2; die "rabbitmq did not start"; }
  log "rabbitmq: started in $(since "$t")"
}
down_rabbitmq() {
  not_ours rabbitmq "$STATE/rabbitmq/launcher.pid"
  if [[ -f $STATE/rabbitmq/launcher.pid ]]; then
    rabbit_env
    rabbitmqctl -q -n rabbit@localhost stop >/dev/null 2>&1 || true
    stop_pidfile "$STATE/rabbitmq/launcher.pid" rabbitmq
  fi
  # The epmd this script started, once no Erlang node is registered with it any more.
  if pid_alive "$STATE/rabbitmq/epmd.pid" && ! epmd -names 2>/dev/null | grep -q '^name '; then
    stop_pidfile "$STATE/rabbitmq/epmd.pid" epmd
  fi
}
status_rabbitmq() { amqp_handshake && echo "rabbitmq: up on 5672$(ours "$STATE/rabbitmq/launcher.pid")" || echo "rabbitmq: down"; }

# --- nats ------------------------------------------------------------------------------------

nats_ready() { curl -sf 'http://127.0.0.1:8222/healthz?js-enabled-only=true' >/dev/null; }

up_nats() {
  ensure_packages curl
  if port_open 4222 && nats_ready; then log "nats: reusing the server on 4222"; return; fi
  ensure_packages nats-server
  local t dir=$STATE/nats; t=$(now)
  mkdir -p "$dir/store"
  cat >"$dir/nats.conf" <<EOF
listen: 127.0.0.1:4222
http: 127.0.0.1:8222
jetstream {
  store_dir: "$dir/store"
  max_memory_store: 256MB
  max_file_store: 2GB
}
EOF
  nohup nats-server -c "$dir/nats.conf" >"$dir/nats.log" 2>&1 &
  echo $! >"$dir/nats.pid"
  wait_until 30 "nats on 4222" nats_ready || { tail -20 "$dir/nats.log" >&2; die "nats did not start"; }
  log "nats: started in $(since "$t")"
}
down_nats() { not_ours nats "$STATE/nats/nats.pid"; stop_pidfile "$STATE/nats/nats.pid" nats; }
status_nats() { nats_ready && echo "nats: up on 4222 (JetStream)$(ours "$STATE/nats/nats.pid")" || echo "nats: down"; }

# --- kafka -----------------------------------------------------------------------------------

kafka_cp() { echo "$STATE/kafka/libs/*"; }

kafka_ready() {
  port_open 9092 || return 1
  java -cp "$(kafka_cp)" -Dlog4j.configuration="file:$STATE/kafka/tools-log4j.properties" \
    org.apache.kafka.tools.TopicCommand --bootstrap-server 127.0.0.1:9092 --list >/dev/null 2>&1
}

up_kafka() {
  command -v java >/dev/null || ensure_packages default-jre-headless
  command -v mvn >/dev/null || ensure_packages maven
  local dir=$STATE/kafka
  mkdir -p "$dir"
  if [[ ! -f $dir/libs/.complete ]]; then
    local t; t=$(now)
    log "kafka: resolving the broker jars from Maven Central"
    mvn -q -f "$ROOT/scripts/kafka/pom.xml" dependency:copy-dependencies -DincludeScope=runtime \
      -DoutputDirectory="$dir/libs" >"$dir/mvn.log" 2>&1 || { tail -30 "$dir/mvn.log" >&2; die "maven could not resolve Kafka"; }
    touch "$dir/libs/.complete"
    log "kafka: jars resolved in $(since "$t")"
  fi
  cat >"$dir/tools-log4j.properties" <<'EOF'
log4j.rootLogger=ERROR, stderr
log4j.appender.stderr=org.apache.log4j.ConsoleAppender
log4j.appender.stderr.Target=System.err
log4j.appender.stderr.layout=org.apache.log4j.PatternLayout
log4j.appender.stderr.layout.ConversionPattern=[%d] %p %m (%c)%n
EOF
  if kafka_ready; then log "kafka: reusing the broker on 9092"; return; fi
  local t; t=$(now)
  cat >"$dir/log4j.properties" <<EOF
log4j.rootLogger=WARN, file
log4j.appender.file=org.apache.log4j.RollingFileAppender
log4j.appender.file.File=$dir/server.log
log4j.appender.file.MaxFileSize=10MB
log4j.appender.file.MaxBackupIndex=2
log4j.appender.file.layout=org.apache.log4j.PatternLayout
log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.server.KafkaServer=INFO
log4j.logger.kafka.server.BrokerServer=INFO
EOF
  cat >"$dir/server.properties" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:9093
listeners=PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093
advertised.listeners=PLAINTEXT://127.0.0.1:9092
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$dir/data
num.partitions=1
auto.create.topics.enable=true
offsets.topic.replication.factor=1
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
group.min.session.timeout.ms=1000
log.retention.hours=2
log.segment.bytes=16777216
log.retention.check.interval.ms=60000
num.network.threads=2
num.io.threads=2
EOF
  if [[ ! -f $dir/data/meta.properties ]]; then
    java -cp "$(kafka_cp)" -Dlog4j.configuration="file:$dir/tools-log4j.properties" kafka.tools.StorageTool format \
      -t "$KAFKA_CLUSTER_ID" -c "$dir/server.properties" >"$dir/format.log" 2>&1 \
      || { cat "$dir/format.log" >&2; die "kafka storage format failed"; }
  fi
  KAFKA_HEAP=${KAFKA_HEAP:-"-Xms256m -Xmx512m"}
  # shellcheck disable=SC2086
  nohup java $KAFKA_HEAP -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true \
    -Dlog4j.configuration="file:$dir/log4j.properties" -cp "$(kafka_cp)" kafka.Kafka "$dir/server.properties" \
    >"$dir/stdout.log" 2>&1 &
  echo $! >"$dir/kafka.pid"
  wait_until "$READY_TIMEOUT" "kafka on 9092" kafka_ready || { tail -30 "$dir/stdout.log" "$dir/server.log" >&2 || true; die "kafka did not start"; }
  log "kafka: started in $(since "$t")"
}
down_kafka() { not_ours kafka "$STATE/kafka/kafka.pid"; stop_pidfile "$STATE/kafka/kafka.pid" kafka; }
status_kafka() { kafka_ready && echo "kafka: up on 9092$(ours "$STATE/kafka/kafka.pid")" || echo "kafka: down"; }

# --- dispatch --------------------------------------------------------------------------------

fn_name() { echo "${1//-/_}"; }

valid() {
  local n
  for n in "${ALL[@]}"; do [[ $n == "$1" ]] && return 0; done
  die "unknown service '$1' (one of: ${ALL[*]})"
}

cmd=${1:-}
[[ -n $cmd ]] || { sed -n '2,12p' "$0"; exit 2; }
shift
names=("$@")
(( ${#names[@]} )) || names=("${ALL[@]}")
for n in "${names[@]}"; do valid "$n"; done

case $cmd in
  up)
    t0=$(now)
    for n in "${names[@]}"; do "up_$(fn_name "$n")"; done
    log "all requested services ready in $(since "$t0")"
    ;;
  down)
    for n in "${names[@]}"; do "down_$(fn_name "$n")"; done
    ;;
  status)
    for n in "${names[@]}"; do "status_$(fn_name "$n")"; done
    ;;
  restart)
    (( $# )) || die "restart needs a service name"
    for n in "${names[@]}"; do "down_$(fn_name "$n")"; "up_$(fn_name "$n")"; done
    ;;
  *)
    die "unknown command '$cmd' (up, down, status, restart)"
    ;;
esac
