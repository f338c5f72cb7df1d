"""
The orders ``new-authz`` and ``new-cert`` make, as the store keeps them
(`gateway.translate.authorizations.create_order` and `store_new_order`):
the CA's expiries, the tls-sni-01 row offered only with a means and never
for a wildcard, an order the CA made ready from authorizations the gateway
stored already, an order recovery found (its certificate, its creation
time, the terms the CA did not echo), an upstream rate limit's hold, and
the log lines of an order that replaces a certificate (ARI), and a CA's
order lacking an authorization for the name.
"""

from __future__ import annotations


from cryptography import x509
from cryptography.x509.oid import ExtensionOID
from twisted.internet import defer

from gateway.keys.jose import b64url
from gateway.process.testing import FakeCA, build_test_gateway
from gateway.status import Status
from gateway.store.leaf import serial_der_bytes
from gateway.store.records import format_timestamp
from gateway.translate.accounts import upstream_for
from gateway.translate.authorizations import record_authorization, store_new_order
from gateway.translate.revalidation import Validators
from gateway.translate.terms import OrderTerms
from gateway.upstream import messages as v2
from gateway.validation.http01 import HTTP01Responder
from tests.support.logs import LogLines
from tests.support.store_calls import count_store_calls
from tests.test_renewals import NAMES, RenewalTestCase
from tests.test_tlssni01_v1 import ScriptedChecker
from tests.test_v1_face import KEY, NAME, OTHER, FaceTestCase, make_csr

LOG = "gateway.translate.authorizations"


class NewOrderStoreTestCase(FaceTestCase):
    ca_options: dict = {}
    gateway_options: dict = {}
    validators = None

    def setUp(self):
        options = dict(self.gateway_options)
        if self.validators is not None:
            options["validators"] = self.validators()
        self.gateway = build_test_gateway(self.keys, ca=FakeCA(**self.ca_options), **options)
        self.ca = self.gateway.ca
        self.base = self.gateway.base_url
        self.clients = {}

    def stored_authorization(self, url):
        return self.successResultOf(self.gateway.store.authorization_by_id(url.rsplit("/", 1)[1]))

    def stored_types(self, url):
        record = self.stored_authorization(url)
        return sorted(c.type for c in self.successResultOf(
            self.gateway.store.challenges_for_authorization(record.id)))

    def account_id(self, key=KEY):
        return self.successResultOf(self.gateway.store.account_by_thumbprint(key.thumbprint)).id


