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
# With SLUICE_KAFKA_SEPARATE_CONTROLLER=1 on the first start of DIR, the broker and its KRaft
# controller run as two JVMs (the controller's data, config, log and pid in DIR/controller), as
# production clusters run them: `kill` then crashes the broker alone and returns once the
# controller has fenced it, and `start` starts the broker again against the running controller
# (`stop` stops both). A lone combined node cannot be crashed and restarted safely under
# transactions: see docs/guarantees.md, a hanging transaction. Not with `run`.
#
# With SLUICE_KAFKA_SASL_USERS="admin=PASSWORD,name=PASSWORD,..." the broker listens with
# SASL_PLAINTEXT and SCRAM-SHA-512 only, authorizes with the StandardAuthorizer (no ACL, no
# access; the first user is the super user) and creates those SCRAM users when it formats its
# storage (docs/security.md, the broker).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
action="${1:-}"; port="${2:-9092}"; dir="${3:-$root/.sluice/broker-$port}"
# The files of DIR's broker and of its separate controller (if any).
paths() { pidfile="$dir/kafka.pid"; log="$dir/broker.log"; cdir="$dir/controller"; cpidfile="$cdir/kafka.pid"; clog="$cdir/controller.log"; }
paths
source "$root/scripts/lib.sh"
source "$root/deploy/kafka/sasl.sh"

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
running() { alive "$pidfile"; }
port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
# DIR's controller runs in a JVM of its own (SLUICE_KAFKA_SEPARATE_CONTROLLER on its first start).
separate() { [ -d "$cdir" ]; }

# The listeners' security protocol and, with SASL, the administrator and the StorageTool
# arguments that create the SCRAM users.
security() {
    protocol=PLAINTEXT admin="" admin_password="" scram=()
    local entry users
    if [ -n "${SLUICE_KAFKA_SASL_USERS:-}" ]; then
        protocol=SASL_PLAINTEXT
        IFS=',' read -r -a users <<<"$SLUICE_KAFKA_SASL_USERS"
        for entry in "${users[@]}"; do
            [ -z "$admin" ] && { admin="${entry%%=*}"; admin_password="${entry#*=}"; }
            scram+=(--add-scram "SCRAM-SHA-512=[name=${entry%%=*},password=${entry#*=}]")
        done
    fi
}

# Appends the SASL part to server.properties (when SASL is on) and writes log4j2.properties,
# in the node folder $1.
finish_config() {
    if [ "$protocol" = SASL_PLAINTEXT ]; then
        sasl_properties "$admin" "$admin_password" sasl_plaintext >>"$1/server.properties"
        chmod 600 "$1/server.properties"
    fi
    cat >"$1/log4j2.properties" <<'EOF'
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
}

random_uuid() { java -cp "$kafka_home/lib/*" kafka.tools.StorageTool random-uuid; }

# Formats the storage of the node in folder $1 (data in $1/data) on first use, with cluster id
# $2 and the StorageTool arguments after $3, the log its output goes to.
format() {
    local folder="$1" cluster_id="$2" out="$3"
    shift 3
    [ -f "$folder/data/meta.properties" ] && return 0
    java -cp "$kafka_home/lib/*" kafka.tools.StorageTool format -t "$cluster_id" -c "$folder/server.properties" "$@" >>"$out" 2>&1 \
        || { tail -20 "$out" >&2; echo "formatting $folder/data failed; see $out" >&2; exit 1; }
}

# Writes the broker's configuration into $dir and formats its storage on first use. A combined
# node's controller listener gets a free port each start (one voter: nothing else refers to it);
# a separate controller keeps the port it was first given (DIR/controller/port).
prepare() {
    if port_in_use "$port"; then
        echo "port $port on 127.0.0.1 is in use: stop what holds it or choose another port" >&2; exit 1
    fi
    kafka_home="$("$root/scripts/install-kafka.sh")"
    if [ "${SLUICE_KAFKA_SEPARATE_CONTROLLER:-}" = 1 ] && [ ! -f "$dir/data/meta.properties" ]; then mkdir -p "$cdir"; fi
    mkdir -p "$dir/data"
    dir="$(cd "$dir" && pwd)"; paths
    security
    local roles voters listeners controller_port
    if separate; then
        prepare_controller
        controller_port="$(cat "$cdir/port")"
        roles=broker; voters="2@127.0.0.1:$controller_port"; listeners="$protocol://127.0.0.1:$port"
    else
        controller_port="$(free_port)"
        roles=broker,controller; voters="1@127.0.0.1:$controller_port"
        listeners="$protocol://127.0.0.1:$port,CONTROLLER://127.0.0.1:$controller_port"
    fi
    cat >"$dir/server.properties" <<EOF
# Written by scripts/broker.sh on every start.
process.roles=$roles
node.id=1
controller.quorum.voters=$voters
listeners=$listeners
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
    # A separate controller fences a broker 4 s after its last heartbeat (`kill` waits for that).
    if separate; then echo "broker.heartbeat.interval.ms=500" >>"$dir/server.properties"; fi
    finish_config "$dir"
    if separate; then
        # The SCRAM users go into the metadata, which the controller's storage holds.
        format "$dir" "$(cat "$cdir/cluster-id")" "$log"
    elif [ ! -f "$dir/data/meta.properties" ]; then
        format "$dir" "$(random_uuid)" "$log" "${scram[@]}"
    fi
}

