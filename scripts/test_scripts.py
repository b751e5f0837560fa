"""The broker scripts' failure paths, run by scripts/test: scripts/install-kafka.sh without Java
or Maven, or with Maven Central unreachable, and scripts/broker.sh on a port in use or with a
broker that exits at start. Each must say what is wrong, exit non-zero and leave nothing behind
that a rerun trips over. And the crash the chaos test relies on: with a separate controller,
`scripts/broker.sh kill` returns only once the controller has fenced the broker, so that the
broker started again registers at once."""

import os
import shutil
import socket
import subprocess
import tempfile
import unittest
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parent
INSTALL = SCRIPTS / "install-kafka.sh"
BROKER = SCRIPTS / "broker.sh"

# What install-kafka.sh needs besides java and mvn.
TOOLS = ["bash", "sed", "head", "dirname", "mkdir", "rm", "cat", "flock", "mv", "touch", "date", "tail", "grep"]


def run(command, env, timeout=120):
    return subprocess.run([str(c) for c in command], env=env, capture_output=True, text=True, timeout=timeout)


class InstallKafka(unittest.TestCase):
    def setUp(self):
        self.work = Path(tempfile.mkdtemp(prefix="sluice-install-test-"))
        self.bin = self.work / "bin"
        self.bin.mkdir()
        for tool in TOOLS:
            (self.bin / tool).symlink_to(shutil.which(tool))
        self.home = self.work / "cache" / "kafka"
        self.env = {"PATH": str(self.bin), "HOME": str(self.work), "SLUICE_KAFKA_HOME": str(self.home)}

    def tearDown(self):
        shutil.rmtree(self.work)

    def assert_nothing_installed(self):
        self.assertFalse(self.home.exists(), "no install folder")
        leftovers = [p.name for p in self.home.parent.iterdir()] if self.home.parent.exists() else []
        self.assertFalse([name for name in leftovers if name.endswith(".partial")], f"no scratch folder left: {leftovers}")

    def test_without_java_it_says_so(self):
        answer = run([INSTALL], self.env)
        self.assertNotEqual(answer.returncode, 0)
        self.assertIn("no java on PATH", answer.stderr)
        self.assertIn("Java 17", answer.stderr)
        self.assert_nothing_installed()

    def test_without_maven_it_says_so(self):
        (self.bin / "java").symlink_to(shutil.which("java"))
        answer = run([INSTALL], self.env)
        self.assertNotEqual(answer.returncode, 0)
        self.assertIn("no mvn on PATH", answer.stderr)
        self.assert_nothing_installed()

    def test_maven_central_unreachable_leaves_nothing_half_installed(self):
        (self.bin / "java").symlink_to(shutil.which("java"))
        mvn = self.bin / "mvn"
        mvn.write_text(
            "#!/bin/bash\n"
            "echo '[ERROR] Failed to execute goal: Could not transfer artifact org.apache.kafka:kafka_2.13:pom:4.4.0"
            " from/to central: Unknown host repo.maven.apache.org'\n"
            "mkdir -p lib && touch lib/kafka-clients-4.4.0.jar\n"
            "exit 1\n"
        )
        mvn.chmod(0o755)
        for attempt in range(2):
            answer = run([INSTALL], self.env)
            self.assertNotEqual(answer.returncode, 0, f"attempt {attempt}")
            self.assertIn("Maven Central is unreachable", answer.stderr)
            self.assertIn("nothing was installed", answer.stderr)
            self.assert_nothing_installed()

    def test_an_installed_kafka_is_reported_at_once(self):
        (self.home / "lib").mkdir(parents=True)
        (self.home / ".installed").touch()
        (self.home / "lib" / "kafka-tools-4.4.0.jar").touch()
        answer = run([INSTALL], self.env)
        self.assertEqual(answer.returncode, 0, answer.stderr)
        self.assertEqual(answer.stdout.strip(), str(self.home))
        self.assertEqual(answer.stderr, "")


class BrokerScript(unittest.TestCase):
    def setUp(self):
        self.dir = Path(tempfile.mkdtemp(prefix="sluice-broker-test-"))

    def tearDown(self):
        run([BROKER, "stop", "1", self.dir], dict(os.environ))
        shutil.rmtree(self.dir)

    def test_a_port_in_use_is_refused(self):
        with socket.socket() as holder:
            holder.bind(("127.0.0.1", 0))
            holder.listen()
            port = holder.getsockname()[1]
            answer = run([BROKER, "start", port, self.dir], dict(os.environ))
        self.assertEqual(answer.returncode, 1)
        self.assertIn(f"port {port} on 127.0.0.1 is in use", answer.stderr)

    def test_a_broker_that_exits_at_start_names_its_log(self):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        # Storage formatted for another cluster node: Kafka refuses to start on it.
        (self.dir / "data").mkdir()
        (self.dir / "data" / "meta.properties").write_text("version=1\ncluster.id=AAAAAAAAAAAAAAAAAAAAAA\nnode.id=7\ndirectory.id=AAAAAAAAAAAAAAAAAAAAAA\n")
        answer = run([BROKER, "start", port, self.dir], dict(os.environ))
        self.assertEqual(answer.returncode, 1, answer.stdout)
        self.assertIn("Kafka exited before it was ready", answer.stderr)
        self.assertIn(str(self.dir / "broker.log"), answer.stderr)
        self.assertFalse((self.dir / "kafka.pid").exists())

    def test_a_crashed_broker_is_fenced_before_it_starts_again(self):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        env = dict(os.environ, SLUICE_KAFKA_SEPARATE_CONTROLLER="1")
        started = run([BROKER, "start", port, self.dir], env)
        self.assertEqual(started.returncode, 0, started.stderr)
        controller = (self.dir / "controller" / "kafka.pid").read_text().strip()
        broker = (self.dir / "kafka.pid").read_text().strip()
        self.assertNotEqual(controller, broker, "two JVMs")
        killed = run([BROKER, "kill", port, self.dir], dict(os.environ))
        self.assertEqual(killed.returncode, 0, killed.stderr)
        self.assertIn("the controller fenced it", killed.stdout)
        controller_log = self.dir / "controller" / "controller.log"
        self.assertTrue("Fencing broker 1 at epoch" in controller_log.read_text(), f"the fence is in {controller_log}")
        again = run([BROKER, "start", port, self.dir], dict(os.environ))
        self.assertEqual(again.returncode, 0, again.stderr)
        self.assertEqual((self.dir / "controller" / "kafka.pid").read_text().strip(), controller, "the controller stayed up")
        # Started before the fence, the new incarnation would be refused while the old one's
        # session lasts, and lead its partitions meanwhile.
        self.assertFalse("DUPLICATE_BROKER_REGISTRATION" in (self.dir / "broker.log").read_text(), f"registered at once: see {self.dir / 'broker.log'}")
        stopped = run([BROKER, "stop", port, self.dir], dict(os.environ))
        self.assertEqual(stopped.returncode, 0, stopped.stderr)
        self.assertIn("stopped Kafka's controller", stopped.stdout)
        self.assertFalse((self.dir / "controller" / "kafka.pid").exists())


if __name__ == "__main__":
    unittest.main()