class StoredOrderTests(NewOrderStoreTestCase):

    def test_new_authz_keeps_the_cas_expiries(self):
        """
        The authorization and its single-name order are stored with the
        expiries the CA gave them, and the client is shown the
        authorization's.
        """
        self.register()
        reply = self.new_authz()
        self.assertEqual(reply.status, 201, reply.body)
        (ca_authorization,) = self.ca.authorizations.values()
        (ca_order,) = self.ca.orders
        self.assertEqual(reply.json()["expires"], self.ca.format_time(ca_authorization.expires))
        record = self.stored_authorization(reply.header("location"))
        self.assertEqual(record.expires, self.ca.format_time(ca_authorization.expires))
        order = self.successResultOf(self.gateway.store.order_by_id(record.order_id))
        self.assertEqual(order.expires, self.ca.format_time(ca_order.expires))
        self.assertEqual(order.upstream_url, ca_order.url)

    def test_without_a_means_no_tls_sni01_challenge_is_stored(self):
        self.register()
        reply = self.new_authz()
        self.assertEqual(self.stored_types(reply.header("location")), ["dns-01", "http-01"])

    def test_an_order_recovery_found_keeps_its_certificate_time_and_terms(self):
        """
        An order stored from what the CA says of it (recovery does this for
        an order whose answer never arrived): its certificate URL, the
        creation time recovery knew, and the ``replaces`` and profile it was
        asked with when the CA does not echo them — and the CA's own when
        it does.
        """
        self.register()
        account_id = self.account_id()
        found = v2.Order(url="https://ca.test/order/found", status=Status.VALID,
                         identifiers=(NAME,), authorizations=(),
                         finalize="https://ca.test/finalize/found",
                         certificate="https://ca.test/cert/found",
                         expires="2026-12-10T00:00:00Z")
        terms = OrderTerms(replaces="aki.serial", profile="shortlived", planned_for="c1")
        order, authorizations = self.resolve(store_new_order(
            self.gateway.context, account_id, None, found, "order-found",
            created_at="2026-12-01T10:00:00Z", terms=terms))
        self.assertEqual(authorizations, [])
        stored = self.successResultOf(self.gateway.store.order_by_id("order-found"))
        for record in (order, stored):
            self.assertEqual(record.certificate_url, "https://ca.test/cert/found")
            self.assertEqual(record.created_at, "2026-12-01T10:00:00Z")
            self.assertEqual(record.expires, "2026-12-10T00:00:00Z")
            self.assertEqual((record.replaces, record.profile, record.planned_for),
                             ("aki.serial", "shortlived", "c1"))
        echoed = v2.Order(url="https://ca.test/order/echoed", status=Status.PENDING,
                          identifiers=(NAME,), authorizations=(),
                          finalize="https://ca.test/finalize/echoed", certificate=None,
                          expires=None, profile="classic", replaces="other.cert")
        self.resolve(store_new_order(self.gateway.context, account_id, None, echoed, "order-echoed",
                                     terms=terms))
        stored = self.successResultOf(self.gateway.store.order_by_id("order-echoed"))
        self.assertEqual((stored.replaces, stored.profile), ("other.cert", "classic"))

    def test_an_upstream_rate_limit_holds_the_account_for_its_retry_after(self):
        """
        The CA's ``Retry-After`` (an hour) is the hold: fifty minutes later
        new-authz is still refused without a ``newOrder``.
        """
        self.register()
        self.ca.fail_next("/new-order", 429, {"type": "rateLimited", "detail": "too many orders"},
                          {"Retry-After": "3600"})
        self.assertProblem(self.new_authz(), 429, "rateLimited")
        sent = self.ca.counts["newOrder"]
        self.gateway.advance(3000)
        self.assertProblem(self.new_authz(), 429, "rateLimited")
        self.assertEqual(self.ca.counts["newOrder"], sent)
        self.gateway.advance(601)
        self.assertEqual(self.new_authz().status, 201)


class ReadyOrderTests(NewOrderStoreTestCase):
    """
    A CA that reuses valid authorizations: a two-name new-cert after two
    new-authz gets an order that is ready at once, whose authorizations the
    gateway knows valid without reading them.
    """

    ca_options = {"reuse_authorizations": True}

    def test_a_ready_order_keeps_what_was_stored_of_its_authorizations(self):
        self.register()
        names = ("a.example.test", "b.example.test")
        urls = [self.authorize(name)[0] for name in names]
        before = [self.stored_authorization(url) for url in urls]
        reads = self.ca.counts["authorization"]
        reply = self.post("/acme/new-cert", {"resource": "new-cert",
                                             "csr": b64url(make_csr(list(names)))})
        self.assertEqual(reply.status, 201, reply.body)
        self.assertEqual(self.ca.counts["authorization"], reads, "known valid: not read again")
        new_order = self.ca.orders[-1]
        for url, earlier in zip(urls, before):
            record = self.stored_authorization(url)
            self.assertEqual(record.status, Status.VALID)
            self.assertEqual(record.expires, earlier.expires)
            self.assertNotEqual(record.order_id, earlier.order_id)
            order = self.successResultOf(self.gateway.store.order_by_id(record.order_id))
            self.assertEqual(order.upstream_url, new_order.url)
            self.assertEqual(self.stored_types(url), ["dns-01", "http-01"])


    def count_calls(self, *names):
        """Count the calls of the store's methods ``names`` from now on."""
        return count_store_calls(self, self.gateway.store, *names)

    def test_a_ready_order_reads_its_stored_authorizations_in_one_store_call(self):
        """
        What the store holds of a ready order's authorizations, each with
        its challenges, is one store call — not one per authorization, and
        not again after the CA was not asked, nor its challenges for the
        refresh.
        """
        self.register()
        names = ("a.example.test", "b.example.test", "c.example.test")
        for name in names:
            self.authorize(name)
        counts = self.count_calls("authorizations_by_upstream_urls",
                                  "authorization_by_upstream_url", "challenges_for_authorization")
        reply = self.post("/acme/new-cert", {"resource": "new-cert",
                                             "csr": b64url(make_csr(list(names)))})
        self.assertEqual(reply.status, 201, reply.body)
        self.assertEqual(dict(counts), {"authorizations_by_upstream_urls": 1})

    def test_a_ready_orders_authorization_stored_pending_is_stored_valid(self):
        """
        The CA validated an authorization the store still holds as pending
        (its last read was before): the ready order's refresh stores it
        valid, the challenges it read with it unchanged.
        """
        self.register()
        names = ("a.example.test", "b.example.test")
        urls = [self.authorize(name)[0] for name in names]
        stale = self.stored_authorization(urls[0])
        self.successResultOf(self.gateway.store.update_authorization(
            stale.id, status=Status.PENDING))
        reply = self.post("/acme/new-cert", {"resource": "new-cert",
                                             "csr": b64url(make_csr(list(names)))})
        self.assertEqual(reply.status, 201, reply.body)
        record = self.stored_authorization(urls[0])
        self.assertEqual(record.status, Status.VALID)
        self.assertEqual(self.stored_types(urls[0]), ["dns-01", "http-01"])

    def test_a_pending_orders_authorization_stored_already_is_taken_over_not_stored_twice(self):
        """
        An order that is not ready, one of whose authorizations the store
        holds (the CA reused a pending one): read from the CA, then found
        in the store — that row now belongs to the new order, no second
        row is stored for the URL.
        """
        self.register()
        existing = self.stored_authorization(self.new_authz().header("location"))
        account = self.successResultOf(self.gateway.store.account_by_id(existing.account_id))
        upstream_account = self.resolve(upstream_for(self.gateway.context, account))
        pending = v2.Order(url="https://ca.test/order/again", status=Status.PENDING,
                           identifiers=(NAME,), authorizations=(existing.upstream_url,),
                           finalize="https://ca.test/finalize/again", certificate=None,
                           expires=None)
        order, authorizations = self.resolve(store_new_order(
            self.gateway.context, existing.account_id, upstream_account, pending, "order-again"))
        ((record, upstream, challenges),) = authorizations
        self.assertEqual(record.id, existing.id)
        self.assertEqual(upstream.url, existing.upstream_url)
        self.assertEqual(self.successResultOf(
            self.gateway.store.authorizations_for_order("order-again")),
            [record])
        self.assertEqual(record.order_id, "order-again")
        # With its challenges as stored, for the view (no read of them).
        self.assertEqual(list(challenges), self.successResultOf(
            self.gateway.store.challenges_for_authorization(record.id)))