# The separate controller's configuration (node 2, the only voter) and storage, in $cdir.
prepare_controller() {
    mkdir -p "$cdir/data"
    [ -f "$cdir/port" ] || free_port >"$cdir/port"
    [ -f "$cdir/cluster-id" ] || random_uuid >"$cdir/cluster-id"
    cat >"$cdir/server.properties" <<EOF
# Written by scripts/broker.sh on every start of the broker.
process.roles=controller
node.id=2
controller.quorum.voters=2@127.0.0.1:$(cat "$cdir/port")
listeners=CONTROLLER://127.0.0.1:$(cat "$cdir/port")
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:$protocol
log.dirs=$cdir/data
broker.session.timeout.ms=4000
EOF
    finish_config "$cdir"
    format "$cdir" "$(cat "$cdir/cluster-id")" "$clog" "${scram[@]}"
}

# The command line of the node configured in folder $1, in the array `kafka`.
java_command() {
    local heap
    read -r -a heap <<<"${SLUICE_KAFKA_HEAP:--Xms64m -Xmx512m}"
    kafka=(java "${heap[@]}" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true
        "-Dlog4j2.configurationFile=$1/log4j2.properties" -cp "$kafka_home/lib/*" kafka.Kafka "$1/server.properties")
}

# Starts the node configured in folder $1 in the background (pid file $2, output to log $3) and
# waits until it says it started and port $4 answers; $5 names it in messages.
launch() {
    local folder="$1" pids="$2" out="$3" listen="$4" what="$5" started lines_before
    java_command "$folder"
    started=$(date +%s)
    lines_before=$(wc -l <"$out" 2>/dev/null || echo 0)
    nohup "${kafka[@]}" >>"$out" 2>&1 </dev/null &
    echo $! >"$pids"
    for _ in $(seq 1 600); do
        if tail -n +"$((lines_before + 1))" "$out" | grep -q 'Kafka Server started' && port_in_use "$listen"; then
            echo "$what listening on 127.0.0.1:$listen after $(( $(date +%s) - started )) s (data $folder/data, log $out)"; return 0
        fi
        alive "$pids" || { tail -20 "$out" >&2; echo "$what exited before it was ready; see $out" >&2; rm -f "$pids"; exit 1; }
        sleep 0.1
    done
    kill -KILL "$(cat "$pids")" 2>/dev/null || true; rm -f "$pids"
    echo "$what did not come up on 127.0.0.1:$listen within 60 s; see $out" >&2; exit 1
}

# Stops the process of pid file $1 (SIGTERM, then SIGKILL after 30 s); $2 names it.
terminate() {
    local pid; pid="$(cat "$1")"
    kill -TERM "$pid"
    for _ in $(seq 1 300); do
        kill -0 "$pid" 2>/dev/null || { rm -f "$1"; echo "stopped $2"; return 0; }
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true; rm -f "$1"
    echo "$2 did not stop within 30 s: killed" >&2; return 1
}

fences() { grep -c 'Fencing broker 1 at epoch' "$clog" || true; }

case "$action" in
run)
    [ $# -ge 3 ] || { echo "usage: scripts/broker.sh run PORT DIR" >&2; exit 2; }
    if separate || [ "${SLUICE_KAFKA_SEPARATE_CONTROLLER:-}" = 1 ]; then echo "run is for a combined node only; use start" >&2; exit 2; fi
    prepare
    java_command "$dir"
    echo $$ >"$pidfile"
    exec "${kafka[@]}" >>"$log" 2>&1 ;;
start)
    if running; then echo "Kafka already running on 127.0.0.1:$port (pid $(cat "$pidfile"), data $dir)"; exit 0; fi
    prepare
    if separate && ! alive "$cpidfile"; then launch "$cdir" "$cpidfile" "$clog" "$(cat "$cdir/port")" "Kafka's controller"; fi
    launch "$dir" "$pidfile" "$log" "$port" Kafka ;;
stop)
    status=0
    if running; then terminate "$pidfile" "Kafka on 127.0.0.1:$port" || status=1
    else echo "no Kafka running on 127.0.0.1:$port (data $dir)"; rm -f "$pidfile"; fi
    if separate && alive "$cpidfile"; then terminate "$cpidfile" "Kafka's controller" || status=1; fi
    [ $status = 0 ] || echo "see $log" >&2
    exit $status ;;
kill)
    if ! running; then echo "no Kafka running on 127.0.0.1:$port (data $dir)"; rm -f "$pidfile"; exit 0; fi
    pid="$(cat "$pidfile")"
    fenced_before=0
    if separate; then fenced_before="$(fences)"; fi
    kill -KILL "$pid"
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    rm -f "$pidfile"; echo "killed Kafka on 127.0.0.1:$port"
    if separate; then
        # Started again before the controller fences the dead incarnation, the broker would lead
        # its partitions on the old registration while the new one is refused, then lose them
        # when the fence comes, and with them any transaction markers due to them.
        for _ in $(seq 1 300); do
            [ "$(fences)" -gt "$fenced_before" ] && { echo "the controller fenced it"; exit 0; }
            sleep 0.1
        done
        echo "the controller did not fence the killed broker within 30 s; see $clog" >&2; exit 1
    fi ;;
status)
    if running; then echo "running on 127.0.0.1:$port (pid $(cat "$pidfile"), data $dir)"; else echo "stopped"; fi
    if separate; then if alive "$cpidfile"; then echo "controller running (pid $(cat "$cpidfile"))"; else echo "controller stopped"; fi; fi
    running ;;
*) echo "usage: scripts/broker.sh start|stop|kill|status [PORT] [DIR] | run PORT DIR" >&2; exit 2 ;;
esac
