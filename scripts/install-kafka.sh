#!/usr/bin/env bash
# Installs Apache Kafka (the broker Sluice runs on) from Maven Central, once: Maven resolves
# org.apache.kafka:kafka_2.13 and kafka-tools (AclCommand and ConfigCommand: the kafka-acls.sh and kafka-configs.sh
# --apply`) with their runtime dependencies, plus an slf4j binding so the broker logs, into a
# cache folder outside the work tree. Java 17 runs it (scripts/broker.sh).
#
#   scripts/install-kafka.sh          # installs if missing; prints the install folder on stdout
#
# The folder is $SLUICE_KAFKA_HOME, by default ~/.cache/sluice/kafka-<version>. It appears
# whole or not at all: the jars are resolved into a scratch folder that is renamed when
# complete, so an interrupted or failed install leaves nothing a rerun trips over.
set -euo pipefail

KAFKA_VERSION=4.4.0
# The slf4j binding matches what kafka_2.13 brings along: slf4j-api 1.7 and log4j-core 2.24.3.
LOG4J_VERSION=2.24.3
DEPENDENCY_PLUGIN=org.apache.maven.plugins:maven-dependency-plugin:3.8.1

home="${SLUICE_KAFKA_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/sluice/kafka-$KAFKA_VERSION}"
# An install from before kafka-tools was part of it is completed by installing again.
installed() { [ -f "$home/.installed" ] && [ -f "$home/lib/kafka-tools-$KAFKA_VERSION.jar" ]; }
if installed; then
    echo "$home"
    exit 0
fi

fail() { echo "install-kafka: $*" >&2; exit 1; }

if ! command -v java >/dev/null; then
    fail "no java on PATH: Kafka $KAFKA_VERSION needs Java 17 or newer (Debian: apt-get install openjdk-17-jre-headless)"
fi
java_major=$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -1)
if [ -z "$java_major" ] || [ "$java_major" -lt 17 ]; then
    fail "java on PATH is version '${java_major:-unknown}': Kafka $KAFKA_VERSION needs Java 17 or newer"
fi
command -v mvn >/dev/null || fail "no mvn on PATH: Maven resolves Kafka from Maven Central (Debian: apt-get install maven)"

mkdir -p "$(dirname "$home")"
# One install at a time (tests may start several brokers at once on a fresh machine).
exec 9>"$home.lock"
flock 9
if installed; then echo "$home"; exit 0; fi

scratch="$home.partial"
rm -rf "$scratch"
mkdir -p "$scratch"
trap 'rm -rf "$scratch"' EXIT
cat >"$scratch/pom.xml" <<EOF
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>dev.sluice</groupId>
  <artifactId>kafka-broker</artifactId>
  <version>$KAFKA_VERSION</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>$KAFKA_VERSION</version></dependency>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka-tools</artifactId><version>$KAFKA_VERSION</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId><version>$LOG4J_VERSION</version></dependency>
  </dependencies>
</project>
EOF
echo "installing Apache Kafka $KAFKA_VERSION from Maven Central into $home (about 45 MB of jars; under a minute, once)..." >&2
started=$(date +%s)
if ! (cd "$scratch" && mvn -B -q "$DEPENDENCY_PLUGIN:copy-dependencies" \
        -DoutputDirectory=lib -DincludeScope=runtime >mvn.log 2>&1); then
    if grep -qiE 'unknown ?host|could not transfer|connect(ion)? (refused|timed out)|network is unreachable|transfer failed' "$scratch/mvn.log"; then
        reason="Maven Central is unreachable"
    else
        reason="Maven could not resolve org.apache.kafka:kafka_2.13:$KAFKA_VERSION"
    fi
    tail -15 "$scratch/mvn.log" >&2
    fail "$reason; nothing was installed (rerun when it is fixed)"
fi
# A smoke test: the storage tool of this very install runs on this Java.
java -cp "$scratch/lib/*" kafka.tools.StorageTool random-uuid >/dev/null 2>"$scratch/smoke.log" \
    || { cat "$scratch/smoke.log" >&2; fail "the resolved Kafka does not run on this Java"; }
rm -f "$scratch/mvn.log" "$scratch/smoke.log"
touch "$scratch/.installed"
rm -rf "$home"
mv "$scratch" "$home"
trap - EXIT
echo "Apache Kafka $KAFKA_VERSION installed in $home ($(( $(date +%s) - started )) s)" >&2
echo "$home"