def _with_means():
    return Validators({"http-01": HTTP01Responder()}, tls_sni01=ScriptedChecker())


class WithMeansTests(NewOrderStoreTestCase):
    validators = staticmethod(_with_means)

    def test_tls_sni01_is_stored_for_a_name_but_never_for_a_wildcard(self):
        self.register()
        plain = self.new_authz()
        self.assertEqual(self.stored_types(plain.header("location")),
                         ["dns-01", "http-01", "tls-sni-01"])
        wildcard = self.new_authz("*.example.test")
        self.assertEqual(wildcard.status, 201, wildcard.body)
        self.assertEqual(self.stored_types(wildcard.header("location")), ["dns-01"])

    def test_a_new_authz_shows_its_challenges_as_a_read_of_them_does(self):
        """
        The ``new-authz`` answer shows the challenges it wrote (tls-sni-01
        too), in their stored order, as a later read of the authorization
        does.
        """
        self.register()
        reply = self.new_authz()
        again = self.get(reply.header("location")[len(self.base):])
        self.assertEqual(sorted(c["type"] for c in reply.json()["challenges"]),
                         ["dns-01", "http-01", "tls-sni-01"])
        self.assertEqual(reply.json(), again.json())


class ReplacingOrderLogTests(RenewalTestCase):

    def cert_id(self, certificate: x509.Certificate) -> str:
        aki = certificate.extensions.get_extension_for_oid(
            ExtensionOID.AUTHORITY_KEY_IDENTIFIER).value.key_identifier
        return f"{b64url(aki)}.{b64url(serial_der_bytes(certificate.serial_number))}"

    def planned_order_id(self, issued) -> str:
        serial = format(x509.load_der_x509_certificate(issued.body).serial_number, "x")
        return self.successResultOf(self.gateway.store.certificate_by_serial(serial)).order_id

    def test_an_order_that_replaces_a_certificate_says_so(self):
        self.register()
        with LogLines(LOG) as first:
            old = self.first_certificate()
        self.assertFalse([line for line in first.lines if "replac" in line], first.lines)
        with LogLines(LOG) as log:
            _, issued = self.renew()
        self.assertEqual(issued.status, 201, issued.body)
        order_id = self.planned_order_id(issued)
        names = sorted(self.ca.orders[-1].names)
        self.assertIn(f"order {order_id} for {names!r} replaces {self.cert_id(old)} (ARI)", log.lines)
        held = self.successResultOf(self.gateway.store.certificate_by_serial(
            format(old.serial_number, "x")))
        planned = [line for line in log.lines if "planned" in line]
        self.assertEqual(planned, [f"new-authz for {self.ca.orders[-1].names[0]}: renewal of "
                                   f"certificate {held.id} ({list(held.names)!r}) planned as order "
                                   f"{order_id}"])

    def test_a_refused_replaces_is_logged_before_the_plain_order(self):
        self.register()
        old = self.first_certificate()
        self.ca.fail_next("/new-order", 409, {"type": "urn:ietf:params:acme:error:alreadyReplaced",
                                              "detail": "already has a replacement order"})
        with LogLines(LOG) as log:
            _, issued = self.renew()
        self.assertEqual(issued.status, 201, issued.body)
        self.assertIn(f"newOrder replacing {self.cert_id(old)} refused (alreadyReplaced: already has "
                      f"a replacement order); ordering without replaces", log.lines)
        self.assertFalse([line for line in log.lines if "(ARI)" in line], log.lines)


