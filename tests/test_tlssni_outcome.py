"""
`gateway.translate.tlssni`: the tls-sni-01 challenge the gateway offers
and judges itself — a fresh 256-bit token and no upstream URL, the outcome
kept in the challenge's columns and read back as the v1 face renders it
(a problem stored without some member reads as Boulder's defaults), and
the checker's retries (after 2 s and 4 s, only while the server shows
another certificate or cannot be reached) on a `task.Clock`.
"""

from __future__ import annotations

import json

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from gateway.keys.jose import b64url_decode
from gateway.store import Challenge
from gateway.translate.tlssni import (
    NO_UPSTREAM,
    TLS_SNI_01,
    ChallengeProblem,
    GatewayCheck,
    check,
    judged_by_gateway,
    of_result,
    offered_challenge,
    outcome,
    stored_outcome,
)
from gateway.validation.tlssni01 import TLSSNI01Result, ValidationRecord, VAProblem


def challenge(**changes):
    fields = dict(id="c1", authorization_id="a1", account_id=1, upstream_url=NO_UPSTREAM,
                  type=TLS_SNI_01, token="t", status="pending")
    fields.update(changes)
    return Challenge(**fields)


RECORD = ValidationRecord("a.test", 443, ("127.0.0.1",), "127.0.0.1")


class ScriptedChecker:
    def __init__(self, *results):
        self.results = list(results)
        self.asked = []

    def check(self, name, key_authorization):
        self.asked.append((name, key_authorization))
        return defer.succeed(self.results.pop(0))


def failed(code):
    return TLSSNI01Result("z.acme.invalid", RECORD, VAProblem(code, f"{code} detail", 403))


VALID = TLSSNI01Result("z.acme.invalid", RECORD)


class TLSSNIValuesTests(SynchronousTestCase):

    def test_an_offered_challenge_has_a_fresh_256_bit_token_and_no_upstream(self):
        first = offered_challenge("c1", "a1", 7)
        second = offered_challenge("c2", "a1", 7)
        self.assertEqual((first.id, first.authorization_id, first.account_id, first.type, first.status),
                         ("c1", "a1", 7, "tls-sni-01", "pending"))
        self.assertEqual(first.upstream_url, "")
        self.assertTrue(judged_by_gateway(first))
        self.assertEqual(len(b64url_decode(first.token)), 32)
        self.assertNotEqual(first.token, second.token)
        self.assertFalse(judged_by_gateway(challenge(upstream_url="https://ca.test/chall/1")))

    def test_no_outcome_before_a_check_or_for_the_cas_challenges(self):
        self.assertIsNone(outcome(challenge()))
        self.assertIsNone(outcome(challenge(upstream_url="https://ca.test/chall/1", error='{"code": "x"}',
                                            validation_record="[]")))

    def test_an_outcome_is_stored_and_read_back(self):
        checked = of_result(failed("unauthorized"))
        self.assertEqual(checked, GatewayCheck(ChallengeProblem("unauthorized", "unauthorized detail", 403),
                                               (RECORD.to_json(),)))
        columns = stored_outcome(checked)
        self.assertEqual(json.loads(columns["error"]),
                         {"code": "unauthorized", "detail": "unauthorized detail", "status": 403})
        self.assertEqual(json.loads(columns["validation_record"]), [RECORD.to_json()])
        self.assertEqual(outcome(challenge(**columns)), checked)

    def test_a_valid_outcome_has_a_record_and_no_problem(self):
        checked = of_result(VALID)
        self.assertIsNone(checked.problem)
        columns = stored_outcome(checked)
        self.assertIsNone(columns["error"])
        self.assertEqual(outcome(challenge(**columns)), GatewayCheck(None, (RECORD.to_json(),)))
        self.assertEqual(outcome(challenge(validation_record="[]")), GatewayCheck(None, ()))
        self.assertEqual(outcome(challenge(error='{"code": "tls"}')),
                         GatewayCheck(ChallengeProblem("tls", "", 500), ()))

    def test_a_stored_problem_without_members_reads_as_boulders_defaults(self):
        self.assertEqual(ChallengeProblem.from_json({}), ChallengeProblem("serverInternal", "", 500))
        self.assertEqual(ChallengeProblem.from_json({"code": "dns", "detail": "no A", "status": "400"}),
                         ChallengeProblem("dns", "no A", 400))
        self.assertEqual(ChallengeProblem("tls", "bad").status, 400)


class CheckRetryTests(SynchronousTestCase):

    def run_check(self, checker, clock):
        return defer.ensureDeferred(check(checker, clock, "a.test", "token.thumb"))

    def test_another_certificate_is_tried_again_after_two_and_four_seconds(self):
        clock = Clock()
        checker = ScriptedChecker(failed("unauthorized"), failed("connection"), failed("unauthorized"))
        result = self.run_check(checker, clock)
        self.assertEqual(len(checker.asked), 1)
        clock.advance(1.9)
        self.assertEqual(len(checker.asked), 1)
        clock.advance(0.1)
        self.assertEqual(len(checker.asked), 2)
        clock.advance(3.9)
        self.assertEqual(len(checker.asked), 2)
        self.assertNoResult(result)
        clock.advance(0.1)
        self.assertEqual(len(checker.asked), 3)
        self.assertEqual(self.successResultOf(result).problem.code, "unauthorized")
        self.assertEqual(checker.asked, [("a.test", "token.thumb")] * 3)

    def test_a_right_answer_at_a_retry_ends_the_tries(self):
        clock = Clock()
        checker = ScriptedChecker(failed("connection"), VALID)
        result = self.run_check(checker, clock)
        clock.advance(2)
        self.assertIsNone(self.successResultOf(result).problem)
        self.assertEqual(len(checker.asked), 2)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_other_problems_and_a_valid_answer_are_not_tried_again(self):
        for first in (VALID, failed("tls"), failed("dns")):
            clock = Clock()
            checker = ScriptedChecker(first)
            result = self.run_check(checker, clock)
            self.assertEqual(self.successResultOf(result), of_result(first))
            self.assertEqual(clock.getDelayedCalls(), [])
