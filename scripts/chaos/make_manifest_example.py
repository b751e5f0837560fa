#!/usr/bin/env python3
"""Sends a small payment scenario through the HTTP API of a running dev stack and writes the
manifest `verify.py` checks, once every command has a final status.

    python scripts/chaos/make_manifest_example.py --api http://127.0.0.1:8080 \
        --operator-token "$(target/debug/sluice token --subject back-office --role operator)" \
        --out /tmp/manifest.json

The scenario (users get a fresh random suffix, so it can run again on the same stack):
three users with profiles (kind `profile`); a deposit to each; a transfer a -> b sent twice with the same
Idempotency-Key; a transfer from b to an unknown payee (debited, then reversed); a partial
refund by b of the a -> b transfer; a transfer c -> a beyond c's balance (insufficient_funds);
a withdrawal by a.
"""

import argparse
import json
import sys
import time
import urllib.error
import urllib.request
import uuid

SETTLE_TIMEOUT_S = 60


def call(api, method, path, token=None, body=None, idempotency_key=None):
    """One HTTP request; returns (status, headers, JSON body or None)."""
    headers = {"content-type": "application/json"}
    if token:
        headers["authorization"] = f"Bearer {token}"
    if idempotency_key:
        headers["idempotency-key"] = idempotency_key
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(api + path, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            raw = response.read()
            return response.status, response.headers, json.loads(raw) if raw else None
    except urllib.error.HTTPError as error:
        raw = error.read()
        return error.code, error.headers, json.loads(raw) if raw else None


def expect(result, status, what):
    if result[0] != status:
        sys.exit(f"{what}: expected HTTP {status}, got {result[0]} {result[2]}")
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--api", required=True)
    parser.add_argument("--operator-token", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    api, operator = args.api.rstrip("/"), args.operator_token
    run = uuid.uuid4().hex[:8]

    users = {}
    for name in ("a", "b", "c"):
        email = f"{name}-{run}@example.com"
        password = f"{name}-secret-password-{run}"
        expect(call(api, "POST", "/v1/auth/register", body={"email": email, "password": password}), 202, f"register {email}")
        users[name] = {"email": email, "password": password}
    for name, user in users.items():
        deadline = time.monotonic() + SETTLE_TIMEOUT_S
        while True:  # the registration is applied asynchronously
            status, _, body = call(api, "POST", "/v1/auth/login", body={"email": user["email"], "password": user["password"]})
            if status == 200:
                break
            if time.monotonic() > deadline:
                sys.exit(f"login of {user['email']} never succeeded: {status} {body}")
            time.sleep(0.5)
        user["token"], user["user_id"] = body["access_token"], body["user_id"]

    commands = []
    for name, user in users.items():
        profile = {"full_name": f"User {name}", "date_of_birth": "1990-05-04"}
        _, _, answer = expect(call(api, "PATCH", "/v1/auth/me", user["token"], profile), 202, "profile")
        commands.append({"command_id": answer["command_id"], "kind": "profile", "user_id": user["user_id"],
                         "idempotency_key": None, "amount": None, "payee": None, "attempts": 1})
    wait_final(api, operator, commands)  # KYC basic before money moves

    def command(kind, name, path, body, token, payee=None, attempts=1):
        key = f"{kind}-{name}-{len(commands)}-{run}"
        ids = set()
        for _ in range(attempts):
            _, _, answer = expect(call(api, "POST", path, token, body, key), 202, f"{kind} {body}")
            ids.add(answer["command_id"])
        if len(ids) != 1:
            sys.exit(f"retries with one Idempotency-Key gave several command ids: {ids}")
        commands.append({"command_id": ids.pop(), "kind": kind, "user_id": users[name]["user_id"], "idempotency_key": key,
                         "amount": body["amount"], "payee": payee, "attempts": attempts})
        return commands[-1]["command_id"]

    for name, amount in (("a", "250.00"), ("b", "100.00"), ("c", "10.00")):
        command("deposit", name, "/v1/deposits", {"user_id": users[name]["user_id"], "amount": amount}, operator)
    time.sleep(1)
    transfer = command("transfer", "a", "/v1/transfers", {"payee_email": users["b"]["email"], "amount": "40.00"},
                       users["a"]["token"], payee=users["b"]["email"], attempts=2)
    unknown = f"nobody-{run}@example.com"
    command("transfer", "b", "/v1/transfers", {"payee_email": unknown, "amount": "15.00"}, users["b"]["token"], payee=unknown)
    command("transfer", "c", "/v1/transfers", {"payee_user_id": users["a"]["user_id"], "amount": "50.00"},
            users["c"]["token"], payee=users["a"]["user_id"])
    command("withdrawal", "a", "/v1/withdrawals", {"amount": "5.00"}, users["a"]["token"])
    wait_final(api, operator, commands)
    command("refund", "b", f"/v1/payments/{transfer}/refund", {"amount": "10.00"}, users["b"]["token"], payee=users["a"]["user_id"])
    wait_final(api, operator, commands)

    manifest = {"users": [{"user_id": u["user_id"], "email": u["email"], "token": u["token"]} for u in users.values()],
                "operator_token": operator, "commands": commands}
    with open(args.out, "w", encoding="utf-8") as out:
        json.dump(manifest, out, indent=2)
    print(f"wrote {args.out}: {len(users)} users, {len(commands)} commands")


def wait_final(api, operator, commands):
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    for entry in commands:
        while True:
            status, _, body = call(api, "GET", f"/v1/commands/{entry['command_id']}?user_id={entry['user_id']}", operator)
            if status == 200 and body["status"] in ("settled", "rejected"):
                break
            if time.monotonic() > deadline:
                sys.exit(f"command {entry['command_id']} not final after {SETTLE_TIMEOUT_S} s: {status} {body}")
            time.sleep(0.5)


if __name__ == "__main__":
    main()
