"""
``new-authz`` never returns a used authorization
(`gateway.translate.authorizations.usable_view`), through whole in-memory
gateways over a `FakeCA` that reuses valid authorizations or not, with no
means for the gateway to validate names itself (also with renewal planning
off: a wildcard's, and never an invalid one; a name outside --allow-names
refused before any order).

A renewal's ``new-authz`` finds the authorization the last certificate used:
returning it made the client skip validation, and its ``new-cert`` then
needed a new order whose authorization was pending at a CA that reuses
nothing.  Now such a ``new-authz`` orders anew, and every single-name
certificate still costs one upstream order.
"""

from __future__ import annotations

from cryptography import x509

from gateway.keys.jose import b64url
from gateway.process.testing import CAAccount, FakeCA
from gateway.process.testing import build_test_gateway
from gateway.status import Status
from gateway.translate.context import Policy
from gateway.translate.policy import AllowedNames
from gateway.store.records import format_timestamp
from gateway.translate.authorizations import HONOUR_MARGIN_SECONDS
from tests.test_v1_face import KEY, NAME, FaceTestCase, make_csr


class ReuseTestCase(FaceTestCase):
    """
    A FaceTestCase whose CA reuses valid authorizations when ``reuse``.
    """

    reuse = False

    def setUp(self):
        self.gateway = build_test_gateway(self.keys, ca=FakeCA(reuse_authorizations=self.reuse))
        self.ca = self.gateway.ca
        self.base = self.gateway.base_url
        self.clients = {}

    def new_cert(self, names=(NAME,)):
        return self.post("/acme/new-cert", {"resource": "new-cert", "csr": b64url(make_csr(list(names)))})

    def stored(self, authz_url: str):
        authz_id = authz_url.rsplit("/", 1)[1]
        return self.successResultOf(self.gateway.store.authorization_by_id(authz_id))

    def stored_order(self, order_id: str):
        return self.successResultOf(self.gateway.store.order_by_id(order_id))


