"""
The v2 face's ``newOrder`` and ``finalize`` (`gateway.translate.orders.
new_order`, `finalize_order`) as a client and the CA see them: which
stored order a repeated ``newOrder`` gets (a ready one, never a failed or
expired one), Boulder's words for a CSR that does not fit the order, a
finalize the CA answers ``processing`` (followed to ``valid``), one it
answers ``invalid`` (the CA's error shown), and the order lock left free.
Through whole in-memory v2 gateways over the FakeCA.
"""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from twisted.internet import defer
from twisted.logger import formatEvent, globalLogPublisher

from gateway.keys.jose import b64url
from gateway.process.testing import FakeCA, build_test_gateway
from gateway.status import Status
from gateway.store import Authorization, Order, Update
from tests.support.v2_client import POST_AS_GET
from tests.test_v1_face import make_csr
from tests.test_v2_face import KEY, NAME, OTHER, V2FaceTestCase


class NewOrderTests(V2FaceTestCase):

    def answer(self, order):
        for url in order["authorizations"]:
            authorization = self.ok(self.post(url, POST_AS_GET)).json()
            challenge = next(c for c in authorization["challenges"] if c["type"] == "http-01")
            self.ok(self.post(challenge["url"], {}))

    def test_a_new_order_lists_its_authorizations_in_the_cas_order(self):
        self.ok(self.resolve(self.client.new_account()), 201)
        names = ("b.example.test", "a.example.test")
        order, location = self.new_order(names=names)
        self.assertEqual(order["status"], "pending")
        self.assertEqual(len(order["authorizations"]), 2)
        values = [self.ok(self.post(url, POST_AS_GET)).json()["identifier"]["value"]
                  for url in order["authorizations"]]
        (ca_order,) = self.ca.orders
        self.assertEqual(sorted(values), sorted(names))
        stored = self.successResultOf(self.gateway.store.order_by_id(location.rsplit("/", 1)[1]))
        self.assertEqual(stored.upstream_url, ca_order.url)

    def test_a_repeated_new_order_gets_the_ready_order(self):
        self.ok(self.resolve(self.client.new_account()), 201)
        order, first = self.new_order()
        self.answer(order)
        again, second = self.new_order()
        self.assertEqual(second, first)
        self.assertEqual(again["status"], "ready")
        self.assertEqual(again["authorizations"], order["authorizations"])
        self.assertEqual(len(self.ca.orders), 1)

    def test_a_repeated_new_order_after_the_order_failed_is_a_new_order(self):
        """
        The stored order is pending, but the CA failed it meanwhile: a
        repeated newOrder records it invalid and makes a new order.
        """
        self.build(ca=FakeCA(validator=lambda *args: False))
        self.ok(self.resolve(self.client.new_account()), 201)
        order, first = self.new_order()
        authorization = self.ok(self.post(order["authorizations"][0], POST_AS_GET)).json()
        challenge = next(c for c in authorization["challenges"] if c["type"] == "http-01")
        self.ok(self.post(challenge["url"], {}))
        # the gateway still holds the order as pending
        stored = self.successResultOf(self.gateway.store.order_by_id(first.rsplit("/", 1)[1]))
        self.assertEqual(stored.status, Status.PENDING)
        again, second = self.new_order()
        self.assertNotEqual(second, first)
        self.assertEqual(again["status"], "pending")
        self.assertEqual(len(self.ca.orders), 2)
        self.assertEqual(self.successResultOf(
            self.gateway.store.order_by_id(first.rsplit("/", 1)[1])).status, Status.INVALID)

    def test_a_repeated_new_order_after_the_order_expired_is_a_new_order(self):
        self.ok(self.resolve(self.client.new_account()), 201)
        _, first = self.new_order()
        reads = self.ca.counts["order"]
        self.gateway.advance(8 * 24 * 3600.0)
        _, second = self.new_order()
        self.assertNotEqual(second, first)
        self.assertEqual(len(self.ca.orders), 2)
        # the expired order is not even read from the CA
        self.assertEqual(self.ca.counts["order"], reads)

    def test_two_accounts_same_names_do_not_wait_for_each_other(self):
        """
        The order lock is the account's: while another account's newOrder
        for the same name waits on the CA, this one is answered.
        """
        self.ok(self.resolve(self.client.new_account()), 201)
        other = self.client_for(OTHER)
        self.ok(self.resolve(other.new_account()), 201)
        directory = self.directory()
        self.ca.hold_next("/new-order")
        held = defer.Deferred.fromCoroutine(other.post(directory["newOrder"], {
            "identifiers": [{"type": "dns", "value": NAME}]}))
        self.assertNoResult(held)
        _, mine = self.new_order()
        self.assertEqual([o.url for o in self.ca.orders], [self.successResultOf(
            self.gateway.store.order_by_id(mine.rsplit("/", 1)[1])).upstream_url])
        self.assertEqual(self.ca.release_held(), 1)
        self.gateway.flush()
        self.ok(self.successResultOf(held), 201)


