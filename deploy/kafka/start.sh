#!/usr/bin/env bash
# The docker-compose broker (docker-compose.yml runs it in the apache/kafka image): one KRaft node
# whose clients all authenticate with SASL/SCRAM-SHA-512 and that allows each principal only what
# its ACLs say (StandardAuthorizer, no ACL no access), as scripts/broker.sh does for the dev stack
# (docs/security.md, the broker).
#
# Two client listeners: INTERNAL for the containers, EXTERNAL for the host; the controller
# listener (PLAIN, the administrator alone) stays on the loopback. The SCRAM users are created
# when the data directory is formatted (first start); the first is the super user.
#
#   SLUICE_KAFKA_SASL_USERS   "admin=PASSWORD,sluice-processors=PASSWORD,..." (required)
#   SLUICE_KAFKA_INTERNAL     host:port advertised to containers   (default kafka:29092)
#   SLUICE_KAFKA_EXTERNAL     host:port advertised to the host     (default localhost:9092)
#   SLUICE_KAFKA_CONTROLLER_PORT                                   (default 9093)
#   SLUICE_KAFKA_DATA         data and generated config            (default /var/lib/kafka/data)
#   SLUICE_KAFKA_LIBS         Kafka's jars                         (default /opt/kafka/libs)
set -euo pipefail
source "$(dirname "$0")/sasl.sh"
: "${SLUICE_KAFKA_SASL_USERS:?set SLUICE_KAFKA_SASL_USERS to admin=PASSWORD,name=PASSWORD,... (the first is the super user)}"
internal="${SLUICE_KAFKA_INTERNAL:-kafka:29092}"
external="${SLUICE_KAFKA_EXTERNAL:-localhost:9092}"
controller_port="${SLUICE_KAFKA_CONTROLLER_PORT:-9093}"
data="${SLUICE_KAFKA_DATA:-/var/lib/kafka/data}"
libs="${SLUICE_KAFKA_LIBS:-/opt/kafka/libs}"

admin="" admin_password="" scram=()
IFS=',' read -r -a users <<<"$SLUICE_KAFKA_SASL_USERS"
for entry in "${users[@]}"; do
    name="${entry%%=*}" password="${entry#*=}"
    if [ -z "$name" ] || [ "$name" = "$entry" ] || [ ${#password} -lt 12 ]; then
        echo "SLUICE_KAFKA_SASL_USERS: \`$name\` needs name=PASSWORD with a password of 12 or more characters" >&2; exit 2
    fi
    [ -z "$admin" ] && { admin="$name"; admin_password="$password"; }
    scram+=(--add-scram "SCRAM-SHA-512=[name=$name,password=$password]")
done

mkdir -p "$data/log"
config="$data/server.properties"
umask 077
cat >"$config" <<EOF
# Written by deploy/kafka/start.sh on every start.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$controller_port
listeners=INTERNAL://0.0.0.0:${internal##*:},EXTERNAL://0.0.0.0:${external##*:},CONTROLLER://127.0.0.1:$controller_port
advertised.listeners=INTERNAL://$internal,EXTERNAL://$external
listener.security.protocol.map=INTERNAL:SASL_PLAINTEXT,EXTERNAL:SASL_PLAINTEXT,CONTROLLER:SASL_PLAINTEXT
inter.broker.listener.name=INTERNAL
controller.listener.names=CONTROLLER
log.dirs=$data/log
auto.create.topics.enable=false
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
EOF
sasl_properties "$admin" "$admin_password" internal external >>"$config"

if [ ! -f "$data/log/meta.properties" ]; then
    cluster_id="$(java -cp "$libs/*" kafka.tools.StorageTool random-uuid)"
    java -cp "$libs/*" kafka.tools.StorageTool format -t "$cluster_id" -c "$config" "${scram[@]}"
fi
# The image's logging configuration when there is one (INFO to the console).
logging=()
[ -f /opt/kafka/config/log4j2.yaml ] && logging=(-Dlog4j2.configurationFile=/opt/kafka/config/log4j2.yaml)
read -r -a heap <<<"${KAFKA_HEAP_OPTS:--Xms128m -Xmx1g}"
exec java "${heap[@]}" -XX:+UseG1GC -Djava.awt.headless=true "${logging[@]}" -cp "$libs/*" kafka.Kafka "$config"
