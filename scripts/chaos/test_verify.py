"""Unit tests of verify.py's checks, on synthetic decoded records (no broker, no API).

    python -m unittest discover -s scripts/chaos -p 'test_*.py'
"""

import json
import os
import tempfile
import unittest
from decimal import Decimal

from verify import (Activity, Command, Outcome, VerifierError, check_balances, check_outcomes, check_statuses,
                    compute_balances, load_manifest, user_id_for_email)

A, B, C = "u_aaaaaaaaaaaaaaaaaaaa", "u_bbbbbbbbbbbbbbbbbbbb", "u_cccccccccccccccccccc"
NOBODY = user_id_for_email("nobody@example.com")


def settled(cid, kind, payer, amount, payee=None, offset=0):
    return Outcome(f"payments.settled/0@{offset}", "settled", cid, kind, payer, payee, Decimal(amount), None)


def rejected(cid, kind, payer, amount, reason, offset=0):
    return Outcome(f"payments.rejected/0@{offset}", "rejected", cid, kind, payer, None, Decimal(amount), reason)


def activity(cid, command_type, outcome, reason=None, offset=0):
    return Activity(f"system.logs.activity/0@{offset}", cid, command_type, outcome, reason)


# A settled scenario: deposits to A and B, A -> B settled, B -> nobody reversed, B refunds 10
# of A -> B, C -> A refused for funds, A withdraws 5.
COMMANDS = [
    Command("d-a", "deposit", A, Decimal("250.00"), None),
    Command("d-b", "deposit", B, Decimal("100.00"), None),
    Command("t-ab", "transfer", A, Decimal("40.00"), B),
    Command("t-bx", "transfer", B, Decimal("15.00"), NOBODY),
    Command("r-ba", "refund", B, Decimal("10.00"), A),
    Command("t-ca", "transfer", C, Decimal("50.00"), A),
    Command("w-a", "withdrawal", A, Decimal("5.00"), None),
    Command("p-a", "profile", A, None, None),
]
OUTCOMES = [
    settled("d-a", "DEPOSIT", A, "250.00"),
    settled("d-b", "DEPOSIT", B, "100.00"),
    settled("t-ab", "TRANSFER", A, "40.00", payee=B),
    rejected("t-bx", "TRANSFER", B, "15.00", "payee_unknown"),
    settled("r-ba", "REFUND", B, "10.00", payee=A),
    rejected("t-ca", "TRANSFER", C, "50.00", "insufficient_funds"),
    settled("w-a", "WITHDRAWAL", A, "5.00"),
]
ACTIVITIES = [
    activity("d-a", "Deposit", "settled"),
    activity("d-b", "Deposit", "settled"),
    activity("t-ab", "Transfer", "settled"),
    activity("t-bx", "Transfer", "rejected", "payee_unknown"),
    activity("r-ba", "Refund", "settled"),
    activity("t-ca", "Transfer", "rejected", "insufficient_funds"),
    activity("w-a", "Withdrawal", "settled"),
    activity("p-a", "UpdateProfile", "settled"),
    activity("not-listed", "RegisterUser", "settled"),  # audit records of unlisted commands are ignored
]
BALANCES = {A: Decimal("215.00"), B: Decimal("130.00"), C: Decimal("0.00")}


