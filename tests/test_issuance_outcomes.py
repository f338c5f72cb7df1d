"""
`gateway.translate.issuance` outcomes the other issuance tests leave out
(issue 21), through a whole in-memory gateway over the FakeCA: a new order
whose authorizations the CA drops while the gateway reads them (the order
is refused naming the names and their states, and dropped), the upstream
order cost each certificate is logged with, an orphan's log lines, and an
authorization the CA does not answer for after revalidation.
"""

from __future__ import annotations

import json

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from twisted.internet import defer

from gateway.keys.jose import b64url
from gateway.store.leaf import leaf_facts, serial_der_bytes
from gateway.translate.issuance import store_chain
from gateway.translate.profiles import ProfilePolicy, ProfileRule
from gateway.upstream.messages import CertificateChain
from tests.test_issuance_paths import IssuanceLog
from tests.test_renewals import RenewalTestCase
from tests.test_v1_face import NAME, FaceTestCase, make_csr

A, B = "a.example.test", "b.example.test"


class DroppedAuthorizationTests(FaceTestCase):
    """
    Both names were authorized one by one; the CA reuses no authorization,
    so the order for both comes with new pending ones — which the CA
    drops (deactivated, invalid) before the gateway has read them.
    """

    def setUp(self):
        super().setUp()
        self.register()
        self.authorize(A)
        self.authorize(B)
        self.ca.reuse_authorizations = False

    def account_id(self):
        return self.successResultOf(self.gateway.store.account_by_thumbprint(self.keys[0].thumbprint)).id

    def new_cert_while_the_ca_drops(self, statuses):
        """new-cert for A and B; the CA gives its new order's authorizations ``statuses``."""
        self.ca.hold_next("/authz/")
        sent = defer.Deferred.fromCoroutine(self.client().post(
            self.url("/acme/new-cert"), {"resource": "new-cert", "csr": b64url(make_csr([A, B]))}))
        self.assertNoResult(sent)
        order = self.ca.orders[-1]
        self.assertEqual(order.names, [A, B])
        for authorization, status in zip(order.authorizations, statuses):
            authorization.status = status
        self.assertEqual(self.ca.release_held(), 1)
        self.gateway.flush()
        return self.successResultOf(sent)

    def test_the_dropped_names_are_refused_with_their_states_and_the_order_is_dropped(self):
        reply = self.new_cert_while_the_ca_drops(["invalid", "deactivated"])
        problem = self.assertProblem(reply, 403, "unauthorized")
        self.assertEqual(problem["detail"],
                         "Error creating new cert :: authorizations for these names are not valid "
                         f"(deactivated, invalid): {A}, {B}; request them again")
        self.assertEqual(self.ca.counts["finalize"], 0)
        (dropped,) = self.successResultOf(self.gateway.store.find_orders(self.account_id(), (A, B), ("invalid",)))
        self.assertEqual(dropped.upstream_url, self.ca.orders[-1].url)
        self.assertEqual(self.successResultOf(self.gateway.store.find_orders(
            self.account_id(), (A, B), ("pending", "ready", "processing", "valid"))), [])

    def test_only_the_dropped_name_is_named(self):
        reply = self.new_cert_while_the_ca_drops(["pending", "expired"])
        problem = self.assertProblem(reply, 403, "unauthorized")
        self.assertEqual(problem["detail"],
                         "Error creating new cert :: authorizations for these names are not valid "
                         f"(expired): {B}; request them again")

    def test_the_retry_gets_a_fresh_order(self):
        self.new_cert_while_the_ca_drops(["deactivated", "valid"])
        self.ca.reuse_authorizations = True
        orders, reads = self.ca.counts["newOrder"], self.ca.counts["order"]
        reply = self.post("/acme/new-cert", {"resource": "new-cert", "csr": b64url(make_csr([A, B]))})
        # The CA still holds the valid single-name authorizations: the new
        # order reuses them and is finalized.
        self.assertEqual(reply.status, 201, reply.body)
        self.assertEqual(self.ca.counts["newOrder"], orders + 1)
        self.assertEqual(self.ca.counts["order"], reads, "the dropped order is not read again")


