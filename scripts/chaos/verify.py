#!/usr/bin/env python3
"""Independent verifier of the payment pipeline after a chaos run.

    python scripts/chaos/verify.py --bootstrap 127.0.0.1:PORT --registry http://127.0.0.1:PORT \
        --api http://127.0.0.1:PORT --manifest /path/manifest.json [--timeout 120] [--http-retry-s 30]

It trusts nothing the engine says about itself: it reads the output topics with its own
consumer (`isolation.level=read_committed`), decodes their Avro values (Confluent wire format)
through the Schema Registry, asks the HTTP API what it serves, and checks them against each
other and against the manifest the chaos test wrote.

Manifest (JSON):

    {"users": [{"user_id": "u_...", "email": "...", "token": "<bearer JWT of that user>"}],
     "operator_token": "<bearer JWT with the operator role>",
     "commands": [{"command_id": "<id the API returned>", "kind": "deposit", "user_id": "u_...",
                   "idempotency_key": "...", "amount": "12.34", "payee": null, "attempts": 2}]}

Required: `users[].user_id`, `users[].token`, `operator_token`, and for each command
`command_id`, `kind`, `user_id`, plus `amount` (a decimal string) for payment commands.
`kind` is deposit, withdrawal, transfer or refund (payment commands), or any other word for a
non-payment command (e.g. `profile`; amount null), which is checked on the audit trail only.
`user_id` is the account the command acts on, i.e. its record key: the payer; for a deposit
the user credited; for a refund the transfer's payee, who sends the money back. `payee`
(optional) is the user a transfer or refund credits, as an email or a user id. `email`,
`idempotency_key` and `attempts` are informational. List a command retried with the same
Idempotency-Key once: the API gives every retry the same command id.

Where a command's final outcome is (see processors/src/emit.rs, balance_check.rs, settlement.rs):

- payment commands: exactly one record, keyed by the payer, on `payments.settled`
  (PaymentSettled: deposits and withdrawals once balance-check applied them; transfers and
  refunds once settlement credited the payee) or on `payments.rejected` (PaymentRejected, with
  a `reason`: refused by auth-validation or balance-check, or a transfer/refund whose payee was
  unknown or frozen: debited, then reversed, so the money came back). A pending transfer (debited,
  credit not applied) has neither, and is reported as having no outcome.
- every command, payment or not: exactly one ActivityLog on `system.logs.activity` with
  `outcome` settled or rejected, agreeing with the payment record.
- `GET /v1/commands/{id}?user_id=` (operator token) must answer the same status (`settled`, or
  `rejected` with the same reason); `accepted` and `pending` are not final.

Reading: the three topics, every partition, from its earliest offset to its high watermark
as it is when the verifier starts; a read_committed consumer's position passes that mark only
once every transaction below it is committed or aborted, so a transaction still open there is
waited for (the engine's transactions time out after 10 s), up to `--timeout`.

Balances: `GET /v1/accounts/me` with each user's token answers `{"balance": "210.00", ...}`.
The verifier computes each balance from the settled records it read (deposit: +payer;
withdrawal: -payer; transfer and refund: -payer, +payee; rejected and reversed: nothing) and
checks: API balance == computed balance for every user; no balance negative; the sum of the
API balances == settled deposits - settled withdrawals (money neither created nor destroyed;
this assumes topology.toml's `opening_balance` of 0.00). Settled payments touching a user the
manifest does not list are violations, since that user's balance cannot be checked.

Prints every violation on its own line (`VIOLATION ...`, naming the command ids), then one
line of JSON with counts. Exit code: 0 when every check holds, 1 on violations, 2 when the
verifier could not do its job (bad manifest, broker, registry or API unreachable in time).
"""

import argparse
import hashlib
import json
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
import warnings
from collections import defaultdict
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Optional

SETTLED_TOPIC = "payments.settled"
REJECTED_TOPIC = "payments.rejected"
ACTIVITY_TOPIC = "system.logs.activity"
TOPICS = (SETTLED_TOPIC, REJECTED_TOPIC, ACTIVITY_TOPIC)