class OutcomeTests(unittest.TestCase):
    def test_a_consistent_run_has_one_final_outcome_per_command(self):
        final, violations = check_outcomes(COMMANDS, OUTCOMES, ACTIVITIES)
        self.assertEqual(violations, [])
        self.assertEqual(final["t-ab"], ("settled", None))
        self.assertEqual(final["t-bx"], ("rejected", "payee_unknown"))
        self.assertEqual(final["p-a"], ("settled", None))
        self.assertEqual(len(final), len(COMMANDS))

    def check(self, outcomes=OUTCOMES, activities=ACTIVITIES):
        return check_outcomes(COMMANDS, outcomes, activities)

    def test_a_command_without_outcome(self):
        final, violations = self.check(outcomes=[o for o in OUTCOMES if o.command_id != "t-ab"])
        self.assertNotIn("t-ab", final)
        self.assertEqual(len(violations), 1)
        self.assertTrue(violations[0].startswith("no-outcome command=t-ab "), violations)

    def test_a_non_payment_command_without_audit_record(self):
        final, violations = self.check(activities=[a for a in ACTIVITIES if a.command_id != "p-a"])
        self.assertNotIn("p-a", final)
        self.assertTrue(violations[0].startswith("no-outcome command=p-a "), violations)

    def test_a_repeated_outcome_record_is_a_violation(self):
        repeat = settled("d-a", "DEPOSIT", A, "250.00", offset=9)
        final, violations = self.check(outcomes=OUTCOMES + [repeat])
        self.assertNotIn("d-a", final)
        self.assertEqual(len(violations), 1)
        self.assertIn("duplicate-outcome command=d-a", violations[0])
        self.assertIn("payments.settled/0@9", violations[0])

    def test_settled_and_rejected_is_two_outcomes(self):
        final, violations = self.check(outcomes=OUTCOMES + [rejected("t-ab", "TRANSFER", A, "40.00", "payee_unknown")])
        self.assertNotIn("t-ab", final)
        self.assertIn("duplicate-outcome command=t-ab", violations[0])

    def test_a_repeated_audit_record_is_a_violation(self):
        _, violations = self.check(activities=ACTIVITIES + [activity("w-a", "Withdrawal", "settled", offset=7)])
        self.assertEqual(len(violations), 1)
        self.assertIn("duplicate-activity command=w-a", violations[0])

    def test_outcomes_of_unlisted_commands(self):
        _, violations = self.check(outcomes=OUTCOMES + [settled("ghost", "TRANSFER", A, "1.00", payee=B)])
        self.assertEqual(len(violations), 1)
        self.assertIn("unlisted-outcome command=ghost", violations[0])

    def test_an_outcome_that_contradicts_the_manifest(self):
        wrong = [settled("t-ab", "REFUND", C, "41.00", payee=C) if o.command_id == "t-ab" else o for o in OUTCOMES]
        _, violations = self.check(outcomes=wrong)
        text = "\n".join(violations)
        for needle in ("kind REFUND, manifest TRANSFER", f"payer {C}, manifest {A}", "amount 41.00, manifest 40.00", f"payee {C}, manifest {B}"):
            self.assertIn(needle, text)
        self.assertTrue(all("command=t-ab" in v for v in violations), violations)

    def test_an_audit_record_that_disagrees(self):
        wrong = [activity("t-bx", "Transfer", "settled") if a.command_id == "t-bx" else a for a in ACTIVITIES]
        _, violations = self.check(activities=wrong)
        self.assertEqual(len(violations), 1)
        self.assertIn("activity-mismatch command=t-bx", violations[0])

    def test_a_payment_without_audit_record(self):
        _, violations = self.check(activities=[a for a in ACTIVITIES if a.command_id != "d-b"])
        self.assertEqual(len(violations), 1)
        self.assertIn("no-activity command=d-b", violations[0])


class StatusTests(unittest.TestCase):
    def test_the_api_must_serve_the_final_outcome(self):
        final, _ = check_outcomes(COMMANDS, OUTCOMES, ACTIVITIES)
        served = dict(final)
        self.assertEqual(check_statuses(COMMANDS, final, served), [])
        served["t-ab"] = ("pending", None)
        served["t-bx"] = ("rejected", "account_frozen")
        served["d-a"] = "HTTP 404 command-not-found"
        violations = check_statuses(COMMANDS, final, served)
        self.assertEqual(len(violations), 3)
        self.assertIn("status-missing command=d-a", violations[0])
        self.assertIn("status-mismatch command=t-ab: API says pending (None), topics say settled (None)", violations[1])
        self.assertIn("status-mismatch command=t-bx", violations[2])