class WithoutReuseTests(ReuseTestCase):

    def test_certificate_and_three_renewals_cost_one_order_each(self):
        """
        certbot's flow four times (new-authz, challenge, new-cert): each
        run gets a fresh pending authorization, validates it, and its
        certificate, at one order.
        """
        self.register()
        serials, authz_urls = set(), []
        for run in range(4):
            reply = self.new_authz()
            self.assertEqual(reply.status, 201, reply.body)
            self.assertEqual(reply.json()["status"], "pending", f"run {run}: a used authorization")
            authz_urls.append(reply.header("location"))
            self.authorize()  # the same pending authorization again, then its challenge
            issued = self.new_cert()
            self.assertEqual(issued.status, 201, issued.body)
            serials.add(x509.load_der_x509_certificate(issued.body).serial_number)
            self.assertEqual(self.ca.counts["newOrder"], run + 1)
        self.assertEqual(len(serials), 4)
        self.assertEqual(len(set(authz_urls)), 4)
        self.assertEqual(self.ca.counts["finalize"], 4)

    def test_valid_authorization_of_an_unfinalized_order_is_returned(self):
        """
        Validated but not yet used: the same authorization, valid, once the
        CA confirms its order is still ready — and no new order.
        """
        self.register()
        authz_url, _ = self.authorize()
        reads = self.ca.counts["order"]
        reply = self.new_authz()
        self.assertEqual((reply.status, reply.json()["status"]), (201, "valid"))
        self.assertEqual(reply.header("location"), authz_url)
        self.assertEqual(self.ca.counts["newOrder"], 1)
        self.assertEqual(self.ca.counts["order"], reads + 1, "the CA was asked about the order")
        self.assertEqual(self.new_cert().status, 201)
        self.assertEqual(self.ca.counts["newOrder"], 1)

    def test_valid_authorization_lapsing_within_the_margin_is_not_returned(self):
        self.register()
        authz_url, _ = self.authorize()
        # FakeCA authorizations and orders last 7 days.
        self.gateway.advance(7 * 86400 - HONOUR_MARGIN_SECONDS + 10)
        self.client().nonce = None  # the one it holds expired meanwhile
        reply = self.new_authz()
        self.assertEqual((reply.status, reply.json()["status"]), (201, "pending"))
        self.assertNotEqual(reply.header("location"), authz_url)
        self.assertEqual(self.ca.counts["newOrder"], 2)

    def test_order_the_ca_no_longer_knows(self):
        """
        The CA lost the order (a CA that lost its state): the authorization
        is remembered as expired, its order as invalid, and a new order made.
        """
        self.register()
        authz_url, _ = self.authorize()
        old = self.stored(authz_url)
        self.ca.fail_next("/order/", 404, {"type": "malformed", "detail": "No order for ID"})
        reply = self.new_authz()
        self.assertEqual((reply.status, reply.json()["status"]), (201, "pending"))
        self.assertEqual(self.ca.counts["newOrder"], 2)
        self.assertEqual(self.stored(authz_url).status, "expired")
        self.assertEqual(self.stored_order(old.order_id).status, "invalid")
        self.authorize()
        self.assertEqual(self.new_cert().status, 201)
        self.assertEqual(self.ca.counts["newOrder"], 2)

    def lose_state(self):
        """
        The CA comes back without the accounts, orders and authorizations it
        had (a restarted Pebble): the same key's account gets another URL.
        """
        self.ca.orders.clear()
        self.ca.authorizations.clear()
        self.ca.accounts = {1: CAAccount(1, self.ca.url("/acct/someone-else"), {}, "someone-else", [], True)}

    def test_after_the_ca_lost_its_state_renewals_order_anew(self):
        """
        Both kinds of stored valid authorization: one whose order was
        finalized (a renewal), and one whose order was validated but never
        finalized.  The gateway finds its account again and orders anew.
        """
        self.register()
        self.authorize()
        self.assertEqual(self.new_cert().status, 201)
        validated_url, _ = self.authorize("other.example.test")
        self.lose_state()
        for name in (NAME, "other.example.test"):
            reply = self.new_authz(name)
            self.assertEqual((reply.status, reply.json()["status"]), (201, "pending"), reply.body)
            self.authorize(name)
            issued = self.new_cert((name,))
            self.assertEqual(issued.status, 201, issued.body)
        self.assertEqual(self.stored(validated_url).status, "expired")
        self.assertEqual(len(self.ca.orders), 2, "one order per certificate at the new CA")
        self.assertEqual(self.ca.accounts[2].thumbprint, KEY.thumbprint)

    def test_pending_authorization_of_a_dropped_order_is_not_returned(self):
        self.register()
        reply = self.new_authz()
        record = self.stored(reply.header("location"))
        self.successResultOf(self.gateway.store.update_order(record.order_id, status="invalid"))
        again = self.new_authz()
        self.assertEqual(again.status, 201)
        self.assertNotEqual(again.header("location"), reply.header("location"))
        self.assertEqual(self.ca.counts["newOrder"], 2)

    def test_multi_name_retry_validates_the_new_orders_authorizations(self):
        """
        Without reuse and without means, a two-name new-cert is refused; the
        client's retry gets the pending authorizations of the two-name order
        from new-authz, validates them, and its new-cert finalizes that order.
        """
        self.register()
        names = ("a.example.test", "b.example.test")
        for name in names:
            self.authorize(name)
        self.assertProblem(self.new_cert(names), 403, "unauthorized", "not found or expired")
        self.assertEqual(self.ca.counts["newOrder"], 3)
        for name in names:
            reply = self.new_authz(name)
            self.assertEqual(reply.json()["status"], "pending")
            self.authorize(name)
            # Asked again while the two-name order waits for the other name:
            # the same authorization, valid, and no new order.
            again = self.new_authz(name)
            self.assertEqual((again.header("location"), again.json()["status"]),
                             (reply.header("location"), "valid"))
        self.assertEqual(self.new_cert(names).status, 201)
        self.assertEqual(self.ca.counts["newOrder"], 3)