# Manifest kind -> (PaymentKind symbol on the outcome topics, ActivityLog command_type).
PAYMENT_KINDS = {
    "deposit": ("DEPOSIT", "Deposit"),
    "withdrawal": ("WITHDRAWAL", "Withdrawal"),
    "transfer": ("TRANSFER", "Transfer"),
    "refund": ("REFUND", "Refund"),
}
FINAL_STATUSES = ("settled", "rejected")


class VerifierError(Exception):
    """The verifier could not do its job (as opposed to a violation it found)."""


@dataclass(frozen=True)
class Command:
    """One command of the manifest."""
    command_id: str
    kind: str
    user_id: str
    amount: Optional[Decimal]
    payee: Optional[str]  # a user id (emails are converted on load)


@dataclass(frozen=True)
class Outcome:
    """A decoded PaymentSettled or PaymentRejected record, and where it was read."""
    where: str  # topic/partition@offset
    status: str  # settled or rejected
    command_id: str
    kind: str  # PaymentKind symbol
    payer: str
    payee: Optional[str]  # settled transfers and refunds only
    amount: Decimal
    reason: Optional[str]  # rejected only


@dataclass(frozen=True)
class Activity:
    """A decoded ActivityLog record, and where it was read."""
    where: str
    command_id: str
    command_type: str
    outcome: str
    reason: Optional[str]


def user_id_for_email(email: str) -> str:
    """The user id Sluice derives from an email (processors/src/model.rs: user_id_for_email)."""
    return "u_" + hashlib.sha256(email.strip().lower().encode()).hexdigest()[:20]


# ---------------------------------------------------------------- the checks (pure)

def check_outcomes(commands, outcomes, activities):
    """Exactly one final outcome per command. Returns (final, violations): `final` maps each
    command id with a single final outcome to (status, reason); the violations name the
    commands with none or several, those whose outcome contradicts the manifest or the audit
    trail, and payment outcomes of commands the manifest does not list."""
    outcomes_of, activities_of = defaultdict(list), defaultdict(list)
    for outcome in outcomes:
        outcomes_of[outcome.command_id].append(outcome)
    for activity in activities:
        activities_of[activity.command_id].append(activity)
    violations = []
    for command_id in sorted(set(outcomes_of) - {c.command_id for c in commands}):
        where = ", ".join(o.where for o in outcomes_of[command_id])
        violations.append(f"unlisted-outcome command={command_id}: payment outcome for a command the manifest does not list ({where})")
    final = {}
    for command in commands:
        outcome, found = final_outcome(command, outcomes_of.get(command.command_id, []), activities_of.get(command.command_id, []))
        violations += found
        if outcome is not None:
            final[command.command_id] = outcome
    return final, violations


def final_outcome(command, outcomes, activities):
    """The one final (status, reason) of `command` from its payment outcome records and its
    audit records, or None; and the violations found."""
    cid = command.command_id
    violations = []
    if len(activities) > 1:
        violations.append(f"duplicate-activity command={cid}: {len(activities)} activity records ({', '.join(a.where for a in activities)})")
    if command.kind not in PAYMENT_KINDS:
        if outcomes:
            violations.append(f"outcome-mismatch command={cid}: a {command.kind} command has payment outcomes ({', '.join(o.where for o in outcomes)})")
        if not activities:
            return None, violations + [f"no-outcome command={cid} kind={command.kind} user={command.user_id}: nothing on {ACTIVITY_TOPIC}"]
        activity = activities[0]
        if activity.outcome not in FINAL_STATUSES:
            return None, violations + [f"not-final command={cid}: activity outcome `{activity.outcome}` at {activity.where}"]
        return (activity.outcome, activity.reason), violations
    if not outcomes:
        return None, violations + [f"no-outcome command={cid} kind={command.kind} user={command.user_id}: nothing on {SETTLED_TOPIC} or {REJECTED_TOPIC}"]
    if len(outcomes) > 1:
        listing = ", ".join(f"{o.status} at {o.where}" for o in outcomes)
        return None, violations + [f"duplicate-outcome command={cid} kind={command.kind}: {len(outcomes)} outcome records ({listing})"]
    outcome = outcomes[0]
    violations += record_mismatches(command, outcome)
    violations += activity_mismatches(command, outcome, activities)
    return (outcome.status, outcome.reason), violations