class OrderCostTests(FaceTestCase):
    """
    The upstream orders each certificate is logged as costing: the order
    finalized, plus the orders whose valid authorizations proved the names
    it did not hold itself.
    """

    def new_cert(self, names):
        with IssuanceLog() as log:
            reply = self.post("/acme/new-cert", {"resource": "new-cert", "csr": b64url(make_csr(list(names)))})
        self.assertEqual(reply.status, 201, reply.body)
        certificate = reply.header("location").rstrip("/").rsplit("/", 1)[1]
        return certificate, log

    def test_a_name_proved_by_another_orders_authorization_costs_that_order_too(self):
        """
        A and B authorized one by one (an order each), then certified
        together: the order for both takes their authorizations over (one
        order).  A certified alone next finalizes A's own order at once,
        whose authorization now belongs to the order for both: two orders.
        """
        self.register()
        self.authorize(A)
        self.authorize(B)
        both, log = self.new_cert((A, B))
        self.assertEqual(log.matching(r"certificate .* cost .*"),
                         [f"certificate {both} for ['{A}', '{B}'] cost 1 upstream order(s)"])
        finalized, order_reads = self.ca.counts["finalize"], self.ca.counts["order"]
        alone, log = self.new_cert((A,))
        self.assertEqual(self.ca.counts["finalize"], finalized + 1)
        self.assertEqual(self.ca.counts["order"], order_reads,
                         "A's order is known ready by its authorization's URL: finalized at once")
        self.assertEqual(log.matching(r"new-cert: created order .*"), [], "A's own order was finalized")
        self.assertEqual(log.matching(r"certificate .* cost .*"),
                         [f"certificate {alone} for ['{A}'] cost 2 upstream order(s)"])


class OrphanLogTests(FaceTestCase):
    """
    The download of a certificate fails after its order went valid; the
    client's retry, with a new key, finds the old certificate on that
    order: it is stored as an orphan and logged as one, and the retry is
    ordered anew.
    """

    def test_the_orphan_and_the_new_certificate_are_logged(self):
        self.register()
        self.authorize()
        self.gateway.upstream.read_retries = 0
        self.ca.fail_next("/cert/", 500, {"type": "serverInternal"})
        first = self.post("/acme/new-cert", {"resource": "new-cert", "csr": b64url(make_csr(["www.example.test"]))})
        self.assertProblem(first, 500, "serverInternal")
        with IssuanceLog() as log:
            reply = self.post("/acme/new-cert", {
                "resource": "new-cert",
                "csr": b64url(make_csr(["www.example.test"], key=ec.generate_private_key(ec.SECP256R1())))})
        self.assertEqual(reply.status, 201, reply.body)
        (orphan,) = self.successResultOf(self.gateway.store.orphaned_certificates())
        delivered = reply.header("location").rstrip("/").rsplit("/", 1)[1]
        delivered_serial = self.successResultOf(self.gateway.store.certificate_by_id(delivered)).serial
        self.assertEqual(log.matching(r"issued certificate .*"), [
            f"issued certificate {orphan.id} serial {orphan.serial} (orphan)",
            f"issued certificate {delivered} serial {delivered_serial}",
        ])
        self.assertEqual(log.matching(r"new-cert: order .* holds .*"), [
            f"new-cert: order {orphan.order_id} holds a certificate for another key (an earlier attempt "
            f"whose answer was lost); kept as orphan {orphan.id}, never handed out; ordering anew"])
        ordered_anew = self.successResultOf(self.gateway.store.certificate_by_id(delivered)).order_id
        self.assertNotEqual(ordered_anew, orphan.order_id)
        self.assertEqual(log.matching(r"new-cert: created order .*"),
                         [f"new-cert: created order {ordered_anew} for ('www.example.test',)"])


