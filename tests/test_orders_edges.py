"""
`gateway.translate.orders` at its edges (issue 21): a CA that issues a
certificate for another key than the CSR's (kept as an orphan, never
served), an order the CA forgot, an order whose authorization row a crash
left out of the store, the log line of each stored certificate, and which
keys a ``kid`` may stand for.  Through whole in-memory v2 gateways over the
FakeCA.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric import ec
from twisted.internet import defer
from twisted.logger import formatEvent, globalLogPublisher

from gateway.keys.jose import b64url
from gateway.process.testing import FakeCA, build_test_gateway
from gateway.status import Status
from gateway.store import Authorization, Order, Update
from tests.support.v1_client import V1TestClient
from tests.support.v2_client import POST_AS_GET
from tests.test_v1_face import make_csr
from tests.test_v2_face import KEY, LE_ACCOUNT_URL, NAME, NEW, OTHER, V2FaceTestCase


class OrderEdgeTests(V2FaceTestCase):

    def setUp(self):
        super().setUp()
        self.events = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def logged(self, fragment):
        return [formatEvent(e) for e in self.events if fragment in e.get("log_format", "")]

    def ready_order(self):
        self.ok(self.resolve(self.client.new_account()), 201)
        order, location = self.new_order()
        authorization = self.ok(self.post(order["authorizations"][0], POST_AS_GET)).json()
        challenge = next(c for c in authorization["challenges"] if c["type"] == "http-01")
        self.ok(self.post(challenge["url"], {}))
        return order, location

    def test_a_certificate_for_another_key_is_kept_as_an_orphan(self):
        """
        The CA signs another key than the CSR's: 500 ``serverInternal``
        saying so, the certificate stored as an orphan of the order (and
        logged), and the order never shows it.
        """
        order, location = self.ready_order()
        wrong_key = ec.generate_private_key(ec.SECP256R1())
        sign = self.ca._sign
        self.ca._sign = lambda subject, public_key, *args, **kwargs: sign(
            subject, wrong_key.public_key(), *args, **kwargs)
        document = self.problem(self.post(order["finalize"], {"csr": b64url(make_csr([NAME]))}),
                                "serverInternal", 500)
        self.assertEqual(document["detail"],
                         "The upstream CA issued a certificate for another key than the CSR's")
        (orphan,) = self.successResultOf(self.gateway.store.orphaned_certificates())
        stored_order = self.successResultOf(self.gateway.store.order_by_id(location.rsplit("/", 1)[1]))
        self.assertEqual((orphan.order_id, orphan.account_id), (stored_order.id, stored_order.account_id))
        self.assertEqual(orphan.leaf_der, self.ca.certificates[-1].der)
        self.assertEqual(self.logged("kept as orphan"), [
            f"finalize: order {stored_order.id} holds a certificate for another key; "
            f"kept as orphan {orphan.id}"])
        self.assertEqual(self.logged("v2 order"), [])
        polled = self.ok(self.post(location, POST_AS_GET)).json()
        self.assertEqual(polled["status"], "valid")
        self.assertNotIn("certificate", polled)

    def test_each_stored_certificate_is_logged(self):
        order, location = self.ready_order()
        finalized = self.ok(self.post(order["finalize"], {"csr": b64url(make_csr([NAME]))})).json()
        certificate_id = finalized["certificate"].rsplit("/", 1)[1]
        order_id = location.rsplit("/", 1)[1]
        self.assertEqual(self.logged("v2 order"), [
            f"certificate {certificate_id} for ['{NAME}'] (v2 order {order_id})"])
        stored = self.successResultOf(self.gateway.store.certificate_by_id(certificate_id))
        self.assertEqual((stored.order_id, stored.orphaned), (order_id, False))
        self.assertEqual(stored.leaf_der, self.ca.certificates[-1].der)

    def test_an_order_the_ca_forgot_is_invalid(self):
        """
        A pending order the CA no longer knows (404): shown ``invalid``
        and recorded so; a repeated newOrder for its names makes a new one.
        """
        self.ok(self.resolve(self.client.new_account()), 201)
        _, location = self.new_order()
        del self.ca.orders[:]
        self.assertEqual(self.ok(self.post(location, POST_AS_GET)).json()["status"], "invalid")
        stored = self.successResultOf(self.gateway.store.order_by_id(location.rsplit("/", 1)[1]))
        self.assertEqual(stored.status, Status.INVALID)
        _, again = self.new_order()
        self.assertNotEqual(again, location)
        self.assertEqual(len(self.ca.orders), 1)

    def test_a_ca_failure_reading_an_order_is_the_cas_error(self):
        self.ok(self.resolve(self.client.new_account()), 201)
        _, location = self.new_order()
        self.ca.fail_next("/order/", 403, {"type": "unauthorized", "detail": "not yours"})
        document = self.problem(self.post(location, POST_AS_GET), "unauthorized", 403)
        self.assertIn("not yours", document["detail"])
        stored = self.successResultOf(self.gateway.store.order_by_id(location.rsplit("/", 1)[1]))
        self.assertEqual(stored.status, Status.PENDING)

    def test_an_order_read_records_the_cas_status(self):
        order, location = self.ready_order()
        order_id = location.rsplit("/", 1)[1]
        self.assertEqual(self.ok(self.post(location, POST_AS_GET)).json()["status"], "ready")
        self.assertEqual(
            self.successResultOf(self.gateway.store.order_by_id(order_id)).status, Status.READY)

    def test_another_accounts_order_stays_its_own(self):
        """
        Two accounts ordering the same name at once get two orders (the
        order lock is per account and names), each finalized by its owner.
        """
        self.ok(self.resolve(self.client.new_account()), 201)
        other = self.client_for(OTHER)
        self.ok(self.resolve(other.new_account()), 201)
        _, mine = self.new_order()
        _, theirs = self.new_order(client=other)
        self.assertNotEqual(mine, theirs)
        self.assertEqual(len(self.ca.orders), 2)

    def test_an_order_row_older_than_its_authorization_urls(self):
        """
        A stored order without the CA's authorization URLs (a row from
        before they were kept) lists the authorizations stored for it.
        """
        self.ok(self.resolve(self.client.new_account()), 201)
        order, location = self.new_order()
        order_id = location.rsplit("/", 1)[1]
        self.successResultOf(self.gateway.store.write(
            [Update(Order, order_id, {"authorization_urls": ()})]))
        shown = self.ok(self.post(location, POST_AS_GET)).json()
        self.assertEqual(shown["authorizations"], order["authorizations"])

    def test_reading_an_order_reads_no_authorization_upstream(self):
        self.ok(self.resolve(self.client.new_account()), 201)
        order, location = self.new_order(names=(NAME, "two.example.test"))
        before = self.ca.counts["authorization"]
        shown = self.ok(self.post(location, POST_AS_GET)).json()
        self.assertEqual(shown["authorizations"], order["authorizations"])
        self.assertEqual(self.ca.counts["authorization"], before)

    def test_a_certificate_issued_after_the_finalize_gave_up_is_served_when_read(self):
        """
        The CA keeps the finalized order ``processing`` for longer than the
        finalize waits (120 s): once it issued, a read of the order shows
        ``valid`` with the certificate, which the gateway fetched and
        stored.
        """
        self.build(ca=FakeCA(issue_after=300.0))
        order, location = self.ready_order()
        finalizing = defer.Deferred.fromCoroutine(
            self.client.post(order["finalize"], {"csr": b64url(make_csr([NAME]))}))
        while not finalizing.called:
            self.gateway.advance(10.0)
        self.assertNotEqual(self.successResultOf(finalizing).status, 200)
        self.gateway.advance(300.0)
        polled = self.ok(self.post(location, POST_AS_GET)).json()
        self.assertEqual(polled["status"], "valid")
        chain = self.ok(self.post(polled["certificate"], POST_AS_GET))
        self.assertIn(b"BEGIN CERTIFICATE", chain.body)
        stored = self.successResultOf(self.gateway.store.order_by_id(location.rsplit("/", 1)[1]))
        self.assertEqual((stored.status, stored.certificate_url),
                         (Status.VALID, self.ca.certificates[-1].url))

    def test_an_orphan_of_another_order_does_not_hold_this_ones_certificate(self):
        """
        One order's certificate was kept as an orphan; another order's
        download was interrupted: reading that order fetches and serves
        its certificate.
        """
        order, _ = self.ready_order()
        wrong_key = ec.generate_private_key(ec.SECP256R1())
        sign = self.ca._sign
        self.ca._sign = lambda subject, public_key, *args, **kwargs: sign(
            subject, wrong_key.public_key(), *args, **kwargs)
        self.problem(self.post(order["finalize"], {"csr": b64url(make_csr([NAME]))}),
                     "serverInternal", 500)
        self.ca._sign = sign
        second, location = self.new_order(names=("two.example.test",))
        authorization = self.ok(self.post(second["authorizations"][0], POST_AS_GET)).json()
        challenge = next(c for c in authorization["challenges"] if c["type"] == "http-01")
        self.ok(self.post(challenge["url"], {}))
        self.ca.fail_next("/cert/", 500, {"type": "serverInternal"})
        self.post(second["finalize"], {"csr": b64url(make_csr(["two.example.test"]))})
        polled = self.ok(self.post(location, POST_AS_GET)).json()
        self.assertEqual(polled["status"], "valid")
        self.assertIn("certificate", polled)

    def test_a_failed_order_shows_the_cas_error(self):
        self.build(ca=FakeCA(validator=lambda *args: False))
        self.ok(self.resolve(self.client.new_account()), 201)
        order, location = self.new_order()
        authorization = self.ok(self.post(order["authorizations"][0], POST_AS_GET)).json()
        challenge = next(c for c in authorization["challenges"] if c["type"] == "http-01")
        self.ok(self.post(challenge["url"], {}))
        shown = self.ok(self.post(location, POST_AS_GET)).json()
        self.assertEqual(shown["status"], "invalid")
        self.assertEqual(shown["error"]["type"], "urn:ietf:params:acme:error:unauthorized")
        self.assertEqual(shown["error"]["detail"], "an authorization of the order is not valid")

    def test_an_authorization_row_the_store_lacks_is_read_from_the_ca(self):
        """
        An order whose authorization row a crash left out of the store (its
        upstream URL unknown to the store): reading the order reads that
        authorization from the CA, stores it, and lists it.
        """
        self.ok(self.resolve(self.client.new_account()), 201)
        order, location = self.new_order()
        stored_id = order["authorizations"][0].rsplit("/", 1)[1]
        self.successResultOf(self.gateway.store.write([
            Update(Authorization, stored_id, {"upstream_url": self.ca.url("/authz/lost")})]))
        before = self.ca.counts["authorization"]
        shown = self.ok(self.post(location, POST_AS_GET)).json()
        self.assertEqual(self.ca.counts["authorization"], before + 1)
        (listed,) = shown["authorizations"]
        self.assertNotEqual(listed, order["authorizations"][0])
        record = self.successResultOf(
            self.gateway.store.authorization_by_id(listed.rsplit("/", 1)[1]))
        (ca_authorization,) = self.ca.authorizations.values()
        self.assertEqual(record.upstream_url, ca_authorization.url)
        self.assertEqual(record.order_id, location.rsplit("/", 1)[1])
        self.assertEqual(record.account_id, 1)
        self.assertEqual(self.ok(self.post(listed, POST_AS_GET)).json()["identifier"]["value"], NAME)

    def test_new_order_waits_for_a_v1_new_cert_of_the_same_names(self):
        """
        A v1 new-cert and a v2 newOrder of one account for the same two
        names take one lock: the newOrder waits until the new-cert is done,
        then makes its own order.
        """
        names = ("a.example.test", "b.example.test")
        v1 = V1TestClient(self.gateway.base_url, KEY, http=self.gateway.client)
        for name in names:
            reply = self.resolve(v1.post(self.gateway.url("/acme/new-authz"), {
                "resource": "new-authz", "identifier": {"type": "dns", "value": name}}))
            challenge = next(c for c in reply.json()["challenges"] if c["type"] == "http-01")
            self.resolve(v1.post(challenge["uri"], {
                "resource": "challenge", "type": "http-01",
                "keyAuthorization": KEY.key_authorization(challenge["token"])}))
            self.resolve(v1.get(reply.header("location")))
        self.ca.hold_next("/finalize/")
        certifying = defer.Deferred.fromCoroutine(v1.post(self.gateway.url("/acme/new-cert"), {
            "resource": "new-cert", "csr": b64url(make_csr(list(names)))}))
        self.assertNoResult(certifying)
        directory = self.directory()
        ordering = defer.Deferred.fromCoroutine(self.client.post(directory["newOrder"], {
            "identifiers": [{"type": "dns", "value": n} for n in names]}))
        self.assertNoResult(ordering)
        self.assertEqual(self.ca.release_held(), 1)
        self.gateway.flush()
        self.assertEqual(self.successResultOf(certifying).status, 201)
        ordered = self.ok(self.successResultOf(ordering), 201)
        self.assertEqual(ordered.json()["status"], "ready")


class KidKeyTests(V2FaceTestCase):
    """
    Which keys a ``kid`` may stand for (`keys_for_kid`): the account the CA
    gave that URL, else any key the gateway holds or any valid account's.
    """

    def order(self, client):
        return self.post(self.directory()["newOrder"], {
            "identifiers": [{"type": "dns", "value": NAME}]}, client=client)

    def upstream_url(self, key):
        account = self.successResultOf(self.gateway.store.account_by_thumbprint(key.thumbprint))
        return account.upstream_url

    def test_the_upstream_url_of_one_account_signed_by_another_key(self):
        """
        ``kid`` = KEY's account URL at the CA, signed by OTHER (held, with
        an account of its own): refused, as no key of that account signed.
        """
        self.ok(self.resolve(self.client.new_account()), 201)
        self.ok(self.resolve(self.client_for(OTHER).new_account()), 201)
        forger = self.client_for(OTHER, kid=self.upstream_url(KEY))
        self.problem(self.order(forger), "accountDoesNotExist", 400)
        self.assertEqual(len(self.ca.orders), 0)

    def test_the_upstream_url_of_one_of_two_accounts(self):
        self.ok(self.resolve(self.client.new_account()), 201)
        self.ok(self.resolve(self.client_for(OTHER).new_account()), 201)
        client = self.client_for(KEY, kid=self.upstream_url(KEY))
        self.ok(self.order(client), 201)
        self.assertEqual(self.ca.orders[0].account_id, 1)

    def restart_without(self, key):
        """
        The gateway restarted on the same store without ``key`` in its key
        store.
        """
        kept = [k for k in (KEY, OTHER, NEW) if k is not key]
        self.gateway = build_test_gateway(kept, ca=self.ca, store=self.gateway.store)

    def test_a_valid_account_whose_key_left_the_store(self):
        """
        Signed by the key of a valid account the gateway no longer holds,
        with another CA's ``kid``: that account's key is tried, and the
        refusal names the key store.
        """
        self.ok(self.resolve(self.client_for(OTHER).new_account()), 201)
        self.restart_without(OTHER)
        document = self.problem(self.order(self.client_for(OTHER, kid=LE_ACCOUNT_URL)),
                                "unauthorized", 403)
        self.assertIn(OTHER.thumbprint, document["detail"])
        self.assertIn("key store", document["detail"])

    def test_a_deactivated_account_whose_key_left_the_store(self):
        """
        A deactivated account's key, no longer held, stands for no ``kid``:
        neither its own URL at the CA nor another CA's.
        """
        other = self.client_for(OTHER)
        self.ok(self.resolve(other.new_account()), 201)
        upstream_url = self.upstream_url(OTHER)
        self.ok(self.post(other.kid, {"status": "deactivated"}, client=other))
        self.restart_without(OTHER)
        for kid in (upstream_url, LE_ACCOUNT_URL):
            self.problem(self.order(self.client_for(OTHER, kid=kid)), "accountDoesNotExist", 400)