def record_mismatches(command, outcome):
    """The ways a payment outcome record contradicts the manifest command it answers."""
    problems = []
    expected_kind = PAYMENT_KINDS[command.kind][0]
    if outcome.kind != expected_kind:
        problems.append(f"kind {outcome.kind}, manifest {expected_kind}")
    if outcome.payer != command.user_id:
        problems.append(f"payer {outcome.payer}, manifest {command.user_id}")
    if command.amount is not None and outcome.amount != command.amount:
        problems.append(f"amount {outcome.amount}, manifest {command.amount}")
    if outcome.status == "settled":
        two_sided = command.kind in ("transfer", "refund")
        if two_sided and outcome.payee is None:
            problems.append(f"no payee on a settled {command.kind}")
        elif not two_sided and outcome.payee is not None:
            problems.append(f"payee {outcome.payee} on a settled {command.kind}")
        elif two_sided and command.payee is not None and outcome.payee != command.payee:
            problems.append(f"payee {outcome.payee}, manifest {command.payee}")
    return [f"outcome-mismatch command={command.command_id} at {outcome.where}: {p}" for p in problems]


def activity_mismatches(command, outcome, activities):
    """The audit record of a payment must exist and say what its outcome record says."""
    cid = command.command_id
    if not activities:
        return [f"no-activity command={cid}: {outcome.status} at {outcome.where} but nothing on {ACTIVITY_TOPIC}"]
    activity = activities[0]
    expected = (PAYMENT_KINDS[command.kind][1], outcome.status, outcome.reason)
    if (activity.command_type, activity.outcome, activity.reason) != expected:
        return [f"activity-mismatch command={cid}: {activity.where} says {activity.command_type} {activity.outcome} ({activity.reason}),"
                f" {outcome.where} says {expected[0]} {expected[1]} ({expected[2]})"]
    return []


def check_statuses(commands, final, api_statuses):
    """The status the API serves (`api_statuses`: command id -> (status, reason), or a
    description of the HTTP failure) must be the final outcome read from the topics."""
    violations = []
    for command in commands:
        cid = command.command_id
        served = api_statuses.get(cid)
        if cid not in final:
            continue  # already reported: no single outcome to compare with
        if not isinstance(served, tuple):
            violations.append(f"status-missing command={cid}: GET /v1/commands/{cid} gave {served}")
        elif served != final[cid]:
            violations.append(f"status-mismatch command={cid}: API says {served[0]} ({served[1]}), topics say {final[cid][0]} ({final[cid][1]})")
    return violations


def compute_balances(outcomes):
    """Balances implied by the settled records, each command counted once (its duplicates are
    reported by `check_outcomes`). Returns (balances, deposited, withdrawn)."""
    balances = defaultdict(Decimal)
    deposited = withdrawn = Decimal(0)
    seen = set()
    for outcome in outcomes:
        if outcome.status != "settled" or outcome.command_id in seen:
            continue
        seen.add(outcome.command_id)
        if outcome.kind == "DEPOSIT":
            balances[outcome.payer] += outcome.amount
            deposited += outcome.amount
        elif outcome.kind == "WITHDRAWAL":
            balances[outcome.payer] -= outcome.amount
            withdrawn += outcome.amount
        else:  # TRANSFER or REFUND: money moves between two accounts
            balances[outcome.payer] -= outcome.amount
            balances[outcome.payee] += outcome.amount
    return dict(balances), deposited, withdrawn