class BalanceTests(unittest.TestCase):
    def test_balances_follow_settled_records_only(self):
        computed, deposited, withdrawn = compute_balances(OUTCOMES)
        self.assertEqual(computed, {A: Decimal("215.00"), B: Decimal("130.00")})
        self.assertEqual((deposited, withdrawn), (Decimal("350.00"), Decimal("5.00")))
        self.assertEqual(check_balances([A, B, C], BALANCES, computed, deposited, withdrawn), [])

    def test_a_repeated_record_moves_money_once(self):
        computed, deposited, _ = compute_balances(OUTCOMES + [settled("d-a", "DEPOSIT", A, "250.00", offset=9)])
        self.assertEqual((computed[A], deposited), (Decimal("215.00"), Decimal("350.00")))

    def test_an_api_balance_that_differs(self):
        computed, deposited, withdrawn = compute_balances(OUTCOMES)
        # B was debited for the reversed transfer but never credited back: money destroyed.
        served = dict(BALANCES, **{B: Decimal("115.00")})
        violations = check_balances([A, B, C], served, computed, deposited, withdrawn)
        self.assertEqual(len(violations), 2)
        self.assertIn(f"balance-mismatch user={B}: API serves 115.00, settled records imply 130.00", violations[0])
        self.assertIn("money-not-conserved: balances sum to 330.00", violations[1])

    def test_negative_balances(self):
        outcomes = [settled("t", "TRANSFER", C, "1.00", payee=A)]
        computed, deposited, withdrawn = compute_balances(outcomes)
        served = {A: Decimal("1.00"), C: Decimal("-1.00")}
        violations = check_balances([A, C], served, computed, deposited, withdrawn)
        self.assertEqual(sum("negative-balance user=" + C in v for v in violations), 2, violations)
        self.assertFalse(any("money-not-conserved" in v for v in violations), violations)

    def test_money_to_an_unlisted_user_and_unreadable_balances(self):
        computed, deposited, withdrawn = compute_balances(OUTCOMES)
        served = {A: BALANCES[A], C: "HTTP 401 token-expired"}
        violations = check_balances([A, C], served, computed, deposited, withdrawn)
        self.assertIn(f"unlisted-account user={B}", violations[0])
        self.assertIn(f"balance-missing user={C}", violations[1])
        self.assertEqual(len(violations), 2, "no conservation verdict without every balance")

    def test_amounts_are_exact(self):
        outcomes = [settled(f"d{i}", "DEPOSIT", A, "0.10") for i in range(10)] + [settled("w", "WITHDRAWAL", A, "1.00")]
        computed, deposited, withdrawn = compute_balances(outcomes)
        self.assertEqual(computed[A], Decimal(0))
        self.assertEqual(check_balances([A], {A: Decimal("0.00")}, computed, deposited, withdrawn), [])


class ManifestTests(unittest.TestCase):
    def write(self, manifest):
        handle, path = tempfile.mkstemp(suffix=".json")
        with os.fdopen(handle, "w") as file:
            file.write(manifest if isinstance(manifest, str) else json.dumps(manifest))
        self.addCleanup(os.remove, path)
        return path

    def test_user_ids_are_derived_as_sluice_does(self):
        # `sluice user-id alice@example.com`
        self.assertEqual(user_id_for_email(" Alice@Example.com"), "u_ff8d9819fc0e12bf0d24")

    def test_payee_emails_become_user_ids_and_amounts_stay_exact(self):
        path = self.write('{"users": [{"user_id": "%s", "email": "a@x.io", "token": "t"}], "operator_token": "o",'
                          ' "commands": [{"command_id": "c1", "kind": "Transfer", "user_id": "%s", "amount": 0.10,'
                          ' "payee": "alice@example.com", "idempotency_key": null, "attempts": 1}]}' % (A, A))
        users, operator, commands = load_manifest(path)
        self.assertEqual((users, operator), ({A: "t"}, "o"))
        self.assertEqual(commands, [Command("c1", "transfer", A, Decimal("0.10"), "u_ff8d9819fc0e12bf0d24")])

    def test_bad_manifests_are_errors(self):
        command = {"command_id": "c1", "kind": "deposit", "user_id": A, "amount": "1.00"}
        for manifest in ({"users": [], "operator_token": "o", "commands": [command, command]},
                         {"users": [], "operator_token": "o", "commands": [dict(command, amount=None)]},
                         {"users": [], "commands": []},
                         "not json"):
            with self.assertRaises(VerifierError):
                load_manifest(self.write(manifest))


if __name__ == "__main__":
    unittest.main()