class ReadyOrders(V2FaceTestCase):

    def ready_order(self, names=(NAME,)):
        self.ok(self.resolve(self.client.new_account()), 201)
        order, location = self.new_order(names=names)
        for url in order["authorizations"]:
            authorization = self.ok(self.post(url, POST_AS_GET)).json()
            challenge = next(c for c in authorization["challenges"] if c["type"] == "http-01")
            self.ok(self.post(challenge["url"], {}))
        return order, location


class FinalizeTests(ReadyOrders):

    def test_a_csr_for_other_names_is_refused_in_boulders_words(self):
        order, _ = self.ready_order(names=("b.example.test", NAME))
        document = self.problem(self.post(order["finalize"], {
            "csr": b64url(make_csr(["other.example.test", "b.example.test"]))}), "badCSR", 400)
        self.assertEqual(document["detail"], (
            "Error finalizing order :: CSR does not specify the same identifiers as the order: "
            f"CSR b.example.test, other.example.test; order b.example.test, {NAME}"))
        self.assertEqual(self.ca.counts["finalize"], 0)

    def test_a_csr_for_the_account_key_is_refused(self):
        order, _ = self.ready_order()
        csr = (x509.CertificateSigningRequestBuilder()
               .subject_name(x509.Name([]))
               .add_extension(x509.SubjectAlternativeName([x509.DNSName(NAME)]), critical=False)
               .sign(KEY.private_key, hashes.SHA256()))
        document = self.problem(self.post(order["finalize"], {
            "csr": b64url(csr.public_bytes(Encoding.DER))}), "badCSR", 400)
        self.assertEqual(document["detail"],
                         "Certificate public key must be different than account key")
        self.assertEqual(self.ca.counts["finalize"], 0)

    def test_a_finalize_the_ca_answers_processing_is_followed_to_valid(self):
        """
        The CA keeps the order ``processing`` for a while: the finalize
        polls the order until it is valid, and answers with the stored
        certificate.
        """
        self.build(ca=FakeCA(issue_after=5.0))
        order, location = self.ready_order()
        finalizing = defer.Deferred.fromCoroutine(
            self.client.post(order["finalize"], {"csr": b64url(make_csr([NAME]))}))
        for _ in range(30):
            if finalizing.called:
                break
            self.gateway.advance(1.0)
        finalized = self.ok(self.successResultOf(finalizing)).json()
        self.assertEqual(finalized["status"], "valid")
        certificate_id = finalized["certificate"].rsplit("/", 1)[1]
        stored = self.successResultOf(self.gateway.store.certificate_by_id(certificate_id))
        self.assertEqual(stored.leaf_der, self.ca.certificates[-1].der)
        record = self.successResultOf(self.gateway.store.order_by_id(location.rsplit("/", 1)[1]))
        self.assertEqual((record.status, record.certificate_url),
                         (Status.VALID, self.ca.certificates[-1].url))

    def test_a_finalize_leaves_the_names_free_for_the_next_order(self):
        order, _ = self.ready_order()
        self.ok(self.post(order["finalize"], {"csr": b64url(make_csr([NAME]))}))
        again, _ = self.new_order()
        self.assertEqual(again["status"], "ready")
        self.assertEqual(len(self.ca.orders), 2)

    def test_a_refused_finalize_leaves_the_names_free(self):
        order, _ = self.new_order_for_account()
        self.problem(self.post(order["finalize"], {"csr": b64url(make_csr([NAME]))}),
                     "orderNotReady", 403)
        _, again = self.new_order()
        self.assertEqual(len(self.ca.orders), 1)
        self.assertTrue(again)

    def new_order_for_account(self):
        self.ok(self.resolve(self.client.new_account()), 201)
        return self.new_order()


