#!/usr/bin/env bash
# A single-node Apache Kafka broker on 127.0.0.1 in KRaft mode (broker and controller in one
# JVM), installed by scripts/install-kafka.sh if missing.
#
#   scripts/broker.sh start [PORT] [DIR]    # in the background; waits until it answers
#   scripts/broker.sh stop  [PORT] [DIR]    # clean shutdown (SIGTERM, then SIGKILL after 30 s)
#   scripts/broker.sh kill  [PORT] [DIR]    # a crash (SIGKILL): what the chaos test restarts from
#   scripts/broker.sh status [PORT] [DIR]
#   scripts/broker.sh run PORT DIR          # in the foreground (what the testkit and `sluice dev` run)
#
# PORT defaults to 9092, DIR (data, config, broker.log, pid file) to .sluice/broker-PORT; data
# there is durable across restarts. DIR is formatted with kafka.tools.StorageTool on first use.
# The heap is bounded: SLUICE_KAFKA_HEAP (default "-Xms64m -Xmx512m").
#
# With SLUICE_KAFKA_SASL_USERS="admin=PASSWORD,name=PASSWORD,..." the broker listens with
# SASL_PLAINTEXT and SCRAM-SHA-512 only, authorizes with the StandardAuthorizer (no ACL, no
# access; the first user is the super user) and creates those SCRAM users when it formats its
# storage (docs/security.md, the broker).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
action="${1:-}"; port="${2:-9092}"; dir="${3:-$root/.sluice/broker-$port}"
pidfile="$dir/kafka.pid"; log="$dir/broker.log"
source "$root/scripts/lib.sh"
source "$root/deploy/kafka/sasl.sh"

running() { [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }
port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Writes the broker's configuration into $dir and formats its storage on first use. The
# controller listener gets a free port each start (one voter: nothing else refers to it).
prepare() {
    if port_in_use "$port"; then
        echo "port $port on 127.0.0.1 is in use: stop what holds it or choose another port" >&2; exit 1
    fi
    kafka_home="$("$root/scripts/install-kafka.sh")"
    mkdir -p "$dir/data"
    dir="$(cd "$dir" && pwd)"
    local controller_port; controller_port="$(free_port)"
    local protocol=PLAINTEXT admin="" admin_password="" scram=() entry users
    if [ -n "${SLUICE_KAFKA_SASL_USERS:-}" ]; then
        protocol=SASL_PLAINTEXT
        IFS=',' read -r -a users <<<"$SLUICE_KAFKA_SASL_USERS"
        for entry in "${users[@]}"; do
            [ -z "$admin" ] && { admin="${entry%%=*}"; admin_password="${entry#*=}"; }
            scram+=(--add-scram "SCRAM-SHA-512=[name=${entry%%=*},password=${entry#*=}]")
        done
    fi
    cat >"$dir/server.properties" <<EOF
# Written by scripts/broker.sh on every start.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$controller_port
listeners=$protocol://127.0.0.1:$port,CONTROLLER://127.0.0.1:$controller_port
advertised.listeners=$protocol://127.0.0.1:$port
controller.listener.names=CONTROLLER
inter.broker.listener.name=$protocol
listener.security.protocol.map=CONTROLLER:$protocol,$protocol:$protocol
log.dirs=$dir/data
# One node: every internal topic has one replica (and one partition is plenty here).
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
# Groups form at once, and failover tests may use short session timeouts.
group.initial.rebalance.delay.ms=0
group.min.session.timeout.ms=1000
# The log cleaner's dedupe buffer (compacted changelogs): 32 MB instead of 128 MB of heap.
log.cleaner.dedupe.buffer.size=33554432
EOF
    if [ "$protocol" = SASL_PLAINTEXT ]; then
        sasl_properties "$admin" "$admin_password" sasl_plaintext >>"$dir/server.properties"
        chmod 600 "$dir/server.properties"
    fi
    cat >"$dir/log4j2.properties" <<'EOF'
status = warn
appender.out.type = Console
appender.out.name = out
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.out.ref = out
# Every client's full configuration at INFO is noise.
logger.config.name = org.apache.kafka.common.config
logger.config.level = warn
EOF
    if [ ! -f "$dir/data/meta.properties" ]; then
        local cluster_id; cluster_id="$(java -cp "$kafka_home/lib/*" kafka.tools.StorageTool random-uuid)"
        java -cp "$kafka_home/lib/*" kafka.tools.StorageTool format -t "$cluster_id" -c "$dir/server.properties" "${scram[@]}" >>"$log" 2>&1 \
            || { tail -20 "$log" >&2; echo "formatting $dir/data failed; see $log" >&2; exit 1; }
    fi
}

# The broker's command line, in the array `kafka`.
java_command() {
    local heap
    read -r -a heap <<<"${SLUICE_KAFKA_HEAP:--Xms64m -Xmx512m}"
    kafka=(java "${heap[@]}" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true
        "-Dlog4j2.configurationFile=$dir/log4j2.properties" -cp "$kafka_home/lib/*" kafka.Kafka "$dir/server.properties")
}

case "$action" in
run)
    [ $# -ge 3 ] || { echo "usage: scripts/broker.sh run PORT DIR" >&2; exit 2; }
    prepare
    java_command
    echo $$ >"$pidfile"
    exec "${kafka[@]}" >>"$log" 2>&1 ;;
start)
    if running; then echo "Kafka already running on 127.0.0.1:$port (pid $(cat "$pidfile"), data $dir)"; exit 0; fi
    prepare
    java_command
    started=$(date +%s)
    lines_before=$(wc -l <"$log" 2>/dev/null || echo 0)
    nohup "${kafka[@]}" >>"$log" 2>&1 </dev/null &
    echo $! >"$pidfile"
    for _ in $(seq 1 600); do
        if tail -n +"$((lines_before + 1))" "$log" | grep -q 'Kafka Server started' && port_in_use "$port"; then
            echo "Kafka listening on 127.0.0.1:$port after $(( $(date +%s) - started )) s (data $dir/data, log $log)"; exit 0
        fi
        running || { tail -20 "$log" >&2; echo "Kafka exited before it was ready; see $log" >&2; rm -f "$pidfile"; exit 1; }
        sleep 0.1
    done
    kill -KILL "$(cat "$pidfile")" 2>/dev/null || true; rm -f "$pidfile"
    echo "Kafka did not come up on 127.0.0.1:$port within 60 s; see $log" >&2; exit 1 ;;
stop)
    if ! running; then echo "no Kafka running on 127.0.0.1:$port (data $dir)"; rm -f "$pidfile"; exit 0; fi
    pid="$(cat "$pidfile")"
    kill -TERM "$pid"
    for _ in $(seq 1 300); do
        kill -0 "$pid" 2>/dev/null || { rm -f "$pidfile"; echo "stopped Kafka on 127.0.0.1:$port"; exit 0; }
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true; rm -f "$pidfile"
    echo "Kafka on 127.0.0.1:$port did not stop within 30 s: killed; see $log" >&2; exit 1 ;;
kill)
    if ! running; then echo "no Kafka running on 127.0.0.1:$port (data $dir)"; rm -f "$pidfile"; exit 0; fi
    pid="$(cat "$pidfile")"
    kill -KILL "$pid"
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    rm -f "$pidfile"; echo "killed Kafka on 127.0.0.1:$port" ;;
status)
    if running; then echo "running on 127.0.0.1:$port (pid $(cat "$pidfile"), data $dir)"; else echo "stopped"; exit 1; fi ;;
*) echo "usage: scripts/broker.sh start|stop|kill|status [PORT] [DIR] | run PORT DIR" >&2; exit 2 ;;
esac
