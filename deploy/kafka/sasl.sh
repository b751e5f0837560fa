# Sourced by scripts/broker.sh (the dev and test brokers) and deploy/kafka/start.sh (the
# docker-compose broker): the SASL and authorization part of a broker's server.properties.
#
#   sasl_properties ADMIN PASSWORD LISTENER...
#
# prints SCRAM-SHA-512 for clients and between brokers on each client LISTENER (lower case),
# PLAIN with the administrator alone on the controller listener (KRaft keeps SCRAM credentials
# in the metadata the controller serves, so it cannot check SCRAM itself), and the
# StandardAuthorizer with ADMIN as the super user and no access without an ACL.
sasl_properties() {
    local admin="$1" password="$2" listener
    shift 2
    echo "sasl.enabled.mechanisms=SCRAM-SHA-512"
    echo "sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512"
    for listener in "$@"; do
        echo "listener.name.$listener.sasl.enabled.mechanisms=SCRAM-SHA-512"
        echo "listener.name.$listener.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username=\"$admin\" password=\"$password\";"
    done
    echo "listener.name.controller.sasl.enabled.mechanisms=PLAIN"
    echo "sasl.mechanism.controller.protocol=PLAIN"
    echo "listener.name.controller.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username=\"$admin\" password=\"$password\" user_$admin=\"$password\";"
    echo "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer"
    echo "super.users=User:$admin"
    echo "allow.everyone.if.no.acl.found=false"
}
