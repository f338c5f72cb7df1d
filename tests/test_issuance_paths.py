"""
`gateway.translate.issuance` paths the suite did not run (issue 21): one
account certifying the same names twice through one gateway (the per-order
lock is released), the fast path (finalize at once, no order read), its
fallback when the CA says ``orderNotReady``, ``malformed`` or 404, a stored
order the CA no longer knows, and a refusal that is passed on untouched.
Through a whole in-memory gateway and the FakeCA.
"""

from __future__ import annotations

import re

from cryptography import x509
from twisted.logger import formatEvent, globalLogPublisher

from gateway.keys.jose import b64url
from gateway.store import Authorization, Insert, Order, Update
from tests.test_v1_face import NAME, FaceTestCase, make_csr


class IssuanceLog:
    """The issuance flow's log lines, formatted, while in a ``with``."""

    def __enter__(self):
        self.events = []
        globalLogPublisher.addObserver(self.events.append)
        return self

    def __exit__(self, *exc_info):
        globalLogPublisher.removeObserver(self.events.append)

    @property
    def lines(self):
        return [formatEvent(e) for e in self.events
                if e.get("log_namespace") == "gateway.translate.issuance"]

    def matching(self, pattern):
        return [line for line in self.lines if re.fullmatch(pattern, line)]


