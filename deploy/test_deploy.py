"""Checks docker-compose.yml, the Dockerfile and deploy/ without a Docker engine: the files
parse, every reference names a service and a port that exists, the SLUICE__ variables are
Sluice's config keys, the sluice commands and flags exist, the Dockerfile builds with the
README's command, and the Grafana dashboard queries only metrics Sluice records.

Run by scripts/test:  .venv/bin/python -m unittest discover -s deploy -p 'test_*.py'
"""

import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
import unittest
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]

# Ports the third-party images listen on by default (not declared in the compose file).
IMAGE_PORTS = {"prometheus": {9090}, "grafana": {3000}, "akhq": {8080}, "kafdrop": {9000}}


def container_ports(name):
    """Every port a service listens on inside the compose network."""
    service = SERVICES[name]
    ports = set(IMAGE_PORTS.get(name, set()))
    for mapping in service.get("ports", []):
        ports.add(int(str(mapping).split(":")[-1]))
    for port in service.get("expose", []):
        ports.add(int(port))
    for key, value in (service.get("environment") or {}).items():
        if name == "schema-registry":
            ports.update(int(p) for p in re.findall(r"://0\.0\.0\.0:(\d+)", str(value)))
        if name == "kafka" and key in ("SLUICE_KAFKA_INTERNAL", "SLUICE_KAFKA_EXTERNAL"):
            ports.add(int(str(value).rsplit(":", 1)[1]))
    return ports


def references(text):
    """(host, port) pairs in a text: host:port and scheme://host:port."""
    return [(h, int(p)) for h, p in re.findall(r"(?:^|[\s\"'/@,=\[])([a-z][a-z0-9-]*):(\d{2,5})\b", text)]


def sluice_config_keys():
    source = (ROOT / "cli/src/config.rs").read_text()
    body = source[source.index("pub(crate) struct SluiceConfig {"):]
    body = body[: body.index("\n}\n")]
    return set(re.findall(r"^\s+pub\(crate\) (\w+):", body, re.M))


def cli_flags():
    flags = set()
    for path in (ROOT / "cli/src").glob("*.rs"):
        flags.update(re.findall(r"#\[arg\(long[^\]]*\)\]\s*(?:///[^\n]*\n\s*)*(\w+):", path.read_text()))
    return {"--" + f.replace("_", "-") for f in flags}


def metric_names():
    source = (ROOT / "streams/src/metrics.rs").read_text()
    return set(re.findall(r'pub const \w+: &str = "(sluice_\w+)";', source))