def check_balances(user_ids, api_balances, computed, deposited, withdrawn):
    """`api_balances`: user id -> Decimal, or a description of the HTTP failure."""
    violations = []
    for user_id in sorted(set(computed) - set(user_ids)):
        violations.append(f"unlisted-account user={user_id}: settled payments move {computed[user_id]} for a user the manifest does not list")
    total = Decimal(0)
    for user_id in user_ids:
        served = api_balances.get(user_id)
        expected = computed.get(user_id, Decimal(0))
        if expected < 0:
            violations.append(f"negative-balance user={user_id}: the settled records imply {expected}")
        if not isinstance(served, Decimal):
            violations.append(f"balance-missing user={user_id}: GET /v1/accounts/me gave {served}")
            continue
        total += served
        if served < 0:
            violations.append(f"negative-balance user={user_id}: the API serves {served}")
        if served != expected:
            violations.append(f"balance-mismatch user={user_id}: API serves {served}, settled records imply {expected}")
    if all(isinstance(api_balances.get(u), Decimal) for u in user_ids) and total != deposited - withdrawn:
        violations.append(f"money-not-conserved: balances sum to {total}, settled deposits {deposited} - settled withdrawals {withdrawn}"
                          f" = {deposited - withdrawn}")
    return violations


# ---------------------------------------------------------------- the manifest

def load_manifest(path):
    """Returns (users: user id -> token, operator token, commands)."""
    try:
        with open(path, encoding="utf-8") as file:
            manifest = json.load(file, parse_float=Decimal)  # an amount given as a number stays exact
        users = {u["user_id"]: u["token"] for u in manifest["users"]}
        operator = manifest["operator_token"]
        commands, seen = [], set()
        for entry in manifest["commands"]:
            cid = entry["command_id"]
            if cid in seen:
                raise VerifierError(f"manifest lists command {cid} twice (list a retried command once, with its attempts)")
            seen.add(cid)
            amount = entry.get("amount")
            payee = entry.get("payee")
            if payee is not None and "@" in payee:
                payee = user_id_for_email(payee)
            kind = entry["kind"].lower()
            if kind in PAYMENT_KINDS and amount is None:
                raise VerifierError(f"manifest command {cid}: a {kind} needs an amount")
            commands.append(Command(cid, kind, entry["user_id"], None if amount is None else Decimal(str(amount)), payee))
    except (OSError, ValueError, KeyError, TypeError, InvalidOperation) as error:
        raise VerifierError(f"cannot read manifest {path}: {error!r}") from error
    return users, operator, commands


# ---------------------------------------------------------------- Kafka