class IssuancePathTests(FaceTestCase):

    def new_cert(self, names=(NAME,)):
        return self.post("/acme/new-cert", {"resource": "new-cert", "csr": b64url(make_csr(list(names)))})

    def test_one_account_certifies_the_same_names_twice(self):
        """
        The second new-cert for the same names takes the same per-order
        lock: it must have been released by the first.
        """
        self.register()
        first = self.issue()
        second = self.issue()
        self.assertEqual((first.status, second.status), (201, 201))
        self.assertNotEqual(first.body, second.body)
        self.assertNotEqual(first.header("location"), second.header("location"))
        self.assertEqual(self.ca.counts["finalize"], 2)
        third = self.new_cert()
        self.assertEqual(third.status, 201, third.body)

    def test_the_same_names_after_a_refusal(self):
        """A refused new-cert releases the lock as well."""
        self.register()
        self.authorize()
        self.ca.fail_next("/finalize/", 400, {"type": "badCSR", "detail": "key too weak"})
        self.assertProblem(self.new_cert(), 400, "malformed", "key too weak")
        self.assertEqual(self.new_cert().status, 201)

    def test_the_fast_path_finalizes_without_reading_the_order(self):
        self.register()
        self.authorize()
        reads = self.ca.counts["order"]
        reply = self.new_cert()
        self.assertEqual(reply.status, 201, reply.body)
        self.assertEqual(self.ca.counts["order"], reads, "the validated order is finalized at once")
        self.assertEqual(self.ca.counts["finalize"], 1)
        self.assertEqual(self.ca.counts["newOrder"], 1)

    def test_a_ready_order_for_several_names_is_finalized_without_reading_its_authorizations(self):
        """
        Three names, each validated through its own new-authz: the CA
        answers the 3-name order ``ready`` (it reused the three valid
        authorizations), so new-cert finalizes it without reading them
        again — reads a native client does not make (issue 15) — and the
        stored authorizations now belong to the finalized order.
        """
        names = ("a.example.test", "b.example.test", "c.example.test")
        self.register()
        for name in names:
            self.authorize(name)
        reads, orders = self.ca.counts["authorization"], self.ca.counts["newOrder"]
        reply = self.new_cert(names)
        self.assertEqual(reply.status, 201, reply.body)
        self.assertEqual(self.ca.counts["newOrder"], orders + 1)
        self.assertEqual(self.ca.counts["authorization"], reads, "no authorization read at new-cert")
        self.assertEqual(self.ca.counts["finalize"], 1)
        account = self.successResultOf(self.gateway.store.account_by_thumbprint(self.keys[0].thumbprint))
        (order,) = self.successResultOf(self.gateway.store.find_orders(account.id, names, ("valid",)))
        stored = self.successResultOf(self.gateway.store.authorizations_for_order(order.id))
        self.assertEqual(sorted((a.identifier, a.status) for a in stored),
                         [(name, "valid") for name in names])

    def test_a_ready_order_with_an_authorization_the_gateway_never_stored_reads_it(self):
        """
        A ``ready`` order whose authorization the store does not hold (the
        CA reused one the gateway never saw) is read from the CA: the
        gateway stores only what it knows.
        """
        names = ("a.example.test", "b.example.test")
        self.register()
        for name in names:
            self.authorize(name)
        account = self.successResultOf(self.gateway.store.account_by_thumbprint(self.keys[0].thumbprint))
        (forgotten,) = self.successResultOf(self.gateway.store.find_authorizations(
            account.id, "b.example.test", False, ("valid",)))
        self.successResultOf(self.gateway.store.write([
            Update(Authorization, forgotten.id, {"upstream_url": forgotten.upstream_url + "-elsewhere"})]))
        reads = self.ca.counts["authorization"]
        reply = self.new_cert(names)
        self.assertEqual(reply.status, 201, reply.body)
        self.assertEqual(self.ca.counts["authorization"], reads + 1)

    def test_the_careful_path_when_the_ca_says_the_order_is_not_ready(self):
        for status, problem in [(403, {"type": "orderNotReady", "detail": "order is pending"}),
                                (400, {"type": "malformed", "detail": "no such order"}),
                                (404, {"type": "malformed", "detail": "gone"}),
                                (404, {"type": "serverInternal", "detail": "not found"})]:
            with self.subTest(status=status, problem=problem):
                self.setUp()
                self.register()
                self.authorize()
                reads = self.ca.counts["order"]
                self.ca.fail_next("/finalize/", status, problem)
                reply = self.new_cert()
                self.assertEqual(reply.status, 201, reply.body)
                self.assertEqual(self.ca.counts["finalize"], 2)
                self.assertGreater(self.ca.counts["order"], reads, "the order was read again")
                self.assertEqual(self.ca.counts["newOrder"], 1)

    def test_the_careful_path_reads_only_usable_orders(self):
        """
        After the CA refused the fast path's finalize, the careful path
        reads the account's orders for the names again, in the statuses it
        can use: a stored ``invalid`` order for the same name is not read
        from the CA (the CA's order reads are those of a run without it).
        """
        reads = []
        for with_invalid in (False, True):
            self.setUp()
            self.register()
            self.authorize()
            if with_invalid:
                account = self.successResultOf(
                    self.gateway.store.account_by_thumbprint(self.keys[0].thumbprint))
                self.successResultOf(self.gateway.store.write([Insert(Order(
                    id="invalid-order", account_id=account.id,
                    upstream_url=self.ca.url("/order/invalid-order"),
                    identifiers=[NAME], status="invalid",
                    finalize_url=self.ca.url("/finalize/invalid-order"),
                    expires=None, certificate_url=None,
                    created_at=self.gateway.context.now()))]))
            before = self.ca.counts["order"]
            self.ca.fail_next("/finalize/", 403, {"type": "orderNotReady", "detail": "pending"})
            reply = self.new_cert()
            self.assertEqual(reply.status, 201, reply.body)
            reads.append(self.ca.counts["order"] - before)
        self.assertEqual(reads[0], reads[1])
        self.assertGreater(reads[0], 0)

    def test_other_refusals_of_the_fast_path_reach_the_client(self):
        self.register()
        self.authorize()
        reads = self.ca.counts["order"]
        self.ca.fail_next("/finalize/", 403, {"type": "unauthorized", "detail": "policy forbids"})
        self.assertProblem(self.new_cert(), 403, "unauthorized", "policy forbids")
        self.assertEqual(self.ca.counts["finalize"], 1)
        self.assertEqual(self.ca.counts["order"], reads)

    def test_a_stored_order_the_ca_no_longer_knows_is_replaced(self):
        """
        Finalize and the order read both answer 404: the stored order is
        marked invalid and a new one is made (the CA reuses the valid
        authorization), then finalized.
        """
        self.register()
        self.authorize()
        self.ca.fail_next("/finalize/", 404, {"type": "malformed", "detail": "no such order"})
        self.ca.fail_next("/order/", 404, {"type": "malformed", "detail": "no such order"})
        reply = self.new_cert()
        self.assertEqual(reply.status, 201, reply.body)
        self.assertEqual(self.ca.counts["newOrder"], 2)
        account = self.successResultOf(self.gateway.store.account_by_thumbprint(self.keys[0].thumbprint))
        orders = self.successResultOf(self.gateway.store.find_orders(account.id, (NAME,), ("invalid",)))
        self.assertEqual(len(orders), 1, "the order the CA forgot is kept as invalid")

    def test_a_failing_order_read_other_than_404_reaches_the_client(self):
        self.register()
        self.authorize()
        self.ca.fail_next("/finalize/", 404, {"type": "malformed", "detail": "no such order"})
        self.ca.fail_next("/order/", 403, {"type": "unauthorized", "detail": "not your order"})
        reply = self.new_cert()
        self.assertProblem(reply, 403, "unauthorized", "not your order")
        self.assertEqual(self.ca.counts["newOrder"], 1)

    def test_a_name_the_ca_wants_validated_again_is_refused_naming_it(self):
        """
        Two names authorized one by one; the CA then drops one of the
        authorizations (deactivated), so the order for both names comes
        with a new pending one: without a means to validate, the client is
        told which name and how to let the gateway revalidate it.
        """
        other = "other.example.test"
        self.register()
        self.authorize(NAME)
        self.authorize(other)
        dropped = next(a for a in self.ca.authorizations.values() if a.identifier == other)
        dropped.status = "deactivated"
        reply = self.new_cert((NAME, other))
        problem = self.assertProblem(reply, 403, "unauthorized")
        self.assertTrue(problem["detail"].startswith(
            "Error creating new cert :: authorizations for these names not found or expired: "
            f"{other}. The upstream CA requires them to be validated again; start the gateway with "),
            problem["detail"])
        self.assertTrue(problem["detail"].endswith(" to let it revalidate them."), problem["detail"])
        self.assertEqual(self.ca.counts["finalize"], 0)