class Compose(unittest.TestCase):
    def test_the_stack_has_every_service(self):
        for name in ["kafka", "schema-registry", "topics", "sluice-processors", "sluice-ingest", "akhq", "kafdrop", "prometheus", "grafana"]:
            self.assertIn(name, SERVICES)

    def test_kafka_runs_kraft_with_an_internal_and_a_host_listener(self):
        kafka = SERVICES["kafka"]
        env = kafka["environment"]
        self.assertEqual(kafka["entrypoint"], ["/sluice/kafka/start.sh"])
        self.assertIn("./deploy/kafka:/sluice/kafka:ro", kafka["volumes"])
        self.assertEqual(env["SLUICE_KAFKA_INTERNAL"], "kafka:29092")
        self.assertEqual(env["SLUICE_KAFKA_EXTERNAL"], "localhost:9092")
        self.assertIn("9092:9092", kafka["ports"])
        script = (ROOT / "deploy/kafka/start.sh").read_text() + (ROOT / "deploy/kafka/sasl.sh").read_text()
        for line in ["process.roles=broker,controller", "auto.create.topics.enable=false", "allow.everyone.if.no.acl.found=false"]:
            self.assertIn(line, script)

    def test_dependencies_name_services(self):
        for name, service in SERVICES.items():
            depends = service.get("depends_on", [])
            for target in depends:
                self.assertIn(target, SERVICES, f"{name} depends on unknown {target}")
                if isinstance(depends, dict):
                    self.assertIn(depends[target]["condition"], {"service_started", "service_healthy", "service_completed_successfully"})
                    if depends[target]["condition"] == "service_healthy":
                        self.assertIn("healthcheck", SERVICES[target], f"{name} waits for {target} to be healthy")

    def test_host_ports_do_not_clash(self):
        host_ports = [int(str(m).split(":")[0]) for s in SERVICES.values() for m in s.get("ports", [])]
        self.assertEqual(len(host_ports), len(set(host_ports)), host_ports)
        self.assertEqual(SERVICES["akhq"]["ports"], ["8080:8080"])
        self.assertEqual(SERVICES["sluice-ingest"]["ports"], ["8088:8080"], "the API moves off AKHQ's 8080")

    def test_every_reference_names_a_service_and_a_port_it_listens_on(self):
        texts = {name: yaml.safe_dump({k: v for k, v in service.items() if k in ("environment", "command", "healthcheck")}) for name, service in SERVICES.items()}
        for path in ["deploy/prometheus.yml", "deploy/akhq.yml", "deploy/grafana/provisioning/datasources/prometheus.yml"]:
            texts[path] = (ROOT / path).read_text()
        checked = 0
        for origin, text in texts.items():
            for host, port in references(text):
                if host in ("localhost", "http", "https", "plaintext"):
                    continue
                self.assertIn(host, SERVICES, f"{origin} refers to unknown host {host}:{port}")
                self.assertIn(port, container_ports(host), f"{origin} refers to {host}:{port}, which does not listen there")
                checked += 1
        self.assertGreater(checked, 10)

    def test_sluice_services_use_real_config_keys_commands_and_flags(self):
        keys = sluice_config_keys()
        flags = cli_flags()
        for name in ["topics", "acls", "sluice-processors", "sluice-ingest"]:
            service = SERVICES[name]
            self.assertEqual(service["image"], "sluice:dev")
            for variable in service["environment"]:
                self.assertTrue(variable.startswith("SLUICE__"), variable)
                self.assertIn(variable[len("SLUICE__"):].lower(), keys, f"{name}: {variable} is not a Sluice setting")
            command = service["command"]
            self.assertIn(command[0], {"topics", "acls", "run", "ingest"})
            for arg in command[1:]:
                if arg.startswith("--"):
                    self.assertIn(arg, flags, f"{name}: sluice {command[0]} has no {arg}")

    def test_secrets_come_from_the_environment_with_no_default(self):
        for name in ["sluice-processors", "sluice-ingest"]:
            for variable in ["SLUICE_JWT_SECRET", "SLUICE_INTERNAL_KEY"]:
                secret = str(SERVICES[name]["environment"][f"SLUICE__{variable[7:]}"])
                self.assertRegex(secret, r"^\$\{" + variable + r":\?[^}]+\}$", f"{name}: {variable} must be required from the environment, not defaulted")

    def test_each_sluice_service_is_its_own_kafka_principal_with_a_required_password(self):
        users = dict(entry.split("=", 1) for entry in SERVICES["kafka"]["environment"]["SLUICE_KAFKA_SASL_USERS"].split(","))
        self.assertEqual(list(users)[0], "admin", "the first user is the super user")
        for name, password in users.items():
            self.assertRegex(password, r"^\$\{SLUICE_KAFKA_[A-Z_]+_PASSWORD:\?[^}]+\}$", f"{name}: its password is required from the environment")
        principals = {}
        for name in ["topics", "acls", "sluice-processors", "sluice-ingest"]:
            env = SERVICES[name]["environment"]
            self.assertEqual((env["SLUICE__SECURITY_PROTOCOL"], env["SLUICE__SASL_MECHANISM"]), ("SASL_PLAINTEXT", "SCRAM-SHA-512"), name)
            user = env["SLUICE__SASL_USERNAME"]
            self.assertEqual(env["SLUICE__SASL_PASSWORD"], users[user], f"{name} authenticates as {user} with that user's password")
            principals[name] = user
        self.assertEqual(principals, {"topics": "admin", "acls": "admin", "sluice-processors": "sluice-processors", "sluice-ingest": "sluice-ingest"})
        self.assertIn('username="sluice-registry"', SERVICES["schema-registry"]["environment"]["SCHEMA_REGISTRY_KAFKASTORE_SASL_JAAS_CONFIG"])
        self.assertIn("${SLUICE_KAFKA_REGISTRY_PASSWORD:?", SERVICES["schema-registry"]["environment"]["SCHEMA_REGISTRY_KAFKASTORE_SASL_JAAS_CONFIG"])
        acls = SERVICES["acls"]["command"]
        self.assertEqual(acls[:2], ["acls", "--apply"])
        self.assertIn("User:ops-ui", acls, "the UIs' principal gets what kcat users get")
        self.assertIn('username="ops-ui"', (ROOT / "deploy/akhq.yml").read_text())
        self.assertIn('username="ops-ui"', " ".join(SERVICES["kafdrop"]["entrypoint"]))
        console = SERVICES["sluice-ingest"]["environment"]
        self.assertEqual(console["SLUICE__CONSOLE_SASL_USERNAME"], "sluice-console")
        self.assertEqual(console["SLUICE__CONSOLE_SASL_PASSWORD"], users["sluice-console"], "the operator console authenticates as its own principal")
        self.assertEqual(acls[acls.index("--console") + 1], "User:sluice-console", "and gets its own ACLs")

    def test_the_registry_takes_requests_with_its_account_only(self):
        registry = SERVICES["schema-registry"]
        env = registry["environment"]
        self.assertEqual(env["SCHEMA_REGISTRY_AUTHENTICATION_METHOD"], "BASIC")
        self.assertIn("sluice-jaas.conf", env["SCHEMA_REGISTRY_OPTS"])
        self.assertIn("/tmp/registry-users", (ROOT / "deploy/registry/jaas.conf").read_text())
        self.assertIn("/tmp/registry-users", registry["entrypoint"][-1])
        self.assertTrue(str(SERVICES["sluice-processors"]["environment"]["SLUICE__SCHEMA_REGISTRY_USER_INFO"]).startswith("sluice:${SLUICE_REGISTRY_PASSWORD:?"))
        self.assertIn("basic-auth-password", (ROOT / "deploy/akhq.yml").read_text())
        self.assertTrue(SERVICES["kafdrop"]["environment"]["SCHEMAREGISTRY_AUTH"].startswith("sluice:${SLUICE_REGISTRY_PASSWORD:?"))

    def test_mounted_files_exist(self):
        for name, service in SERVICES.items():
            for volume in service.get("volumes", []):
                source = volume.split(":")[0]
                if source.startswith("./"):
                    self.assertTrue((ROOT / source).exists(), f"{name} mounts missing {source}")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ComposeBroker(unittest.TestCase):
    """deploy/kafka/start.sh, the compose broker's entrypoint, run here on the Kafka jars
    scripts/install-kafka.sh installs, with loopback addresses for the compose host names."""

    def setUp(self):
        self.work = Path(tempfile.mkdtemp(prefix="sluice-compose-broker-"))
        self.internal, self.external, self.controller = free_port(), free_port(), free_port()
        kafka_home = subprocess.run([str(ROOT / "scripts/install-kafka.sh")], capture_output=True, text=True, check=True).stdout.strip()
        env = dict(os.environ, SLUICE_KAFKA_SASL_USERS="admin=admin-password-1,kcat=kcat-password-1",
                   SLUICE_KAFKA_INTERNAL=f"127.0.0.1:{self.internal}", SLUICE_KAFKA_EXTERNAL=f"127.0.0.1:{self.external}",
                   SLUICE_KAFKA_CONTROLLER_PORT=str(self.controller), SLUICE_KAFKA_DATA=str(self.work / "data"),
                   SLUICE_KAFKA_LIBS=f"{kafka_home}/lib", KAFKA_HEAP_OPTS="-Xms64m -Xmx384m")
        self.log = open(self.work / "broker.log", "w")
        self.broker = subprocess.Popen([str(ROOT / "deploy/kafka/start.sh")], env=env, stdout=self.log, stderr=subprocess.STDOUT)

    def tearDown(self):
        self.broker.terminate()
        try:
            self.broker.wait(60)
        except subprocess.TimeoutExpired:
            self.broker.kill()
            self.broker.wait()
        self.log.close()
        shutil.rmtree(self.work)

    def client(self, port, user=None, password=None):
        from confluent_kafka.admin import AdminClient
        config = {"bootstrap.servers": f"127.0.0.1:{port}", "log_level": 0}
        if user:
            config.update({"security.protocol": "SASL_PLAINTEXT", "sasl.mechanisms": "SCRAM-SHA-512", "sasl.username": user, "sasl.password": password})
        return AdminClient(config)

    def test_only_scram_users_get_in_and_the_authorizer_gives_them_only_their_acls(self):
        from confluent_kafka.admin import NewTopic
        from confluent_kafka import KafkaException
        admin = self.client(self.internal, "admin", "admin-password-1")
        deadline = time.monotonic() + 90
        while True:
            self.assertIsNone(self.broker.poll(), (self.work / "broker.log").read_text()[-3000:])
            try:
                admin.list_topics(timeout=2)
                break
            except KafkaException:
                self.assertLess(time.monotonic(), deadline, (self.work / "broker.log").read_text()[-3000:])
        admin.create_topics([NewTopic("payments.settled", 1, 1)])["payments.settled"].result(30)
        # Both listeners take the administrator; the other user sees nothing without ACLs.
        self.assertIn("payments.settled", self.client(self.external, "admin", "admin-password-1").list_topics(timeout=10).topics)
        self.assertEqual(self.client(self.external, "kcat", "kcat-password-1").list_topics(timeout=10).topics, {})
        with self.assertRaises(KafkaException, msg="a wrong password"):
            self.client(self.internal, "kcat", "not-the-password").list_topics(timeout=5)
        with self.assertRaises(KafkaException, msg="no SASL"):
            self.client(self.internal).list_topics(timeout=5)


