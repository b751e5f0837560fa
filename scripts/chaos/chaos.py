#!/usr/bin/env python3
"""The chaos run: the payment pipeline under kills, a wiped state directory and a broker
restart, checked by an independent verifier (docs/guarantees.md, the chaos test).

    python scripts/chaos/chaos.py --sluice target/debug/sluice [--transfers N] [--kills K]

Starts, as separate processes on free loopback ports: a private Apache Kafka
(scripts/broker.sh), `sluice registry`, three `sluice run` instances of one application
(exactly_once_v2, one standby replica, static membership) and `sluice ingest`. Signs up users
through the HTTP API, funds them with operator deposits, then sends transfers (about one in ten
to a payee who does not exist, so that the pipeline reverses them), refunds of received
transfers, and client retries with the same Idempotency-Key, from several client threads, while
a chaos thread kills a `sluice run` instance with SIGKILL every few seconds and restarts it (once
with its state directory wiped) and kills (SIGKILL) and restarts the broker once (its KRaft
controller runs in a JVM of its own and stays up). It stops sending when N transfers
were accepted and K kills are done, waits until every command has its final status, writes a
manifest of every command and runs scripts/chaos/verify.py on it, which reads the output
topics read_committed and the HTTP API and checks the outcomes (exactly one per command), the
conservation of money, that no balance is negative, and every balance.

Prints the figures (commands, kills, wipes, broker restarts, seconds in which a client was
refused) and exits 0 only when the verifier passed and every retry with the same key got the same
command.
"""