class IssuanceLogTests(FaceTestCase):
    """What the flow logs: each order created, each certificate and its cost."""

    def test_one_name_costs_one_order(self):
        self.register()
        self.authorize()
        with IssuanceLog() as log:
            reply = self.post("/acme/new-cert", {"resource": "new-cert", "csr": b64url(make_csr([NAME]))})
        self.assertEqual(reply.status, 201, reply.body)
        certificate = reply.header("location").rstrip("/").rsplit("/", 1)[1]
        serial = format(x509.load_der_x509_certificate(reply.body).serial_number, "x")
        self.assertEqual(log.matching(r"issued certificate (\S+) serial (\S+)"),
                         [f"issued certificate {certificate} serial {serial}"])
        self.assertEqual(log.matching(r"certificate .* cost .*"),
                         [f"certificate {certificate} for ['{NAME}'] cost 1 upstream order(s)"])
        self.assertEqual(log.matching(r"new-cert: created order .*"), [], "the new-authz order is finalized")

    def test_two_names_whose_authorizations_the_order_takes_over_cost_one_order(self):
        """
        The CA reuses the single-name authorizations in the order for both
        names, which takes them over: the certificate cost that order.
        """
        names = ("a.example.test", "b.example.test")
        self.register()
        for name in names:
            self.authorize(name)
        with IssuanceLog() as log:
            reply = self.post("/acme/new-cert", {"resource": "new-cert", "csr": b64url(make_csr(list(names)))})
        self.assertEqual(reply.status, 201, reply.body)
        created = log.matching(r"new-cert: created order (\S+) for \('a.example.test', 'b.example.test'\)")
        self.assertEqual(len(created), 1, log.lines)
        self.assertEqual(len(log.matching(r"certificate \S+ for \['a.example.test', 'b.example.test'\] "
                                          r"cost 1 upstream order\(s\)")), 1, log.lines)

    def test_the_fast_path_fallback_is_logged(self):
        self.register()
        self.authorize()
        self.ca.fail_next("/finalize/", 403, {"type": "orderNotReady", "detail": "order is pending"})
        with IssuanceLog() as log:
            reply = self.post("/acme/new-cert", {"resource": "new-cert", "csr": b64url(make_csr([NAME]))})
        self.assertEqual(reply.status, 201, reply.body)
        self.assertEqual(len(log.matching(
            r"new-cert: order \S+ was not ready upstream \(orderNotReady\); re-reading it")), 1, log.lines)