class WithReuseTests(ReuseTestCase):

    reuse = True

    def test_used_authorization_leads_to_a_new_order_the_ca_answers_valid(self):
        """
        The CA reuses the valid authorization in the new order: the client
        gets it valid (same v1 URL), and its new-cert finalizes the new
        order, which the authorization now belongs to.
        """
        self.register()
        authz_url, _ = self.authorize()
        first = self.new_cert()
        self.assertEqual(first.status, 201)
        reply = self.new_authz()
        self.assertEqual((reply.status, reply.json()["status"]), (201, "valid"))
        self.assertEqual(reply.header("location"), authz_url)
        self.assertEqual(self.ca.counts["newOrder"], 2)
        record = self.stored(authz_url)
        self.assertEqual(self.stored_order(record.order_id).upstream_url, self.ca.orders[-1].url)
        second = self.new_cert()
        self.assertEqual(second.status, 201, second.body)
        self.assertEqual(self.ca.counts["newOrder"], 2)
        self.assertEqual(self.ca.counts["finalize"], 2)
        self.assertEqual(self.ca.orders[-1].status, "valid")


class ConfirmedOrderTests(ReuseTestCase):
    """
    What the CA says of a valid authorization's order when new-authz asks
    (`gateway.translate.authorizations._confirmed_ready`).
    """

    def test_a_valid_authorization_handed_out_again_shows_the_owners_key_authorizations(self):
        self.register()
        authz_url, _ = self.authorize()
        reply = self.new_authz()
        self.assertEqual(reply.header("location"), authz_url)
        challenges = reply.json()["challenges"]
        self.assertEqual([c["keyAuthorization"] for c in challenges],
                         [KEY.key_authorization(c["token"]) for c in challenges])

    def test_a_single_name_order_the_ca_has_pending_again_is_not_used(self):
        """
        A single-name order the CA no longer has ready has lost this
        authorization: new-authz orders anew, and stores what the CA said.
        """
        self.register()
        authz_url, _ = self.authorize()
        ca_order = self.ca.orders[-1]
        (ca_authorization,) = ca_order.authorizations
        ca_authorization.status = Status.PENDING
        ca_order.status = Status.PENDING
        reply = self.new_authz()
        self.assertEqual((reply.status, reply.json()["status"]), (201, "pending"))
        self.assertNotEqual(reply.header("location"), authz_url)
        self.assertEqual(self.ca.counts["newOrder"], 2)
        self.assertEqual(self.stored_order(self.stored(authz_url).order_id).status, Status.PENDING)

    def test_an_order_the_ca_finalized_elsewhere_is_stored_with_its_certificate(self):
        self.register()
        self.issue(names=("other.example.test",))
        (certificate,) = self.ca.certificates
        authz_url, _ = self.authorize()
        ca_order = self.ca.orders[-1]
        ca_order.status = Status.VALID
        ca_order.certificate = certificate
        reply = self.new_authz()
        self.assertEqual((reply.status, reply.json()["status"]), (201, "pending"))
        self.assertNotEqual(reply.header("location"), authz_url)
        order = self.stored_order(self.stored(authz_url).order_id)
        self.assertEqual((order.status, order.certificate_url), (Status.VALID, certificate.url))

    def lapsing_soon(self):
        """An expiry within `HONOUR_MARGIN_SECONDS` from now."""
        return format_timestamp(self.gateway.clock.seconds() + HONOUR_MARGIN_SECONDS - 60)

    def test_a_valid_authorization_whose_order_alone_lapses_soon_is_not_returned(self):
        self.register()
        authz_url, _ = self.authorize()
        self.successResultOf(self.gateway.store.update_order(self.stored(authz_url).order_id,
                                                             expires=self.lapsing_soon()))
        reply = self.new_authz()
        self.assertEqual((reply.status, reply.json()["status"]), (201, "pending"))
        self.assertNotEqual(reply.header("location"), authz_url)
        self.assertEqual(self.ca.counts["newOrder"], 2)

    def test_a_valid_authorization_lapsing_soon_of_a_lasting_order_is_not_returned(self):
        self.register()
        authz_url, _ = self.authorize()
        self.successResultOf(self.gateway.store.update_authorization(
            self.stored(authz_url).id, expires=self.lapsing_soon()))
        reply = self.new_authz()
        self.assertEqual((reply.status, reply.json()["status"]), (201, "pending"))
        self.assertNotEqual(reply.header("location"), authz_url)
        self.assertEqual(self.ca.counts["newOrder"], 2)

    def test_a_pending_authorization_of_an_expired_order_is_not_asked_about(self):
        self.register()
        authz_url = self.new_authz().header("location")
        self.successResultOf(self.gateway.store.update_order(
            self.stored(authz_url).order_id,
            expires=format_timestamp(self.gateway.clock.seconds() - 1)))
        reads = self.ca.counts["authorization"]
        reply = self.new_authz()
        self.assertNotEqual(reply.header("location"), authz_url)
        # the new order's authorization only
        self.assertEqual(self.ca.counts["authorization"], reads + 1)

    def test_a_pending_authorization_the_ca_validated_since_is_judged_as_valid(self):
        """
        Stored pending, valid at the CA (validated since the store last
        looked), its order ready: handed out again, valid.
        """
        self.register()
        authz_url = self.new_authz().header("location")
        ca_order = self.ca.orders[-1]
        (ca_authorization,) = ca_order.authorizations
        ca_challenge = next(c for c in ca_authorization.challenges if c.type == "http-01")
        ca_challenge.status = Status.VALID
        ca_authorization.status = Status.VALID
        reply = self.new_authz()
        self.assertEqual((reply.status, reply.json()["status"]), (201, "valid"))
        self.assertEqual(reply.header("location"), authz_url)
        self.assertEqual(self.ca.counts["newOrder"], 1)
        self.assertEqual(self.stored(authz_url).status, Status.VALID)