def read_topics(bootstrap, registry_url, timeout_s):
    """Every committed record of TOPICS below the high watermarks of the start, decoded.
    Returns (outcomes, activities, violations for undecodable records, records read per topic)."""
    # Imported here so that the pure checks above run (and are unit-tested) without them.
    # authlib, which the schema registry client imports, warns about its own httpx module.
    warnings.filterwarnings("ignore", module="authlib")
    warnings.filterwarnings("ignore", message=".*httpx.*")
    from confluent_kafka import Consumer, IsolationLevel, KafkaException, TopicPartition
    from confluent_kafka.admin import AdminClient, OffsetSpec
    from confluent_kafka.schema_registry import SchemaRegistryClient
    from confluent_kafka.schema_registry.avro import AvroDeserializer
    from confluent_kafka.schema_registry.error import SchemaRegistryError
    from confluent_kafka.serialization import MessageField, SerializationContext

    deadline = time.monotonic() + timeout_s
    admin = AdminClient({"bootstrap.servers": bootstrap})
    try:
        metadata = admin.list_topics(timeout=timeout_s)
        partitions = []
        for topic in TOPICS:
            if topic not in metadata.topics or metadata.topics[topic].error is not None:
                raise VerifierError(f"topic {topic} does not exist on {bootstrap}")
            partitions += [TopicPartition(topic, p) for p in sorted(metadata.topics[topic].partitions)]
        # What was written when the verifier starts: the high watermarks. A read_committed
        # consumer gets past one only when every transaction below it is decided (the last
        # stable offset passed it): one still open is waited for, up to the timeout.
        ends = offsets(admin, partitions, OffsetSpec.latest(), IsolationLevel.READ_UNCOMMITTED, deadline)
        starts = offsets(admin, partitions, OffsetSpec.earliest(), IsolationLevel.READ_UNCOMMITTED, deadline)
    except KafkaException as error:
        raise VerifierError(f"broker {bootstrap}: {error}") from error

    registry = SchemaRegistryClient({"url": registry_url})
    try:
        registry.get_subjects()
    except Exception as error:
        raise VerifierError(f"schema registry {registry_url}: {error}") from error
    deserialize = AvroDeserializer(registry)
    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": f"sluice-chaos-verify-{uuid.uuid4().hex}",  # assign() only: never joins or commits
        "isolation.level": "read_committed",
        "enable.auto.commit": False,
        "auto.offset.reset": "error",
    })
    pending = {(tp.topic, tp.partition) for tp in partitions if ends[(tp.topic, tp.partition)] > starts[(tp.topic, tp.partition)]}
    consumer.assign([TopicPartition(t, p, starts[(t, p)]) for t, p in sorted(pending)])
    outcomes, activities, violations = [], [], []
    counts = {topic: 0 for topic in TOPICS}
    try:
        while pending:
            if time.monotonic() > deadline:
                positions = consumer.position([TopicPartition(t, p) for t, p in sorted(pending)])
                behind = ", ".join(f"{tp.topic}/{tp.partition} at {tp.offset} of {ends[(tp.topic, tp.partition)]}" for tp in positions)
                raise VerifierError(f"read_committed reading did not reach the high watermarks of the start within {timeout_s} s"
                                    f" (a transaction still open?): {behind}")
            message = consumer.poll(0.5)
            if message is not None:
                if message.error():
                    raise VerifierError(f"consumer error: {message.error()}")
                key = (message.topic(), message.partition())
                if message.offset() < ends[key]:  # later records were committed after the start
                    counts[message.topic()] += 1
                    where = f"{message.topic()}/{message.partition()}@{message.offset()}"
                    try:
                        value = deserialize(message.value(), SerializationContext(message.topic(), MessageField.VALUE))
                        record = decode(message.topic(), where, value)
                    except SchemaRegistryError as error:
                        if error.http_status_code != 404:
                            raise VerifierError(f"schema registry {registry_url}: {error}") from error
                        violations.append(f"undecodable-record at {where}: {error}")
                    except Exception as error:  # bad wire format, datum or record type
                        violations.append(f"undecodable-record at {where}: {error!r}")
                    else:
                        (activities if isinstance(record, Activity) else outcomes).append(record)
            # Transaction markers and aborted records take offsets too: the position, not the
            # last record, says when a partition is read to its end.
            for tp in consumer.position([TopicPartition(t, p) for t, p in pending]):
                if tp.offset >= ends[(tp.topic, tp.partition)]:
                    pending.discard((tp.topic, tp.partition))
    except KafkaException as error:
        raise VerifierError(f"broker {bootstrap}: {error}") from error
    finally:
        consumer.close()
    return outcomes, activities, violations, counts


def offsets(admin, partitions, spec, isolation, deadline):
    futures = admin.list_offsets({tp: spec for tp in partitions}, isolation_level=isolation,
                                 request_timeout=max(1.0, deadline - time.monotonic()))
    return {(tp.topic, tp.partition): future.result().offset for tp, future in futures.items()}


def decode(topic, where, value):
    """A decoded Avro value of `topic` as an Outcome or an Activity."""
    if topic == ACTIVITY_TOPIC:
        return Activity(where, value["command_id"], value["command_type"], value["outcome"], value.get("reason"))
    settled = topic == SETTLED_TOPIC
    return Outcome(
        where=where,
        status="settled" if settled else "rejected",
        command_id=value["command_id"],
        kind=value["kind"],
        payer=value["payer_user_id"],
        payee=value.get("payee_user_id") if settled else None,
        amount=Decimal(value["amount"]),  # fastavro decodes the decimal logical type to Decimal
        reason=None if settled else value["reason"],
    )


# ---------------------------------------------------------------- HTTP API