import argparse
import json
import os
import random
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
INSTANCES = 3
USERS = 8
DEPOSIT = 1000


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(api, method, path, token=None, body=None, key=None):
    """(status, JSON body or text, Retry-After seconds or None); status 0 when unreachable."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(api + path, data=data, method=method)
    request.add_header("content-type", "application/json")
    if token:
        request.add_header("authorization", "Bearer " + token)
    if key:
        request.add_header("idempotency-key", key)
    try:
        with urllib.request.urlopen(request, timeout=20) as response:
            return response.status, json.loads(response.read() or b"null"), None
    except urllib.error.HTTPError as error:
        text = error.read()
        retry = error.headers.get("retry-after")
        try:
            parsed = json.loads(text)
        except ValueError:
            parsed = text.decode(errors="replace")
        return error.code, parsed, float(retry) if retry else None
    except OSError:
        return 0, None, None


def wait_for(what, condition, seconds=120, show=None):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise RuntimeError(f"timed out waiting for {what}" + (f": {show()}" if show else ""))


class Stack:
    """The broker, the registry, three processor instances and the API, as processes."""

    def __init__(self, sluice, work):
        self.sluice, self.work = sluice, work
        self.broker_port = free_port()
        self.broker_dir = os.path.join(work, "broker")
        registry, http = free_port(), free_port()
        self.registry = f"127.0.0.1:{registry}"
        self.api = f"http://127.0.0.1:{http}"
        self.env = dict(os.environ)
        self.env.update({
            "SLUICE__APPLICATION_ID": "chaos",
            "SLUICE__BOOTSTRAP_SERVERS": f"127.0.0.1:{self.broker_port}",
            "SLUICE__SCHEMA_REGISTRY_URL": f"http://{self.registry}",
            "SLUICE__JWT_SECRET": "chaos-" + secrets.token_hex(24),
            "SLUICE__INTERNAL_KEY": "chaos-" + secrets.token_hex(24),
            "SLUICE__SCHEMA_REGISTRY_USER_INFO": "sluice:" + secrets.token_hex(16),
            "SLUICE__HTTP_LISTEN": f"127.0.0.1:{http}",
            "SLUICE__HTTP_RATE_LIMIT_PER_S": "0",
            "SLUICE__NUM_STANDBY_REPLICAS": "1",
            "SLUICE__PROCESSING_GUARANTEE": "exactly_once_v2",
            "SLUICE__METRICS_LISTEN": "127.0.0.1:0",
            "RUST_LOG": "info",
        })
        self.instance_env = [
            {
                "SLUICE__STATE_DIR": os.path.join(work, f"state-{i}"),
                "SLUICE__GROUP_INSTANCE_ID": f"chaos-{i}",
                "SLUICE__APPLICATION_SERVER": f"http://127.0.0.1:{free_port()}",
            }
            for i in range(INSTANCES)
        ]
        self.others = []
        self.instances = [None] * INSTANCES

    def spawn(self, args, log, extra=None):
        env = dict(self.env, **(extra or {}))
        return subprocess.Popen([self.sluice, *args], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=open(os.path.join(self.work, log), "a"))

    def broker(self, action):
        """scripts/broker.sh with the controller in a JVM of its own, so that the broker can crash
        alone (docs/guarantees.md, a hanging transaction); `kill` returns once it is fenced."""
        env = dict(os.environ, SLUICE_KAFKA_SEPARATE_CONTROLLER="1")
        subprocess.run([os.path.join(ROOT, "scripts", "broker.sh"), action, str(self.broker_port), self.broker_dir], env=env, check=action in ("start", "kill"), stdout=subprocess.DEVNULL)

    def start(self):
        self.broker("start")
        subprocess.run([self.sluice, "topics", "create"], cwd=ROOT, env=self.env, check=True, stdout=subprocess.DEVNULL)
        self.others.append(self.spawn(["registry", "--listen", self.registry], "registry.log"))
        for i in range(INSTANCES):
            self.start_instance(i)
        self.others.append(self.spawn(["ingest"], "ingest.log"))
        wait_for("the API", lambda: call(self.api, "GET", "/health")[0] == 200)

    def start_instance(self, i):
        self.instances[i] = self.spawn(["run"], f"run-{i}.log", self.instance_env[i])

    def kill_instance(self, i, wipe=False):
        self.instances[i].kill()
        self.instances[i].wait()
        if wipe:
            shutil.rmtree(self.instance_env[i]["SLUICE__STATE_DIR"], ignore_errors=True)

    def token(self, subject, role):
        out = subprocess.run([self.sluice, "token", "--subject", subject, "--role", role, "--ttl-s", "86400"], cwd=ROOT, env=self.env, capture_output=True, text=True, check=True)
        return out.stdout.strip()

    def stop(self):
        for process in [*self.instances, *self.others]:
            if process is not None and process.poll() is None:
                process.terminate()
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    process.kill()
        self.broker("stop")


class Ledger:
    """Every command sent, and what the clients saw, shared by the client threads."""

    def __init__(self):
        self.lock = threading.Lock()
        self.commands = []
        self.refused = []  # (from, to) of each refused or unanswered request
        self.problems = []  # what the driver itself found wrong
        self.transfers = 0

    def refuse(self, since):
        with self.lock:
            self.refused.append((since, time.time()))


def login(api, user):
    """Logs `user` in (through the API) and keeps the access token."""
    answer = {}
    wait_for(f"{user['email']}'s login", lambda: answer.update(r=call(api, "POST", "/v1/auth/login", body={"email": user["email"], "password": user["password"]})) or answer["r"][0] == 200)
    user["token"] = answer["r"][1]["access_token"]


def submit(api, ledger, user, path, body, kind, account, payee=None, duplicate=False):
    """Sends a command as `user` (logged in again when the token expired) until it is accepted,
    retrying with the same Idempotency-Key; with `duplicate`, sends it once more after it was
    accepted and checks the same command comes back. Returns the command id, or None when the
    API refused it for good (422)."""
    key = f"{kind}-{secrets.token_hex(8)}"
    attempts = 0
    while True:
        attempts += 1
        sent = time.time()
        status, answer, retry = call(api, "POST", path, token=user["token"], body=body, key=key)
        if status in (200, 202):
            break
        if status == 422:
            return None
        if status == 401 and "password" in user:
            login(api, user)
            continue
        if status in (0, 503) or status >= 500:
            ledger.refuse(sent)
            time.sleep(retry if retry else 0.2)
            continue
        raise RuntimeError(f"{path} answered {status}: {answer}")
    command_id = answer["command_id"]
    if duplicate:
        attempts += 1
        status, again, _ = call(api, "POST", path, token=user["token"], body=body, key=key)
        if status in (200, 202) and again.get("command_id") != command_id:
            with ledger.lock:
                ledger.problems.append(f"a retry with Idempotency-Key {key} got command {again.get('command_id')}, not {command_id}")
    with ledger.lock:
        ledger.commands.append({"command_id": command_id, "kind": kind, "user_id": account, "idempotency_key": key, "amount": body.get("amount"),
                                "payee": payee, "attempts": attempts, "status_url": answer["status_url"], "sender": user})
    return command_id


def sign_up(stack, ledger, n):
    users = []
    for i in range(n):
        email, password = f"chaos{i}@example.com", f"chaos-password-{i}"
        wait_for(f"{email}'s registration", lambda: call(stack.api, "POST", "/v1/auth/register", body={"email": email, "password": password})[0] in (202, 409))
        user = {"email": email, "password": password}
        login(stack.api, user)
        profile = call(stack.api, "PATCH", "/v1/auth/me", token=user["token"], body={"full_name": f"Chaos User {i}", "date_of_birth": "1990-01-01"})
        assert profile[0] == 202, profile
        user["user_id"] = subprocess.run([stack.sluice, "user-id", email], capture_output=True, text=True, check=True).stdout.strip()
        user["profile_status"] = profile[1]["status_url"]
        users.append(user)
    for user in users:
        wait_for("the profiles", lambda: call(stack.api, "GET", user["profile_status"], token=user["token"])[1].get("status") == "settled", 180)
    return users


def client(stack, ledger, users, rng, target, pause, stop):
    """A client acting for a random user each time: transfers (some to unknown payees),
    refunds of what that user received; until the chaos is over and `target` transfers were
    accepted."""
    while not (stop.is_set() and ledger.transfers >= target):
        time.sleep(pause)
        user = rng.choice(users)
        roll = rng.random()
        with ledger.lock:
            mine = [c for c in ledger.commands if c["kind"] == "transfer" and c["payee"] == user["user_id"]]
        if roll < 0.08 and mine:
            payment = rng.choice(mine)
            # Mostly part of the transfer; sometimes more than it, which is rejected.
            refund = str(min(Decimal(payment["amount"]), Decimal("1.00"))) if rng.random() < 0.8 else "999999.00"
            path = f"/v1/payments/{payment['command_id']}/refund"
            submit(stack.api, ledger, user, path, {"amount": refund, "reason": "chaos"}, "refund", user["user_id"], payee=payment["user_id"])
            continue
        cents = rng.randint(1, 2500)
        amount = f"{cents // 100}.{cents % 100:02d}"
        if roll < 0.18:
            payee = f"ghost{rng.randint(0, 10**6)}@example.com"
            body = {"payee_email": payee, "amount": amount}
            payee_id = subprocess.run([stack.sluice, "user-id", payee], capture_output=True, text=True, check=True).stdout.strip()
        else:
            other = rng.choice([u for u in users if u is not user])
            body = {"payee_user_id": other["user_id"], "amount": amount}
            payee_id = other["user_id"]
        if submit(stack.api, ledger, user, "/v1/transfers", body, "transfer", user["user_id"], payee=payee_id, duplicate=rng.random() < 0.1):
            with ledger.lock:
                ledger.transfers += 1


def chaos(stack, kills, interval, rng, events, done):
    """Kills a random instance every `interval` seconds and restarts it a second later; the
    second kill wipes its state directory; the broker is killed and restarted once, half-way."""
    broker_at = max(1, kills // 2)
    for k in range(kills):
        time.sleep(interval)
        i = rng.randrange(INSTANCES)
        wipe = k == 1
        stack.kill_instance(i, wipe=wipe)
        events.append(("wipe" if wipe else "kill", i, time.time()))
        time.sleep(1)
        stack.start_instance(i)
        if k + 1 == broker_at:
            time.sleep(interval / 2)
            stopping = time.time()
            # A crash of the broker alone, started again once its controller has fenced it: a
            # clean stop of a lone broker, or a crash of a combined broker and controller, can
            # complete a transaction's commit without writing its markers in Kafka 4.4.0
            # (KAFKA-20734; see docs/guarantees.md, a hanging transaction), which no client can end.
            stack.broker("kill")
            stack.broker("start")
            events.append(("broker-restart", None, stopping, time.time()))
    done.set()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sluice", default=os.path.join(ROOT, "target", "debug", "sluice"))
    parser.add_argument("--python", default=sys.executable, help="the interpreter for the verifier (needs confluent-kafka and fastavro)")
    parser.add_argument("--transfers", type=int, default=300)
    parser.add_argument("--kills", type=int, default=4)
    parser.add_argument("--kill-interval", type=float, default=6.0)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--pause", type=float, default=0.02, help="seconds each client waits between commands")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--settle-timeout", type=float, default=600, help="seconds to wait for every command's final status")
    parser.add_argument("--keep", action="store_true", help="keep the working directory (logs, manifest)")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(10**6)
    print(f"chaos: seed {seed}", flush=True)
    work = tempfile.mkdtemp(prefix="sluice-chaos.")
    stack = Stack(args.sluice, work)
    ok = False
    try:
        stack.start()
        ledger = Ledger()
        users = sign_up(stack, ledger, USERS)
        operator = {"token": stack.token("chaos-operator", "operator")}
        for user in users:
            submit(stack.api, ledger, operator, "/v1/deposits", {"user_id": user["user_id"], "amount": f"{DEPOSIT}.00"}, "deposit", user["user_id"])
        stop, chaos_done, events = threading.Event(), threading.Event(), []
        started = time.time()
        threads = [threading.Thread(target=client, args=(stack, ledger, users, random.Random(seed + i), args.transfers, args.pause, stop)) for i in range(args.clients)]
        threads.append(threading.Thread(target=chaos, args=(stack, args.kills, args.kill_interval, random.Random(seed), events, chaos_done)))
        for thread in threads:
            thread.start()
        chaos_done.wait()
        stop.set()
        for thread in threads:
            thread.join()
        elapsed = time.time() - started
        print(f"chaos: {len(ledger.commands)} commands ({ledger.transfers} transfers) accepted in {elapsed:.0f} s", flush=True)
        pending = {c["command_id"]: c for c in ledger.commands}
        settle_started = time.time()

        def final(command):
            # The status URL names the account when the sender acts for another (deposits).
            status, body, _ = call(stack.api, "GET", command["status_url"], token=command["sender"]["token"])
            if status == 401 and "password" in command["sender"]:
                login(stack.api, command["sender"])
            return status == 200 and body.get("status") in ("settled", "rejected")

        def settled():
            commands = list(pending.values())
            with ThreadPoolExecutor(8) as pool:
                for command, done in zip(commands, pool.map(final, commands)):
                    if done:
                        del pending[command["command_id"]]
            return not pending

        def show_pending():
            sample = [(c["kind"], c["command_id"], call(stack.api, "GET", c["status_url"], token=c["sender"]["token"])[:2]) for c in list(pending.values())[:5]]
            return f"{len(pending)} not final, e.g. {sample}"

        wait_for("every command's final status", settled, args.settle_timeout, show_pending)
        print(f"chaos: every command final {time.time() - settle_started:.0f} s after the last was sent", flush=True)
        for user in users:
            login(stack.api, user)  # a fresh token for the verifier's balance reads
        manifest = {
            "users": [{k: u[k] for k in ("user_id", "email", "token")} for u in users],
            "operator_token": operator["token"],
            "commands": [{k: v for k, v in c.items() if k not in ("status_url", "sender")} for c in ledger.commands],
        }
        path = os.path.join(work, "manifest.json")
        with open(path, "w") as f:
            json.dump(manifest, f)
        verify = subprocess.run([args.python, os.path.join(ROOT, "scripts", "chaos", "verify.py"), "--bootstrap", f"127.0.0.1:{stack.broker_port}",
                                 "--registry", f"http://{stack.registry}", "--api", stack.api, "--manifest", path])
        seconds = {int(t) for (a, b) in ledger.refused for t in range(int(a), int(b) + 1)}
        kills = sum(1 for e in events if e[0] in ("kill", "wipe"))
        wipes = sum(1 for e in events if e[0] == "wipe")
        restarts = [e for e in events if e[0] == "broker-restart"]
        # Refusals while the broker was away (plus the time clients take to reconnect).
        during_restart = sum(1 for (a, b) in ledger.refused if any(e[2] <= b and a <= e[3] + 10 for e in restarts))
        print(json.dumps({"commands": len(ledger.commands), "transfers": ledger.transfers, "kills": kills, "wipes": wipes, "broker_restarts": len(restarts),
                          "refused_requests": len(ledger.refused), "refused_during_broker_restart": during_restart, "seconds_refused": len(seconds), "seconds": round(elapsed), "seed": seed}))
        for problem in ledger.problems:
            print(f"VIOLATION: {problem}")
        ok = verify.returncode == 0 and not ledger.problems
    finally:
        stack.stop()
        if args.keep or not ok:
            print(f"chaos: logs and manifest kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