class FinalizeRefusedByTheCATests(ReadyOrders):
    """
    The CA refuses the finalize: a CN-only CSR gets the gateway's hint to
    add the name as a SAN, any other CSR the CA's own refusal.
    """

    def test_a_cn_only_csr_the_ca_refuses_gets_the_san_hint(self):
        from tests.test_csr import vector
        order, location = self.ready_order(names=("cn-only.example.test",))
        self.ca.fail_next("/finalize/", 400, {"type": "badCSR", "detail": "no names in SAN"})
        document = self.problem(self.post(order["finalize"], {
            "csr": b64url(vector("openssl-cn-only-rsa2048.pem"))}), "badCSR", 400)
        self.assertTrue(document["detail"].startswith(
            "Error creating new cert :: the CA refused the CSR (no names in SAN). The CSR names "
            "cn-only.example.test only in its subject's Common Name"), document["detail"])
        self.assertEqual(self.successResultOf(self.gateway.store.order_by_id(
            location.rsplit("/", 1)[1])).certificate_url, None)
        self.assertEqual(self.ca.certificates, [])
        # the lock was released: the same names can be ordered again at once
        again, _ = self.new_order(names=("cn-only.example.test",))
        self.assertEqual(again["status"], "ready")

    def test_a_san_csr_the_ca_refuses_gets_the_cas_refusal(self):
        order, location = self.ready_order()
        self.ca.fail_next("/finalize/", 400, {"type": "badCSR", "detail": "key too weak"})
        document = self.problem(self.post(order["finalize"], {
            "csr": b64url(make_csr([NAME]))}), "badCSR", 400)
        self.assertIn("key too weak", document["detail"])
        self.assertNotIn("Common Name", document["detail"])
        self.assertEqual(self.successResultOf(self.gateway.store.order_by_id(
            location.rsplit("/", 1)[1])).certificate_url, None)
        self.assertEqual(self.ca.certificates, [])


class FinalizeAnswersTests(ReadyOrders):
    """
    What the finalize answer shows of the CA's: an ``invalid`` order with
    the CA's error, a ``valid`` one that names no certificate, and an
    authorization the store lost, read again from the CA.
    """

    def scripted_finalize(self, **changes):
        import json
        (ca_order,) = self.ca.orders
        body = dict(ca_order.to_json(self.ca.format_time), **changes)
        self.ca.fail_next("/finalize/", 200, json.dumps(body).encode(),
                          {"Content-Type": "application/json", "Location": ca_order.url})

    def test_a_finalize_the_ca_answers_invalid_shows_the_cas_error(self):
        order, location = self.ready_order()
        self.scripted_finalize(status="invalid", error={
            "type": "urn:ietf:params:acme:error:caa", "detail": "CAA forbids issuance", "status": 403})
        shown = self.ok(self.post(order["finalize"], {"csr": b64url(make_csr([NAME]))})).json()
        self.assertEqual(shown["status"], "invalid")
        self.assertEqual(shown["error"]["type"], "urn:ietf:params:acme:error:caa")
        self.assertEqual(shown["error"]["detail"], "CAA forbids issuance")
        self.assertNotIn("certificate", shown)
        self.assertEqual(self.successResultOf(self.gateway.store.order_by_id(
            location.rsplit("/", 1)[1])).status, Status.INVALID)

    def test_a_valid_finalize_shows_no_error(self):
        order, _ = self.ready_order()
        shown = self.ok(self.post(order["finalize"], {"csr": b64url(make_csr([NAME]))})).json()
        self.assertEqual(shown["status"], "valid")
        self.assertNotIn("error", shown)

    def test_a_valid_order_without_a_certificate_is_shown_as_it_is(self):
        order, location = self.ready_order()
        self.scripted_finalize(status="valid")
        downloads = self.ca.counts["certificate"]
        shown = self.ok(self.post(order["finalize"], {"csr": b64url(make_csr([NAME]))})).json()
        self.assertEqual(shown["status"], "valid")
        self.assertNotIn("certificate", shown)
        self.assertEqual(self.ca.counts["certificate"], downloads)

    def test_an_authorization_row_the_store_lost_is_listed_by_the_finalize(self):
        order, location = self.ready_order()
        stored_id = order["authorizations"][0].rsplit("/", 1)[1]
        self.successResultOf(self.gateway.store.write([
            Update(Authorization, stored_id, {"upstream_url": self.ca.url("/authz/lost")})]))
        before = self.ca.counts["authorization"]
        shown = self.ok(self.post(order["finalize"], {"csr": b64url(make_csr([NAME]))})).json()
        self.assertEqual(shown["status"], "valid")
        self.assertEqual(self.ca.counts["authorization"], before + 1)
        (listed,) = shown["authorizations"]
        self.assertEqual(self.ok(self.post(listed, POST_AS_GET)).json()["identifier"]["value"], NAME)

    def test_two_accounts_finalize_the_same_name_without_waiting_for_each_other(self):
        """
        The finalize lock is the account's and names': while one account's
        finalize waits on the CA, another account's finalize of the same
        name is answered.
        """
        other = self.client_for(OTHER)
        self.ok(self.resolve(other.new_account()), 201)
        theirs, _ = self.new_order(client=other)
        for url in theirs["authorizations"]:
            authorization = self.ok(self.post(url, POST_AS_GET, client=other)).json()
            challenge = next(c for c in authorization["challenges"] if c["type"] == "http-01")
            self.ok(self.post(challenge["url"], {}, client=other))
        mine, _ = self.ready_order()
        self.ca.hold_next("/finalize/")
        held = defer.Deferred.fromCoroutine(
            other.post(theirs["finalize"], {"csr": b64url(make_csr([NAME]))}))
        self.assertNoResult(held)
        answered = self.ok(self.post(mine["finalize"], {"csr": b64url(make_csr([NAME]))})).json()
        self.assertEqual(answered["status"], "valid")
        self.assertEqual(self.ca.release_held(), 1)
        self.gateway.flush()
        self.assertEqual(self.ok(self.successResultOf(held)).json()["status"], "valid")