class WithoutPlanningReuseTests(ReuseTestCase):
    """
    new-authz with renewal planning off: the account's own reusable
    authorizations for the name are looked up by themselves.
    """

    def setUp(self):
        self.gateway = build_test_gateway(self.keys, ca=FakeCA(reuse_authorizations=False),
                                          plan_renewals=False)
        self.ca = self.gateway.ca
        self.base = self.gateway.base_url
        self.clients = {}

    def test_a_pending_authorization_for_the_name_is_handed_out_again(self):
        self.register()
        first = self.new_authz()
        self.assertEqual(first.status, 201, first.body)
        again = self.new_authz()
        self.assertEqual((again.status, again.json()["status"]), (201, "pending"))
        self.assertEqual(again.header("location"), first.header("location"))
        self.assertEqual(self.ca.counts["newOrder"], 1)


    def test_a_pending_wildcard_authorization_is_handed_out_again_for_the_wildcard(self):
        self.register()
        first = self.new_authz("*.example.test")
        self.assertEqual(first.status, 201, first.body)
        again = self.new_authz("*.example.test")
        self.assertEqual(again.header("location"), first.header("location"))
        self.assertEqual(self.ca.counts["newOrder"], 1)

    def test_an_invalid_authorization_is_not_looked_at_again(self):
        """
        Only pending and valid authorizations are candidates: an invalid
        one is not read at the CA again before a new order is made.
        """
        self.ca.validator = lambda authorization, challenge, key_authorization: False
        self.register()
        first = self.new_authz()
        url = first.header("location")
        challenge = next(c for c in first.json()["challenges"] if c["type"] == "http-01")
        self.assertEqual(self.post(challenge["uri"], {"resource": "challenge",
                                                      "type": "http-01"}).status, 202)
        self.assertEqual(self.get(url[len(self.base):]).json()["status"], "invalid")
        reads = self.ca.counts["authorization"]
        again = self.new_authz()
        self.assertEqual((again.status, again.json()["status"]), (201, "pending"))
        self.assertNotEqual(again.header("location"), url)
        # the new order's authorization only
        self.assertEqual(self.ca.counts["authorization"], reads + 1)

class AllowedNamesTests(ReuseTestCase):

    def setUp(self):
        self.gateway = build_test_gateway(
            self.keys, ca=FakeCA(reuse_authorizations=False),
            policy=Policy(allowed_names=AllowedNames.parse(["*.allowed.test"])))
        self.ca = self.gateway.ca
        self.base = self.gateway.base_url
        self.clients = {}

    def test_new_authz_for_a_name_outside_allow_names_is_refused_before_any_order(self):
        self.register()
        refused = self.new_authz(NAME)
        problem = self.assertProblem(refused, 403, "unauthorized")
        self.assertIn(NAME, problem["detail"])
        self.assertEqual(self.ca.counts["newOrder"], 0)
        self.assertEqual(self.new_authz("www.allowed.test").status, 201)