class Api:
    """GETs on the HTTP API, retried while it answers 429 or 503 (or cannot be reached)."""

    def __init__(self, base, retry_s):
        self.base = base.rstrip("/")
        self.retry_s = retry_s

    def get(self, path, token):
        """(HTTP status, parsed JSON body); after `retry_s` of 429/503/connection failures,
        the last of them."""
        deadline = time.monotonic() + self.retry_s
        while True:
            request = urllib.request.Request(self.base + path, headers={"authorization": f"Bearer {token}"})
            wait = 0.5
            try:
                with urllib.request.urlopen(request, timeout=10) as response:
                    return response.status, json.loads(response.read())
            except urllib.error.HTTPError as error:
                body = error.read()
                try:
                    answer = (error.code, json.loads(body))
                except ValueError:
                    answer = (error.code, body.decode(errors="replace"))
                if error.code not in (429, 503):
                    return answer
                retry_after = error.headers.get("retry-after", "")
                wait = float(retry_after) if retry_after.isdigit() else wait
            except (urllib.error.URLError, OSError) as error:
                answer = (None, str(error))
            if time.monotonic() + wait > deadline:
                if answer[0] is None:
                    raise VerifierError(f"API {self.base} unreachable for {self.retry_s} s: {answer[1]}")
                return answer
            time.sleep(wait)

    def command_status(self, command, operator_token):
        """(status, reason), or a description of what the API answered instead."""
        path = f"/v1/commands/{urllib.parse.quote(command.command_id, safe='')}?user_id={urllib.parse.quote(command.user_id)}"
        status, body = self.get(path, operator_token)
        if status == 200:
            return body["status"], body.get("reason")
        return f"HTTP {status} {body}"

    def balance(self, user_id, token):
        """The balance as a Decimal, or a description of what the API answered instead."""
        status, body = self.get("/v1/accounts/me", token)
        if status != 200:
            return f"HTTP {status} {body}"
        if body.get("user_id") != user_id:
            return f"the account of {body.get('user_id')} (wrong token in the manifest?)"
        return Decimal(body["balance"])


# ---------------------------------------------------------------- main

def main(argv=None):
    parser = argparse.ArgumentParser(description="Independent verifier of the payment pipeline after a chaos run.")
    parser.add_argument("--bootstrap", required=True, help="Kafka bootstrap servers")
    parser.add_argument("--registry", required=True, help="Schema Registry base URL")
    parser.add_argument("--api", required=True, help="HTTP API base URL")
    parser.add_argument("--manifest", required=True, help="manifest JSON written by the chaos test")
    parser.add_argument("--timeout", type=float, default=120, help="seconds to read the topics to their end (default 120)")
    parser.add_argument("--http-retry-s", type=float, default=30, help="seconds to retry one API read answered 429/503 (default 30)")
    args = parser.parse_args(argv)

    summary = {"ok": False}
    try:
        users, operator, commands = load_manifest(args.manifest)
        summary.update(commands=len(commands), users=len(users))
        outcomes, activities, violations, counts = read_topics(args.bootstrap, args.registry, args.timeout)
        summary["records_read"] = counts
        final, found = check_outcomes(commands, outcomes, activities)
        violations += found

        api = Api(args.api, args.http_retry_s)
        statuses = {c.command_id: api.command_status(c, operator) for c in commands if c.command_id in final}
        violations += check_statuses(commands, final, statuses)

        computed, deposited, withdrawn = compute_balances(outcomes)
        balances = {user_id: api.balance(user_id, token) for user_id, token in users.items()}
        violations += check_balances(list(users), balances, computed, deposited, withdrawn)

        for line in violations:
            print(f"VIOLATION {line}")
        finals = list(final.values())
        summary.update(
            ok=not violations,
            violations=len(violations),
            settled=sum(1 for s, _ in finals if s == "settled"),
            rejected=sum(1 for s, _ in finals if s == "rejected"),
            without_single_outcome=len(commands) - len(final),
            deposited=str(deposited),
            withdrawn=str(withdrawn),
            balances_total=str(sum((b for b in balances.values() if isinstance(b, Decimal)), Decimal(0))),
        )
        code = 0 if not violations else 1
    except VerifierError as error:
        print(f"ERROR {error}", file=sys.stderr)
        summary["error"] = str(error)
        code = 2
    print(json.dumps(summary, sort_keys=True))
    return code


if __name__ == "__main__":
    sys.exit(main())