class NewOrderDetailsTests(ReadyOrders):
    """
    What a new order is asked for and logged as, and the stored orders a
    repeated ``newOrder`` passes over.
    """

    def test_the_profile_rule_of_the_key_the_client_and_the_names_is_asked_for(self):
        from gateway.translate.profiles import ProfilePolicy, ProfileRule

        self.ca = FakeCA(profiles={"classic": "90 days", "shortlived": "6 days"})
        rule = ProfileRule(profile="shortlived", thumbprint=KEY.thumbprint, user_agent="*",
                           names="*.example.test")
        self.gateway = build_test_gateway([KEY], ca=self.ca, profiles=ProfilePolicy(
            default="classic", rules=(rule,)))
        self.client = self.client_for(KEY)
        self.ok(self.resolve(self.client.new_account()), 201)
        self.new_order()
        self.new_order(names=("www.example.org",))
        self.assertEqual([o.profile for o in self.ca.orders], ["shortlived", "classic"])

    def test_each_new_order_is_logged(self):
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        self.ok(self.resolve(self.client.new_account()), 201)
        _, location = self.new_order(names=("b.example.test", NAME))
        self.new_order(names=("b.example.test", NAME))
        logged = [formatEvent(e) for e in events if "newOrder" in e.get("log_format", "")]
        self.assertEqual(logged, [
            f"newOrder: created order {location.rsplit('/', 1)[1]} for ['b.example.test', '{NAME}']"])

    def test_a_valid_order_is_not_read_again_by_a_new_order(self):
        order, _ = self.ready_order()
        self.ok(self.post(order["finalize"], {"csr": b64url(make_csr([NAME]))}))
        reads = self.ca.counts["order"]
        self.new_order()
        self.assertEqual(self.ca.counts["order"], reads)
        self.assertEqual(len(self.ca.orders), 2)

    def test_an_expired_order_is_passed_over_for_a_later_one(self):
        self.ok(self.resolve(self.client.new_account()), 201)
        _, first = self.new_order()
        self.gateway.advance(8 * 24 * 3600.0)
        _, second = self.new_order()
        _, third = self.new_order()
        self.assertNotEqual(second, first)
        self.assertEqual(third, second)
        self.assertEqual(len(self.ca.orders), 2)

    def test_a_repeated_new_order_lists_an_authorization_the_store_lost(self):
        self.ok(self.resolve(self.client.new_account()), 201)
        order, location = self.new_order()
        stored_id = order["authorizations"][0].rsplit("/", 1)[1]
        self.successResultOf(self.gateway.store.write([
            Update(Authorization, stored_id, {"upstream_url": self.ca.url("/authz/lost")})]))
        again, second = self.new_order()
        self.assertEqual(second, location)
        (listed,) = again["authorizations"]
        self.assertEqual(self.ok(self.post(listed, POST_AS_GET)).json()["identifier"]["value"], NAME)

    def test_a_newer_expired_order_is_passed_over_for_an_older_live_one(self):
        """
        The newest stored order for the names has expired, an older one
        has not: a repeated newOrder gets the older one, and the CA makes
        no new order.
        """
        self.ok(self.resolve(self.client.new_account()), 201)
        _, first = self.new_order()
        first_id = first.rsplit("/", 1)[1]
        expires = self.successResultOf(self.gateway.store.order_by_id(first_id)).expires
        self.successResultOf(self.gateway.store.write(
            [Update(Order, first_id, {"expires": "2000-01-01T00:00:00Z"})]))
        _, second = self.new_order()
        self.assertNotEqual(second, first)
        self.successResultOf(self.gateway.store.write([
            Update(Order, second.rsplit("/", 1)[1], {"expires": "2000-01-01T00:00:00Z"}),
            Update(Order, first_id, {"expires": expires})]))
        _, third = self.new_order()
        self.assertEqual(third, first)
        self.assertEqual(len(self.ca.orders), 2)