class Dockerfile(unittest.TestCase):
    def test_it_builds_with_the_readme_command(self):
        dockerfile = (ROOT / "Dockerfile").read_text()
        build = re.search(r"^RUN (cargo build .*)$", dockerfile, re.M).group(1)
        self.assertTrue(build in (ROOT / "README.md").read_text(), f"the README does not build with `{build}`")
        self.assertIn("COPY --from=build /src/target/release/sluice", dockerfile)
        for source in re.findall(r"^COPY (?!--)(\S+) ", dockerfile, re.M):
            if source != ".":
                self.assertTrue((ROOT / source).exists(), source)

    def test_the_readme_explains_which_ui_is_on_which_port(self):
        readme = (ROOT / "README.md").read_text()
        for url in ["http://localhost:8088", "http://localhost:8080", "http://localhost:9000", "http://localhost:8081", "http://localhost:9090", "http://localhost:3000"]:
            self.assertTrue(url in readme, f"the README does not name {url}")


class Dashboard(unittest.TestCase):
    dashboard = json.loads((ROOT / "deploy/grafana/dashboards/sluice.json").read_text())

    def test_it_has_the_panels_operators_need(self):
        titles = {p["title"] for p in self.dashboard["panels"]}
        for title in ["Throughput by processor", "Commit latency", "End-to-end command latency", "Records lag", "Restore progress", "DLQ rate", "HTTP requests by status", "Commands by outcome"]:
            self.assertIn(title, titles)

    def test_queries_use_only_metrics_sluice_records(self):
        known = metric_names()
        datasource = yaml.safe_load((ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text())["datasources"][0]
        for panel in self.dashboard["panels"]:
            self.assertEqual(panel["datasource"]["uid"], datasource["uid"])
            for target in panel["targets"]:
                for metric in re.findall(r"sluice_\w+", target["expr"]):
                    base = re.sub(r"_(bucket|sum|count)$", "", metric)
                    self.assertIn(base, known, f"{panel['title']}: {metric} is not a Sluice metric")
                if "histogram_quantile" in target["expr"]:
                    self.assertIn("_seconds_bucket", target["expr"])


if __name__ == "__main__":
    unittest.main()