class ConfirmedReadyTests(NewOrderStoreTestCase):
    """
    new-authz for a name whose valid authorization's order was never
    finalized: what the CA says of that order decides, and is stored.
    """

    ca_options = {"reuse_authorizations": False}

    def validated(self):
        self.register()
        url, _ = self.authorize()
        record = self.stored_authorization(url)
        (ca_order,) = self.ca.orders
        return url, record, ca_order

    def test_a_single_name_order_the_ca_no_longer_has_ready(self):
        url, record, ca_order = self.validated()
        ca_order.status = Status.INVALID
        reply = self.new_authz()
        self.assertEqual((reply.status, reply.json()["status"]), (201, "pending"))
        self.assertEqual(len(self.ca.orders), 2)
        self.assertEqual(self.successResultOf(self.gateway.store.order_by_id(record.order_id)).status,
                         Status.INVALID)

    def test_a_ca_failing_to_say_refuses_the_new_authz(self):
        url, record, ca_order = self.validated()
        before = self.successResultOf(self.gateway.store.order_by_id(record.order_id)).status
        self.ca.fail_next("/order/", 500, {"type": "serverInternal", "detail": "the CA broke"})
        reply = self.new_authz()
        self.assertEqual(reply.status // 100, 5, reply.body)
        self.assertEqual(len(self.ca.orders), 1, "nothing ordered")
        self.assertEqual(self.stored_authorization(url).status, Status.VALID)
        self.assertEqual(self.successResultOf(self.gateway.store.order_by_id(record.order_id)).status,
                         before)

    def test_an_order_the_ca_forgot_is_logged_and_the_authorization_dated(self):
        url, record, ca_order = self.validated()
        self.gateway.advance(120)
        self.client().nonce = None
        self.ca.fail_next("/order/", 404, {"type": "malformed", "detail": "No order for ID"})
        with LogLines(LOG) as log:
            reply = self.new_authz()
        self.assertEqual(reply.status, 201, reply.body)
        self.assertIn(f"new-authz: the CA no longer knows order {record.order_id}; ordering anew",
                      log.lines)
        expired = self.stored_authorization(url)
        self.assertEqual(expired.status, Status.EXPIRED)
        self.assertNotEqual(expired.updated_at, record.updated_at)


class ForeignAuthorizationTests(NewOrderStoreTestCase):

    def test_an_order_without_an_authorization_for_the_name_is_the_cas_fault_said_plainly(self):
        """
        A CA whose new order holds no authorization for the name asked
        (here: one for another name) is answered with a serverInternal
        that says so, not a traceback's words.
        """
        original = self.ca._new_authorization
        self.patch(self.ca, "_new_authorization",
                   lambda account, name: original(account, "other-" + name))
        self.register()
        problem = self.assertProblem(self.new_authz(), 500, "serverInternal")
        self.assertEqual(problem["detail"],
                         "The upstream order holds no authorization for the name")


class ConcurrentNewAuthzTests(NewOrderStoreTestCase):

    def test_a_new_authz_waiting_on_the_ca_holds_back_no_other_name(self):
        """
        ``new-authz`` waits for another only for the same account and name:
        while one account's order is in flight at the CA, another
        account's ``new-authz`` for another name is answered at once.
        """
        self.register(KEY)
        self.register(OTHER)
        self.ca.hold_next("/new-order")
        first = defer.Deferred.fromCoroutine(self.client(KEY).post(
            self.url("/acme/new-authz"),
            {"resource": "new-authz", "identifier": {"type": "dns", "value": NAME}}))
        self.assertNoResult(first)
        second = self.new_authz("other.example.test", key=OTHER)
        self.assertEqual(second.status, 201, second.body)
        self.assertEqual(second.json()["identifier"]["value"], "other.example.test")
        self.assertEqual(self.ca.release_held(), 1)
        self.gateway.flush()
        reply = self.successResultOf(first)
        self.assertEqual(reply.status, 201, reply.body)
        self.assertEqual(reply.json()["identifier"]["value"], NAME)


class StoredCandidateTests(NewOrderStoreTestCase):
    """
    Authorizations the account holds for the name that new-authz must not
    hand out again (`gateway.translate.authorizations.usable_view`).
    """

    ca_options = {"reuse_authorizations": False}

    def test_a_pending_authorization_past_its_expiry_is_not_offered_while_its_order_is_open(self):
        """
        A CA may give a newer order a pending authorization it made earlier
        (Boulder does), which then lapses before its order: past its
        expiry, it is not confirmed with the CA, let alone handed out.
        """
        self.register()
        first = self.new_authz()
        record = self.stored_authorization(first.header("location"))
        self.successResultOf(self.gateway.store.update_authorization(
            record.id, expires=format_timestamp(self.gateway.clock.seconds() - 60)))
        reads = self.ca.counts["authorization"]
        again = self.new_authz()
        self.assertEqual((again.status, again.json()["status"]), (201, "pending"), again.body)
        self.assertNotEqual(again.header("location"), first.header("location"))
        self.assertEqual(self.ca.counts["newOrder"], 2)
        self.assertEqual(self.ca.counts["authorization"], reads + 1, "the new order's only")

    def test_a_valid_authorization_stored_without_an_order_is_not_offered(self):
        """
        A valid authorization whose order the gateway does not know (stored
        with none) cannot be shown ready for a new-cert: new-authz orders
        anew.
        """
        self.register()
        upstream = v2.Authorization(
            url="https://ca.test/authz/orderless", identifier_type="dns", identifier=NAME,
            status=Status.VALID, expires=format_timestamp(self.gateway.clock.seconds() + 86400),
            wildcard=False, challenges=())
        self.resolve(record_authorization(self.gateway.context, self.account_id(), None, upstream))
        reply = self.new_authz()
        self.assertEqual((reply.status, reply.json()["status"]), (201, "pending"), reply.body)
        self.assertEqual(self.ca.counts["newOrder"], 1)

    def test_a_wildcard_is_never_answered_with_the_base_names_authorization(self):
        self.register()
        base = self.new_authz("w.example.test")
        self.assertEqual(base.status, 201, base.body)
        reply = self.new_authz("*.w.example.test")
        self.assertEqual(reply.status, 201, reply.body)
        self.assertNotEqual(reply.header("location"), base.header("location"))
        self.assertEqual(reply.json()["identifier"], {"type": "dns", "value": "*.w.example.test"})
        self.assertEqual(self.ca.counts["newOrder"], 2)

    def assert_ordered_afresh(self, url):
        """
        A new-authz for the name gets a new pending authorization, not
        ``url``'s, and the CA is asked about nothing but the new order's.
        """
        reads = self.ca.counts["authorization"]
        reply = self.new_authz()
        self.assertEqual((reply.status, reply.json()["status"]), (201, "pending"), reply.body)
        self.assertNotEqual(reply.header("location"), url)
        self.assertEqual(self.ca.counts["authorization"], reads + 1, "the new order's only")

    def test_an_invalid_authorization_is_not_even_asked_about(self):
        self.register()
        self.ca.validator = lambda *args: False
        url, answered = self.authorize()
        self.assertEqual(answered.status, 202, answered.body)
        self.assertEqual(self.stored_authorization(url).status, Status.INVALID)
        self.assert_ordered_afresh(url)

    def test_an_authorization_stored_expired_is_not_asked_about_again(self):
        """
        One the CA no longer knew when it was read (stored as expired) is
        not confirmed with the CA at the next new-authz for the name.
        """
        self.register()
        first = self.new_authz()
        url = first.header("location")
        self.gateway.advance(60)
        self.client().nonce = None
        self.ca.fail_next("/authz/", 404, {"type": "malformed", "detail": "No such authorization"})
        self.assertProblem(self.get(url[len(self.base):]), 404, "malformed")
        self.assertEqual(self.stored_authorization(url).status, Status.EXPIRED)
        self.assert_ordered_afresh(url)


class StoredCandidateWithoutPlanningTests(StoredCandidateTests):
    """The same without renewal planning: new-authz reads the candidates itself."""

    gateway_options = {"plan_renewals": False}

class PlanTests(RenewalTestCase):
    """
    Which open planned order answers a renewal's new-authz
    (`gateway.translate.authorizations._planned_view`).
    """

    def two_certificates(self):
        self.register()
        self.assertEqual(self.issue(NAMES).status, 201)
        self.assertEqual(self.issue(("d.renew.test",)).status, 201)
        self.ca.reuse_authorizations = False
        self.gateway.advance(60 * 86400)
        for client in self.clients.values():
            client.nonce = None  # expired meanwhile

    def order_of(self, reply):
        return self.stored_authorization(reply.header("location")).order_id

    def test_a_newer_plan_for_other_names_does_not_hide_an_older_one(self):
        self.two_certificates()
        first = self.new_authz(NAMES[0])
        self.gateway.advance(1)
        other = self.new_authz("d.renew.test")
        self.assertNotEqual(self.order_of(other), self.order_of(first))
        orders = self.ca.counts["newOrder"]
        second = self.new_authz(NAMES[1])
        self.assertEqual((second.status, second.json()["status"]), (201, "pending"), second.body)
        self.assertEqual(self.order_of(second), self.order_of(first))
        self.assertEqual(self.ca.counts["newOrder"], orders)

    def test_one_accounts_plan_waiting_on_the_ca_holds_back_no_other_account(self):
        self.register()
        self.first_certificate()
        self.register(OTHER)
        self.ca.hold_next("/new-order")
        planning = defer.Deferred.fromCoroutine(self.client(KEY).post(
            self.url("/acme/new-authz"),
            {"resource": "new-authz", "identifier": {"type": "dns", "value": NAMES[0]}}))
        self.assertNoResult(planning)
        other = self.new_authz("x.other.test", key=OTHER)
        self.assertEqual(other.status, 201, other.body)
        self.assertEqual(self.ca.release_held(), 1)
        self.gateway.flush()
        planned = self.successResultOf(planning)
        self.assertEqual(planned.status, 201, planned.body)
        self.assertEqual(sorted(self.ca.orders[-1].names), list(NAMES))

    def test_a_plans_authorization_validated_at_the_ca_meanwhile_is_answered_valid(self):
        """
        The plan's pending authorization for the name is valid at the CA
        now (validated behind the store's back): new-authz confirms it and
        that the plan's order still waits for its other names.
        """
        self.register()
        self.first_certificate()
        first = self.new_authz(NAMES[0])
        self.assertEqual(first.status, 201, first.body)
        ca_order = self.ca.orders[-1]
        next(a for a in ca_order.authorizations if a.identifier == NAMES[1]).status = Status.VALID
        orders = self.ca.counts["newOrder"]
        second = self.new_authz(NAMES[1])
        self.assertEqual((second.status, second.json()["status"]), (201, "valid"), second.body)
        self.assertEqual(self.order_of(second), self.order_of(first))
        self.assertEqual(self.ca.counts["newOrder"], orders)

    def test_a_plans_fresh_authorization_shows_the_clients_key_authorizations(self):
        self.register()
        self.assertEqual(self.issue(NAMES).status, 201)
        self.gateway.advance(3600)
        for client in self.clients.values():
            client.nonce = None
        self.assertEqual(self.new_authz(NAMES[0]).json()["status"], "valid")
        reads = self.ca.counts["authorization"]
        reply = self.new_authz(NAMES[1])
        self.assertEqual((reply.status, reply.json()["status"]), (201, "valid"), reply.body)
        self.assertEqual(self.ca.counts["authorization"], reads, "answered from the store")
        self.assertEqual([c["keyAuthorization"] for c in reply.json()["challenges"]],
                         [KEY.key_authorization(c["token"]) for c in reply.json()["challenges"]])