class RevalidationTests(FaceTestCase):
    """
    new-cert for two names whose order comes with fresh pending
    authorizations (the CA reuses none), with the gateway's own HTTP-01
    responder: the gateway validates them itself, records the outcome of
    each, counts it, and finalizes — or refuses when the CA finds them
    invalid.
    """

    NAMES = ("one.example.test", "two.example.test")

    def setUp(self):
        from gateway.process.testing import build_test_gateway
        from gateway.translate.revalidation import Validators
        from gateway.validation.http01 import HTTP01Responder

        super().setUp()
        self.gateway = build_test_gateway(self.keys, validators=Validators({"http-01": HTTP01Responder()}))
        self.ca = self.gateway.ca
        self.base = self.gateway.base_url
        self.clients = {}
        self.ca.reuse_authorizations = False
        self.register()
        for name in self.NAMES:
            self.authorize(name)

    def new_cert(self):
        return self.post("/acme/new-cert", {"resource": "new-cert", "csr": b64url(make_csr(list(self.NAMES)))})

    def stored_for_last_order(self):
        account = self.successResultOf(self.gateway.store.account_by_thumbprint(self.keys[0].thumbprint))
        (order,) = self.successResultOf(self.gateway.store.find_orders(
            account.id, self.NAMES, ("pending", "ready", "processing", "valid", "invalid")))
        return order, self.successResultOf(self.gateway.store.authorizations_for_order(order.id))

    def test_the_gateway_revalidates_and_records_the_outcome(self):
        with IssuanceLog() as log:
            reply = self.new_cert()
        self.assertEqual(len(log.matching(
            r"new-cert: revalidating \['one.example.test', 'two.example.test'\] for order \S+")), 1,
            log.lines)
        self.assertEqual(reply.status, 201, reply.body)
        self.assertEqual(self.gateway.context.revalidations.counts, {"valid": 2})
        order, stored = self.stored_for_last_order()
        self.assertEqual(order.status, "valid")
        self.assertEqual(sorted((a.identifier, a.status) for a in stored),
                         [(name, "valid") for name in self.NAMES])
        self.assertEqual(self.ca.counts["finalize"], 1)

    def test_names_the_ca_finds_invalid_are_refused_counted_and_recorded(self):
        self.ca.validator = lambda authorization, challenge, key_authorization: False
        reply = self.new_cert()
        self.assertEqual(reply.status // 100, 4, reply.body)
        self.assertEqual(self.gateway.context.revalidations.counts, {"invalid": 2})
        order, stored = self.stored_for_last_order()
        self.assertEqual(sorted((a.identifier, a.status) for a in stored),
                         [(name, "invalid") for name in self.NAMES])
        self.assertEqual(self.ca.counts["finalize"], 0)

    def test_a_pending_order_left_by_a_failed_attempt_is_completed_by_the_next(self):
        """
        The CA fails the first revalidation (its challenge endpoint answers
        500): the order stays pending.  The retry
        reads the stored order's authorizations from the CA, revalidates
        and finalizes that same order.
        """
        self.ca.fail_next("/chall/", 500, {"type": "serverInternal", "detail": "busy"})
        first = self.new_cert()
        self.assertEqual(first.status // 100, 5, first.body)
        order, _ = self.stored_for_last_order()
        self.assertEqual(order.status, "pending")
        orders = self.ca.counts["newOrder"]
        second = self.new_cert()
        self.assertEqual(second.status, 201, second.body)
        self.assertEqual(self.ca.counts["newOrder"], orders, "the pending order is the one finalized")
        order, stored = self.stored_for_last_order()
        self.assertEqual(order.status, "valid")
        self.assertEqual(sorted((a.identifier, a.status) for a in stored),
                         [(name, "valid") for name in self.NAMES])