class StoredOrderTests(FaceTestCase):
    """The stored order follows the CA's view of it, and only a usable one is finalized."""

    def account_id(self):
        return self.successResultOf(self.gateway.store.account_by_thumbprint(self.keys[0].thumbprint)).id

    def test_an_order_the_ca_made_ready_is_stored_as_ready_before_finalize(self):
        """
        The CA decides the challenge only at its next read: the stored
        authorization is still pending at new-cert, so the order is read
        from the CA (now ready) and stored so, even when finalize is then
        refused.
        """
        self.ca.validate_immediately = False
        self.register()
        self.authorize()
        (order,) = self.successResultOf(self.gateway.store.find_orders(self.account_id(), (NAME,)))
        self.assertEqual(order.status, "pending")
        self.ca.fail_next("/finalize/", 400, {"type": "badCSR", "detail": "key too weak"})
        reply = self.post("/acme/new-cert", {"resource": "new-cert", "csr": b64url(make_csr([NAME]))})
        self.assertProblem(reply, 400, "malformed", "key too weak")
        (order,) = self.successResultOf(self.gateway.store.find_orders(self.account_id(), (NAME,)))
        self.assertEqual(order.status, "ready")

    def test_a_valid_order_without_a_certificate_is_not_reused(self):
        """
        The CA shows the new-authz order valid, with no certificate to
        download: it cannot be finalized or downloaded, so a new order is
        made.
        """
        self.register()
        self.authorize()
        self.ca.orders[-1].status = "valid"
        reply = self.post("/acme/new-cert", {"resource": "new-cert", "csr": b64url(make_csr([NAME]))})
        self.assertEqual(reply.status, 201, reply.body)
        self.assertEqual(self.ca.counts["newOrder"], 2)

    def test_the_same_name_certified_again_is_not_finalized_twice(self):
        """
        Only a pending or ready stored order is finalized at once: the
        valid order of the first certificate is not tried again.
        """
        self.register()
        self.issue()
        reply = self.post("/acme/new-cert", {"resource": "new-cert", "csr": b64url(make_csr([NAME]))})
        self.assertEqual(reply.status, 201, reply.body)
        self.assertEqual((self.ca.counts["newOrder"], self.ca.counts["finalize"]), (2, 2))

    def test_a_wildcard_name_is_certified_with_its_wildcard_authorization(self):
        self.register()
        reply = self.new_authz("*.example.test")
        self.assertEqual(reply.status, 201, reply.body)
        self.assertTrue(reply.json()["identifier"]["value"] == "*.example.test", reply.json())
        (challenge,) = reply.json()["challenges"]
        self.assertEqual(challenge["type"], "dns-01")
        answered = self.post(challenge["uri"], {
            "resource": "challenge", "type": "dns-01",
            "keyAuthorization": self.keys[0].key_authorization(challenge["token"])})
        self.assertEqual(answered.status // 100, 2, answered.body)
        with IssuanceLog() as log:
            issued = self.post("/acme/new-cert", {"resource": "new-cert", "csr": b64url(make_csr(["*.example.test"]))})
        self.assertEqual(issued.status, 201, issued.body)
        self.assertEqual(len(log.matching(r"certificate \S+ for \['\*\.example\.test'\] cost 1 upstream order\(s\)")),
                         1, log.lines)

    def test_a_retry_finds_the_valid_order_with_one_read(self):
        """
        The certificate download failed; the retry with the same key reads
        the order once (valid, with its certificate) and downloads it.
        """
        self.register()
        self.authorize()
        self.gateway.upstream.read_retries = 0
        self.ca.fail_next("/cert/", 500, {"type": "serverInternal"})
        key = ec.generate_private_key(ec.SECP256R1())
        csr = b64url(make_csr([NAME], key=key))
        self.assertProblem(self.post("/acme/new-cert", {"resource": "new-cert", "csr": csr}), 500, "serverInternal")
        reads = self.ca.counts["order"]
        reply = self.post("/acme/new-cert", {"resource": "new-cert", "csr": csr})
        self.assertEqual(reply.status, 201, reply.body)
        self.assertEqual((self.ca.counts["order"] - reads, self.ca.counts["newOrder"], self.ca.counts["finalize"]),
                         (1, 1, 1))


class ReadAfterRevalidationTests(FaceTestCase):
    """
    After revalidating, the gateway reads each authorization again to
    record the CA's view; one the CA does not answer for is left as the
    store has it, and logged.
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

    def test_an_authorization_the_ca_forgot_is_logged_and_left_as_stored(self):
        """
        Reads of the new order's two authorizations: two as the order is
        stored, two as revalidation polls them, then the two after it —
        the fifth finds the first one gone from the CA.
        """
        before = self.ca.counts["authorization"]
        with IssuanceLog() as log:
            self.ca.hold_next("/authz/")
            sent = defer.Deferred.fromCoroutine(self.client().post(self.url("/acme/new-cert"), {
                "resource": "new-cert", "csr": b64url(make_csr(list(self.NAMES)))}))
            while self.ca.counts["authorization"] - before < 5:  # one read held at a time
                self.assertNoResult(sent)
                self.ca.hold_next("/authz/")
                self.assertEqual(self.ca.release_held(), 1)
                self.gateway.flush()
            first = self.ca.orders[-1].authorizations[0]
            self.assertEqual((first.identifier, first.status), (self.NAMES[0], "valid"))
            del self.ca.authorizations[first.id]
            self.assertEqual(self.ca.release_held(), 1)
            self.gateway.flush()
            reply = self.successResultOf(sent)
        self.assertEqual(reply.status, 201, reply.body)
        account = self.successResultOf(self.gateway.store.account_by_thumbprint(self.keys[0].thumbprint))
        (order,) = self.successResultOf(self.gateway.store.find_orders(account.id, self.NAMES, ("valid",)))
        self.assertEqual(log.matching(r"new-cert: revalidating .*"),
                         [f"new-cert: revalidating {list(self.NAMES)} for order {order.id}"])
        (line,) = log.matching(r"new-cert: could not read authorization .*")
        self.assertTrue(line.startswith(f"new-cert: could not read authorization {first.url} after revalidation: "),
                        line)
        self.assertIn("no such authorization", line)
        stored = self.successResultOf(self.gateway.store.authorizations_for_order(order.id))
        self.assertEqual(sorted((a.identifier, a.status) for a in stored),
                         [(self.NAMES[0], "pending"), (self.NAMES[1], "valid")])

    def test_an_authorization_expired_in_the_store_is_not_finalized_at_once(self):
        """
        With a means to validate, new-cert goes on without a stored
        authorization; the expired one's order is not finalized at once
        but read, found invalid, and replaced by a new order the gateway
        validates: one finalize.
        """
        self.gateway.clock.advance(8 * 86400)
        self.client().nonce = None  # expired too
        csr = b64url(make_csr([self.NAMES[0]]))
        reply = self.post("/acme/new-cert", {"resource": "new-cert", "csr": csr})
        self.assertEqual(reply.status, 201, reply.body)
        self.assertEqual(self.ca.counts["finalize"], 1)

    def test_an_order_stored_without_its_authorizations_is_completed_by_the_retry(self):
        """
        The first new-cert's read of the new order's authorizations fails:
        the order is stored alone.  The retry cannot take the fast path
        (the stored authorizations are missing): it reads the order and its
        authorizations from the CA, records them under the order,
        revalidates and finalizes it — one finalize in all.
        """
        self.gateway.upstream.read_retries = 0
        self.ca.fail_next("/authz/", 500, {"type": "serverInternal", "detail": "busy"})
        csr = b64url(make_csr(list(self.NAMES)))
        first = self.post("/acme/new-cert", {"resource": "new-cert", "csr": csr})
        self.assertEqual(first.status // 100, 5, first.body)
        account = self.successResultOf(self.gateway.store.account_by_thumbprint(self.keys[0].thumbprint))
        (order,) = self.successResultOf(self.gateway.store.find_orders(account.id, self.NAMES))
        self.assertEqual(self.successResultOf(self.gateway.store.authorizations_for_order(order.id)), [])
        orders = self.ca.counts["newOrder"]
        second = self.post("/acme/new-cert", {"resource": "new-cert", "csr": b64url(make_csr(list(self.NAMES)))})
        self.assertEqual(second.status, 201, second.body)
        self.assertEqual((self.ca.counts["newOrder"], self.ca.counts["finalize"]), (orders, 1))
        stored = self.successResultOf(self.gateway.store.authorizations_for_order(order.id))
        self.assertEqual(sorted((a.identifier, a.status) for a in stored),
                         [(name, "valid") for name in self.NAMES])


class RefusalTests(FaceTestCase):
    """What a client is told when its names are not (or no longer) authorized."""

    def test_every_name_the_ca_wants_validated_again_is_named(self):
        self.register()
        self.authorize(A)
        self.authorize(B)
        for authorization in self.ca.authorizations.values():
            authorization.status = "deactivated"
        reply = self.post("/acme/new-cert", {"resource": "new-cert", "csr": b64url(make_csr([B, A]))})
        problem = self.assertProblem(reply, 403, "unauthorized")
        self.assertTrue(problem["detail"].startswith(
            "Error creating new cert :: authorizations for these names not found or expired: "
            f"{A}, {B}. The upstream CA requires them to be validated again; start the gateway with "),
            problem["detail"])
        self.assertEqual(self.ca.counts["finalize"], 0)

    def test_a_name_not_validated_yet_is_refused_without_a_finalize(self):
        """The stored order's authorization is pending: the fast path does not try it."""
        self.register()
        self.assertEqual(self.new_authz().status, 201)
        reply = self.post("/acme/new-cert", {"resource": "new-cert", "csr": b64url(make_csr([NAME]))})
        self.assertProblem(reply, 403, "unauthorized", NAME)
        self.assertEqual(self.ca.counts["finalize"], 0)

    def test_an_authorization_expired_in_the_store_does_not_count(self):
        self.register()
        self.authorize()
        self.gateway.clock.advance(8 * 86400)
        self.client().nonce = None  # the one held has expired too
        reply = self.post("/acme/new-cert", {"resource": "new-cert", "csr": b64url(make_csr([NAME]))})
        problem = self.assertProblem(reply, 403, "unauthorized")
        self.assertTrue(problem["detail"].startswith(
            "Error creating new cert :: authorizations for these names not found or expired: "
            f"{NAME}. Request an authorization (new-authz) for each name first"), problem["detail"])
        self.assertEqual(self.ca.counts["newOrder"], 1)

    def test_an_invalid_authorization_does_not_count(self):
        self.register()
        self.ca.validator = lambda authorization, challenge, key_authorization: False
        self.authorize()
        reply = self.post("/acme/new-cert", {"resource": "new-cert", "csr": b64url(make_csr([NAME]))})
        problem = self.assertProblem(reply, 403, "unauthorized")
        self.assertTrue(problem["detail"].startswith(
            "Error creating new cert :: authorizations for these names not found or expired: "
            f"{NAME}. Request an authorization (new-authz) for each name first"), problem["detail"])
        self.assertEqual((self.ca.counts["newOrder"], self.ca.counts["finalize"]), (1, 0))

    def test_the_fast_path_fallback_names_the_order(self):
        self.register()
        self.authorize()
        account = self.successResultOf(self.gateway.store.account_by_thumbprint(self.keys[0].thumbprint))
        (order,) = self.successResultOf(self.gateway.store.find_orders(account.id, (NAME,)))
        self.ca.fail_next("/finalize/", 403, {"type": "orderNotReady", "detail": "order is pending"})
        with IssuanceLog() as log:
            reply = self.post("/acme/new-cert", {"resource": "new-cert", "csr": b64url(make_csr([NAME]))})
        self.assertEqual(reply.status, 201, reply.body)
        self.assertEqual(log.matching(r"new-cert: order .* was not ready upstream .*"),
                         [f"new-cert: order {order.id} was not ready upstream (orderNotReady); re-reading it"])


class ProcessingOrderTests(FaceTestCase):
    """
    Orders the CA keeps ``processing`` after finalize (``issue_after``):
    the stored order says so as soon as finalize answers, and a retry that
    finds the order still processing follows it — reading it at once —
    instead of finalizing again.
    """

    def account_id(self):
        return self.successResultOf(self.gateway.store.account_by_thumbprint(self.keys[0].thumbprint)).id

    def stored_status(self):
        (order,) = self.successResultOf(self.gateway.store.find_orders(self.account_id(), (NAME,)))
        return order.status

    def send_new_cert(self, csr):
        return defer.Deferred.fromCoroutine(self.client().post(
            self.url("/acme/new-cert"), {"resource": "new-cert", "csr": csr}))

    def test_an_order_made_ready_at_the_ca_is_finalized_and_followed(self):
        """
        The CA decides the challenge at its next read, so new-cert reads
        the order (ready), finalizes it (processing, Retry-After 1 s) and
        stores processing before its first read of it.
        """
        self.ca.validate_immediately = False
        self.ca.issue_after, self.ca.retry_after = 1.5, "1"
        self.register()
        self.authorize()
        reads = self.ca.counts["order"]
        sent = self.send_new_cert(b64url(make_csr([NAME])))
        self.assertNoResult(sent)
        self.assertEqual(self.ca.counts["order"] - reads, 1, "the order was read once, before finalize")
        self.assertEqual(self.stored_status(), "processing")
        self.gateway.advance(1)
        self.gateway.advance(1)
        reply = self.successResultOf(sent)
        self.assertEqual(reply.status, 201, reply.body)
        self.assertEqual(self.stored_status(), "valid")

    def test_a_retry_follows_the_order_still_processing(self):
        self.ca.issue_after = 30
        self.register()
        self.authorize()
        self.gateway.upstream.read_retries = 0
        self.ca.fail_next("/order/", 500, {"type": "serverInternal", "detail": "busy"})
        csr = b64url(make_csr([NAME]))
        first = self.successResultOf(self.send_new_cert(csr))
        self.assertProblem(first, 500, "serverInternal")
        self.assertEqual(self.stored_status(), "processing")
        reads = self.ca.counts["order"]
        sent = self.send_new_cert(csr)
        self.assertNoResult(sent)
        self.assertEqual(self.ca.counts["order"] - reads, 2, "read to find it, then at once by its follower")
        for _ in range(60):
            self.gateway.advance(1)
        reply = self.successResultOf(sent)
        self.assertEqual(reply.status, 201, reply.body)
        self.assertEqual((self.ca.counts["newOrder"], self.ca.counts["finalize"]), (1, 1))
        self.assertEqual(self.stored_status(), "valid")


class OrderTermsTests(RenewalTestCase):
    """
    The order a new-cert creates for several names carries the terms of
    its request: the profile the client's User-Agent gets, and ARI
    ``replaces`` for the account's certificate for exactly these names.
    """

    ca_options = {"renewal_info": True, "profiles": {"classic": "90 days", "shortlived": "6 days"}}
    gateway_options = {"plan_renewals": False, "profiles": ProfilePolicy(default="classic", rules=(
        ProfileRule(profile="shortlived", user_agent="*shortlived-client*"),))}

    def test_the_profile_follows_the_user_agent_of_the_new_cert(self):
        self.register()
        self.authorize(A)
        self.authorize(B)
        self.assertEqual({o.profile for o in self.ca.orders}, {"classic"})
        self.client().user_agent = "Mozilla shortlived-client/1.0"
        reply = self.new_cert((A, B))
        self.assertEqual(reply.status, 201, reply.body)
        self.assertEqual((self.ca.orders[-1].names, self.ca.orders[-1].profile), ([A, B], "shortlived"))
        serial = format(x509.load_der_x509_certificate(reply.body).serial_number, "x")
        self.assertEqual(self.successResultOf(self.gateway.store.certificate_by_serial(serial)).profile,
                         "shortlived")

    def test_certifying_the_same_names_again_replaces_the_certificate(self):
        self.register()
        first = x509.load_der_x509_certificate(self.issue((A, B)).body)
        self.assertIsNone(self.ca.orders[-1].replaces)
        reply = self.new_cert((A, B))
        self.assertEqual(reply.status, 201, reply.body)
        aki = first.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
        self.assertEqual(self.ca.orders[-1].replaces,
                         f"{b64url(aki)}.{b64url(serial_der_bytes(first.serial_number))}")


class StoredCertificateTests(FaceTestCase):
    """What is stored of an issued certificate, and storing one chain twice."""

    def test_the_leaf_facts_are_stored(self):
        self.register()
        reply = self.issue()
        leaf = x509.load_der_x509_certificate(reply.body)
        stored = self.successResultOf(self.gateway.store.certificate_by_serial(format(leaf.serial_number, "x")))
        facts = leaf_facts(reply.body)
        self.assertEqual((stored.names, stored.authority_key_id, stored.not_before, stored.not_after),
                         (facts.names, facts.authority_key_id, facts.not_before, facts.not_after))
        self.assertEqual(stored.names, (NAME,))
        self.assertTrue(stored.not_before < stored.not_after)

    def test_a_chain_stored_again_is_the_stored_certificate(self):
        self.register()
        reply = self.issue()
        delivered = reply.header("location").rstrip("/").rsplit("/", 1)[1]
        stored = self.successResultOf(self.gateway.store.certificate_by_id(delivered))
        chain = CertificateChain(url=stored.upstream_url, certificates=(
            reply.body, self.ca.intermediate.public_bytes(serialization.Encoding.DER)))
        again = self.successResultOf(defer.Deferred.fromCoroutine(
            store_chain(self.gateway.context, stored.account_id, stored.order_id, chain)))
        self.assertEqual(again.id, delivered)
        self.assertEqual([c.id for c in self.successResultOf(
            self.gateway.store.certificates_for_account(stored.account_id))], [delivered])


class NewCertAnswerTests(FaceTestCase):
    """
    What new-cert answers when the CA's order does not end in a
    certificate for the CSR's key, and when names were never authorized.
    """

    def account_id(self):
        return self.successResultOf(self.gateway.store.account_by_thumbprint(self.keys[0].thumbprint)).id

    def test_a_ca_that_keeps_certifying_another_key_is_given_up_on(self):
        """
        Every certificate the CA issues is for another key: each is kept as
        an orphan and ordered anew, four orders in all, then a 500.
        """
        other = ec.generate_private_key(ec.SECP256R1()).public_key()
        sign = self.ca._sign

        def for_another_key(subject, public_key, issuer, issuer_key, ca=False, names=()):
            return sign(subject, public_key if ca else other, issuer, issuer_key, ca=ca, names=names)

        self.ca._sign = for_another_key
        self.register()
        self.authorize()
        reply = self.post("/acme/new-cert", {"resource": "new-cert", "csr": b64url(make_csr([NAME]))})
        problem = self.assertProblem(reply, 500, "serverInternal")
        self.assertEqual(problem["detail"], "Error creating new cert :: the upstream CA keeps returning "
                                            "certificates for another key than the CSR's")
        self.assertEqual((self.ca.counts["newOrder"], self.ca.counts["finalize"]), (4, 4))
        self.assertEqual(len(self.successResultOf(self.gateway.store.orphaned_certificates())), 4)

    def finalize_answers(self, **members):
        """The CA answers the next finalize with its order showing ``members``."""
        order = self.ca.orders[-1]
        document = dict(order.to_json(self.ca.format_time), **members)
        self.ca.fail_next("/finalize/", 200, json.dumps(document).encode(),
                          headers={"Content-Type": "application/json"})

    def test_an_order_the_ca_made_invalid_is_refused_with_its_error(self):
        self.register()
        self.authorize()
        self.finalize_answers(status="invalid", error={
            "type": "urn:ietf:params:acme:error:badCSR", "detail": "the key is on a blocklist", "status": 400})
        reply = self.post("/acme/new-cert", {"resource": "new-cert", "csr": b64url(make_csr([NAME]))})
        problem = self.assertProblem(reply, 403, "unauthorized")
        self.assertEqual(problem["detail"], "Error creating new cert :: the key is on a blocklist")
        (order,) = self.successResultOf(self.gateway.store.find_orders(self.account_id(), (NAME,)))
        self.assertEqual(order.status, "invalid")

    def test_an_order_the_ca_made_invalid_without_an_error_is_refused_naming_its_status(self):
        self.register()
        self.authorize()
        self.finalize_answers(status="invalid")
        reply = self.post("/acme/new-cert", {"resource": "new-cert", "csr": b64url(make_csr([NAME]))})
        problem = self.assertProblem(reply, 403, "unauthorized")
        self.assertEqual(problem["detail"], "Error creating new cert :: the order is invalid")

    def test_a_valid_order_without_a_certificate_is_refused(self):
        self.register()
        self.authorize()
        self.finalize_answers(status="valid")
        reply = self.post("/acme/new-cert", {"resource": "new-cert", "csr": b64url(make_csr([NAME]))})
        problem = self.assertProblem(reply, 403, "unauthorized")
        self.assertEqual(problem["detail"], "Error creating new cert :: the order is valid")
        self.assertEqual(self.ca.counts["certificate"], 0)

    def test_every_name_never_authorized_is_named_with_the_flags(self):
        self.register()
        reply = self.post("/acme/new-cert", {"resource": "new-cert", "csr": b64url(make_csr([B, A]))})
        problem = self.assertProblem(reply, 403, "unauthorized")
        means = self.gateway.context.validators.missing_means([])
        self.assertEqual(problem["detail"],
                         "Error creating new cert :: authorizations for these names not found or expired: "
                         f"{A}, {B}. Request an authorization (new-authz) for each name first, or start "
                         f"the gateway with {means} to let it validate them.")
        self.assertEqual(self.ca.counts["newOrder"], 0)

    def test_unknown_certificates_and_issuers_are_404s_in_boulders_words(self):
        for path, detail in [("/acme/cert/nope", "Certificate not found"),
                             ("/acme/issuer-cert/nope", "Issuer certificate not found")]:
            problem = self.assertProblem(self.get(path), 404, "malformed")
            self.assertEqual(problem["detail"], detail)
