"""
Renewals as a 2026 CA wants them (issue 14), through whole in-memory
gateways over a `FakeCA`: one planned order per renewal answered through
``new-authz``, ARI ``replaces`` and its refusals, the wrong guess, profiles
chosen per client, External Account Binding, the renewal-info poller, and which
of a plan's authorizations new-authz answers from the store.
"""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtensionOID

from twisted.internet import defer

from gateway.keys.jose import b64url
from gateway.process.testing import FakeCA, build_test_gateway
from gateway.status import Status
from gateway.store.leaf import leaf_facts, serial_der_bytes
from gateway.store.records import format_timestamp
from gateway.translate.authorizations import HONOUR_MARGIN_SECONDS
from gateway.translate.bindings import AccountBindings
from gateway.translate.inventory import ari_cert_id
from gateway.translate.profiles import ProfilePolicy, ProfileRule
from gateway.upstream.messages import ExternalAccountKey
from tests.test_v1_face import KEY, OTHER, FaceTestCase, make_csr

NAMES = ("a.renew.test", "b.renew.test", "c.renew.test")


class RenewalTestCase(FaceTestCase):
    """
    A gateway over a FakeCA that reuses authorizations for the first
    issuance (so three single-name orders can make a 3-name certificate
    without a means), and then reuses none.
    """

    ca_options: dict = {"renewal_info": True}
    gateway_options: dict = {}

    def setUp(self):
        self.gateway = build_test_gateway(self.keys, ca=FakeCA(**self.ca_options),
                                          **self.gateway_options)
        self.ca = self.gateway.ca
        self.base = self.gateway.base_url
        self.clients = {}

    def new_cert(self, names, key=KEY):
        return self.post("/acme/new-cert", {"resource": "new-cert",
                                            "csr": b64url(make_csr(list(names)))}, key=key)

    def first_certificate(self, names=NAMES, later=60 * 86400) -> x509.Certificate:
        """
        The certificate to renew; then two months pass (the orders and
        authorizations of its issuance lapse) and the CA reuses nothing.
        """
        reply = self.issue(names)
        self.assertEqual(reply.status, 201, reply.body)
        self.ca.reuse_authorizations = False
        self.gateway.advance(later)
        for client in self.clients.values():
            client.nonce = None  # expired meanwhile
        return x509.load_der_x509_certificate(reply.body)

    def renew(self, names=NAMES, csr_names=None):
        """
        certbot's renewal: new-authz and the challenge for each name, then
        new-cert; the authorization replies and the new-cert reply.
        """
        replies = []
        for name in names:
            url, answered = self.authorize(name)
            self.assertEqual(answered.status, 202, answered.body)
            replies.append(self.get(url[len(self.base):]))
        return replies, self.new_cert(csr_names or names)

    def stored_authorization(self, url):
        return self.successResultOf(self.gateway.store.authorization_by_id(url.rsplit("/", 1)[1]))


class PlannedRenewalTests(RenewalTestCase):

    def test_a_three_name_renewal_costs_one_order_without_reuse_or_means(self):
        """
        The first new-authz of the renewal orders the certificate's three
        names at once; each new-authz is answered with that order's
        authorization; new-cert finalizes it.  The CA reused nothing and
        the gateway has no means: the client validated every name of the
        order it finalized.
        """
        self.register()
        old = self.first_certificate()
        orders = self.ca.counts["newOrder"]
        self.assertEqual(orders, 4, "the first issuance: three new-authz and new-cert")
        _, issued = self.renew()
        self.assertEqual(issued.status, 201, issued.body)
        self.assertEqual(self.ca.counts["newOrder"] - orders, 1)
        order = self.ca.orders[-1]
        self.assertEqual(sorted(order.names), list(NAMES))
        self.assertEqual(order.status, Status.VALID)
        new = x509.load_der_x509_certificate(issued.body)
        self.assertNotEqual(new.serial_number, old.serial_number)
        self.assertEqual(set(new.extensions.get_extension_for_class(
            x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)), set(NAMES))

    def test_each_new_authz_of_the_renewal_is_the_planned_orders(self):
        self.register()
        self.first_certificate()
        planned = set()
        for name in NAMES:
            reply = self.new_authz(name)
            self.assertEqual((reply.status, reply.json()["status"]), (201, "pending"))
            planned.add(self.stored_authorization(reply.header("location")).order_id)
        self.assertEqual(len(planned), 1, "one order answers every new-authz")
        (order_id,) = planned
        order = self.successResultOf(self.gateway.store.order_by_id(order_id))
        self.assertEqual(order.identifiers, NAMES)
        self.assertIsNotNone(order.planned_for)

    def test_a_renewal_with_reused_authorizations_costs_what_a_native_client_spends(self):
        """
        When the CA hands the planned order valid (reused) authorizations,
        each later new-authz of the renewal is answered from the store: no
        order read per name.  A native v2 client spends one newOrder, one
        read per authorization, finalize, at most one order poll and the
        download.
        """
        self.register()
        self.assertEqual(self.issue(NAMES).status, 201)
        self.gateway.advance(3600)
        for client in self.clients.values():
            client.nonce = None  # expired meanwhile
        before = dict(self.ca.counts)
        for name in NAMES:
            # Valid already: certbot answers no challenge, as here.
            reply = self.new_authz(name)
            self.assertEqual((reply.status, reply.json()["status"]), (201, "valid"), reply.body)
        issued = self.new_cert(NAMES)
        self.assertEqual(issued.status, 201, issued.body)
        spent = {kind: self.ca.counts[kind] - before.get(kind, 0)
                 for kind in ("newOrder", "authorization", "challenge", "finalize", "order",
                              "certificate")}
        self.assertEqual(spent["newOrder"], 1)
        self.assertLessEqual(spent["order"], 1, spent)
        self.assertLessEqual(spent["authorization"], len(NAMES), spent)
        self.assertLessEqual(sum(spent.values()), 1 + len(NAMES) + 1 + 1 + 1, spent)

    def test_the_planned_order_replaces_the_certificate_ari(self):
        self.register()
        old = self.first_certificate()
        _, issued = self.renew()
        self.assertEqual(issued.status, 201, issued.body)
        order = self.ca.orders[-1]
        aki = old.extensions.get_extension_for_oid(
            ExtensionOID.AUTHORITY_KEY_IDENTIFIER).value.key_identifier
        expected = f"{b64url(aki)}.{b64url(serial_der_bytes(old.serial_number))}"
        self.assertEqual(order.replaces, expected)
        replaced = next(c for c in self.ca.certificates if c.certificate.serial_number
                        == old.serial_number)
        self.assertEqual(replaced.replaced_by, order.id)
        stored = self.successResultOf(self.gateway.store.order_by_id(
            self.successResultOf(self.gateway.store.certificate_by_serial(
                format(x509.load_der_x509_certificate(issued.body).serial_number, "x"))).order_id))
        self.assertEqual(stored.replaces, expected)

    def test_a_second_renewal_replaces_the_first_renewal(self):
        self.register()
        self.first_certificate()
        _, first = self.renew()
        self.assertEqual(first.status, 201, first.body)
        orders = self.ca.counts["newOrder"]
        _, second = self.renew()
        self.assertEqual(second.status, 201, second.body)
        self.assertEqual(self.ca.counts["newOrder"] - orders, 1)
        renewed = x509.load_der_x509_certificate(first.body)
        self.assertEqual(self.ca.orders[-1].replaces.split(".")[1],
                         b64url(serial_der_bytes(renewed.serial_number)))

    def test_a_refused_replaces_falls_back_to_a_plain_order(self):
        self.register()
        self.first_certificate()
        self.ca.fail_next("/new-order", 409, {"type": "urn:ietf:params:acme:error:alreadyReplaced",
                                              "detail": "already has a replacement order"})
        orders = self.ca.counts["newOrder"]
        _, issued = self.renew()
        self.assertEqual(issued.status, 201, issued.body)
        self.assertEqual(self.ca.counts["newOrder"] - orders, 2, "the refused one, then a plain one")
        self.assertIsNone(self.ca.orders[-1].replaces)
        attempts = self.gateway.store._database.execute(
            "SELECT status FROM order_attempts ORDER BY rowid").fetchall()
        self.assertIn("refused", [row[0] for row in attempts])

    def test_a_single_name_renewal_is_one_order_with_replaces(self):
        self.register()
        self.first_certificate(("solo.renew.test",))
        orders = self.ca.counts["newOrder"]
        _, issued = self.renew(("solo.renew.test",))
        self.assertEqual(issued.status, 201, issued.body)
        self.assertEqual(self.ca.counts["newOrder"] - orders, 1)
        self.assertIsNotNone(self.ca.orders[-1].replaces)

    def test_new_authz_never_returns_a_used_authorization_of_a_plan(self):
        """
        Issue 12's rule holds for planned orders: once the renewal is
        finalized, the next new-authz for a name plans anew (pending), it
        never returns the valid authorization the last certificate used.
        """
        self.register()
        self.first_certificate()
        replies, issued = self.renew()
        self.assertEqual(issued.status, 201)
        used = {r.header("location") for r in replies}
        reply = self.new_authz(NAMES[0])
        self.assertEqual(reply.json()["status"], "pending")
        self.assertNotIn(reply.header("location"), used)

    def test_another_accounts_certificate_plans_nothing(self):
        self.register()
        self.first_certificate()
        self.register(key=OTHER)
        orders = self.ca.counts["newOrder"]
        reply = self.new_authz(NAMES[0], key=OTHER)
        self.assertEqual(reply.status, 201)
        self.assertEqual(self.ca.counts["newOrder"] - orders, 1)
        self.assertEqual(self.ca.orders[-1].names, [NAMES[0]], "a single-name order")


class WrongGuessTests(RenewalTestCase):

    def test_a_csr_for_other_names_falls_back_and_deactivates_the_unused(self):
        """
        The client renews only the first name: its new-cert names one name,
        not the planned three.  The two authorizations it never answered
        are deactivated at the CA, and it still gets its certificate (here
        the CA reuses its validated authorization).
        """
        self.register()
        self.first_certificate()
        self.ca.reuse_authorizations = True
        orders = self.ca.counts["newOrder"]
        url, _ = self.authorize(NAMES[0])
        plan = self.stored_authorization(url).order_id
        issued = self.new_cert([NAMES[0]])
        self.assertEqual(issued.status, 201, issued.body)
        self.assertEqual(self.ca.counts["newOrder"] - orders, 2, "the plan, then the fallback")
        planned = next(o for o in self.ca.orders if len(o.names) == 3 and o.status != "valid"
                       and o is self.ca.orders[-2])
        statuses = {a.identifier: a.status for a in planned.authorizations}
        self.assertEqual(statuses, {NAMES[0]: "valid", NAMES[1]: "deactivated",
                                    NAMES[2]: "deactivated"})
        self.assertEqual(self.successResultOf(self.gateway.store.order_by_id(plan)).status,
                         "invalid")

    def test_without_reuse_the_fallback_is_todays_answer(self):
        self.register()
        self.first_certificate()
        self.authorize(NAMES[0])
        issued = self.new_cert([NAMES[0]])
        self.assertEqual(issued.status, 403, issued.body)
        self.assertIn("not found or expired", issued.json()["detail"])


class WithoutARITests(RenewalTestCase):
    """
    A CA without renewalInfo (Debian's Pebble 2.4): still one planned order,
    without replaces.
    """

    ca_options = {"renewal_info": False}

    def test_one_order_without_replaces(self):
        self.register()
        self.first_certificate()
        orders = self.ca.counts["newOrder"]
        _, issued = self.renew()
        self.assertEqual(issued.status, 201, issued.body)
        self.assertEqual(self.ca.counts["newOrder"] - orders, 1)
        self.assertIsNone(self.ca.orders[-1].replaces)
        self.assertEqual(self.ca.counts["renewalInfo"], 0)


class WithoutPlanningTests(RenewalTestCase):
    """
    What planning saves: without it a 3-name renewal without reuse fails
    (and the first issuance's path costs an order per name and one more).
    """

    gateway_options = {"plan_renewals": False}

    def test_without_planning_the_renewal_fails(self):
        self.register()
        self.first_certificate()
        _, issued = self.renew()
        self.assertEqual(issued.status, 403, issued.body)


class ProfileTests(RenewalTestCase):
    ca_options = {"profiles": {"classic": "90 days", "shortlived": "6 days"}}
    gateway_options = {"profiles": ProfilePolicy(default="classic", rules=(
        ProfileRule(profile="shortlived", user_agent="*shortlived-client*"),))}

    def test_default_and_rule_by_user_agent(self):
        self.register()
        self.authorize("p.renew.test")
        self.assertEqual(self.ca.orders[-1].profile, "classic")
        # The same account under another User-Agent: the rule matches.
        self.client().user_agent = "Mozilla shortlived-client/1.0"
        reply = self.new_authz("q.renew.test")
        self.assertEqual(reply.status, 201, reply.body)
        self.assertEqual(self.ca.orders[-1].profile, "shortlived")
        stored = self.stored_authorization(reply.header("location"))
        order = self.successResultOf(self.gateway.store.order_by_id(stored.order_id))
        self.assertEqual(order.profile, "shortlived")

    def test_a_planned_renewal_is_ordered_with_the_profile_of_the_clients_user_agent(self):
        self.register()
        self.first_certificate(names=("p.renew.test",))
        orders = self.ca.counts["newOrder"]
        self.client().user_agent = "Mozilla shortlived-client/1.0"
        reply = self.new_authz("p.renew.test")
        self.assertEqual(reply.status, 201, reply.body)
        self.assertEqual(self.ca.counts["newOrder"], orders + 1)
        self.assertEqual(self.ca.orders[-1].profile, "shortlived")
        stored = self.stored_authorization(reply.header("location"))
        order = self.successResultOf(self.gateway.store.order_by_id(stored.order_id))
        self.assertIsNotNone(order.planned_for, "the planned renewal")
        self.assertEqual(order.profile, "shortlived")

    def test_the_certificate_records_its_profile(self):
        self.register()
        reply = self.issue(("r.renew.test",))
        self.assertEqual(reply.status, 201, reply.body)
        serial = format(x509.load_der_x509_certificate(reply.body).serial_number, "x")
        stored = self.successResultOf(self.gateway.store.certificate_by_serial(serial))
        self.assertEqual(stored.profile, "classic")
        self.assertEqual(stored.names, ("r.renew.test",))


class ProfileByKeyAndNamesTests(RenewalTestCase):
    ca_options = {"profiles": {"classic": "90 days", "shortlived": "6 days"}}
    gateway_options = {"profiles": ProfilePolicy(default="classic", rules=(
        ProfileRule(profile="shortlived", thumbprint=KEY.thumbprint, names="*.renew.test"),))}

    def test_a_planned_renewal_is_ordered_with_the_profile_of_the_clients_key_and_names(self):
        self.register()
        self.first_certificate(names=("p.renew.test",))
        reply = self.new_authz("p.renew.test")
        self.assertEqual(reply.status, 201, reply.body)
        order = self.successResultOf(self.gateway.store.order_by_id(
            self.stored_authorization(reply.header("location")).order_id))
        self.assertIsNotNone(order.planned_for, "the planned renewal")
        self.assertEqual((order.profile, self.ca.orders[-1].profile), ("shortlived", "shortlived"))


EAB_KEY = b"\x01" * 32


class ExternalAccountBindingTests(RenewalTestCase):
    ca_options = {"eab_keys": {"kid-1": EAB_KEY}, "eab_required": True}
    gateway_options = {"bindings": AccountBindings(default=ExternalAccountKey("kid-1", EAB_KEY))}

    def test_new_accounts_are_bound(self):
        self.register()
        (account,) = self.ca.accounts.values()
        self.assertEqual(self.ca.bindings[account.id], "kid-1")
        self.assertEqual(self.issue(("eab.renew.test",)).status, 201)

    def test_a_migrating_client_is_bound_at_its_first_request(self):
        reply = self.new_authz("first.renew.test")
        self.assertEqual(reply.status, 201, reply.body)
        (account,) = self.ca.accounts.values()
        self.assertEqual(self.ca.bindings[account.id], "kid-1")


class PerKeyBindingTests(RenewalTestCase):
    ca_options = {"eab_keys": {"kid-1": EAB_KEY, "kid-2": b"\x02" * 32}, "eab_required": True}
    gateway_options = {"bindings": AccountBindings(
        default=ExternalAccountKey("kid-1", EAB_KEY),
        by_thumbprint={OTHER.thumbprint: ExternalAccountKey("kid-2", b"\x02" * 32)})}

    def test_the_file_form_wins_for_its_key(self):
        self.register()
        self.register(key=OTHER)
        kids = {self.ca.accounts[i].thumbprint: kid for i, kid in self.ca.bindings.items()}
        self.assertEqual(kids, {KEY.thumbprint: "kid-1", OTHER.thumbprint: "kid-2"})


class MissingBindingTests(RenewalTestCase):
    ca_options = {"eab_keys": {"kid-1": EAB_KEY}, "eab_required": True}

    def test_a_4xx_naming_the_flag_and_no_account_request(self):
        payload = {"resource": "new-reg", "contact": ["mailto:admin@example.test"]}
        reply = self.post("/acme/new-reg", payload)
        self.assertEqual(reply.status, 403, reply.body)
        problem = reply.json()
        self.assertEqual(problem["type"], "urn:acme:error:unauthorized")
        self.assertIn("--eab-kid", problem["detail"])
        self.assertEqual(self.ca.counts["newAccount"], 1, "only onlyReturnExisting was asked")


class RefusedBindingTests(RenewalTestCase):
    ca_options = {"eab_keys": {"kid-1": EAB_KEY}, "eab_required": True}
    gateway_options = {"bindings": AccountBindings(default=ExternalAccountKey("kid-1", b"wrong"))}

    def test_a_refused_binding_names_the_flags(self):
        reply = self.post("/acme/new-reg", {"resource": "new-reg"})
        self.assertEqual(reply.status, 403, reply.body)
        self.assertIn("refused the External Account Binding", reply.json()["detail"])
        self.assertIn("--eab-kid kid-1", reply.json()["detail"])


class RenewalInfoPollerTests(RenewalTestCase):

    def poll(self) -> int:
        return self.successResultOf(defer.Deferred.fromCoroutine(
            self.gateway.gateway.renewal_info.poll_due()))

    def test_windows_are_polled_twice_a_day_or_per_retry_after(self):
        self.register()
        old = self.first_certificate()
        self.assertEqual(self.poll(), 1)
        self.assertEqual(self.ca.counts["renewalInfo"], 1)
        (window,) = self.successResultOf(self.gateway.store.renewal_windows())
        facts = leaf_facts(old.public_bytes(Encoding.DER))
        self.assertEqual(window.cert_id.split(".")[1], b64url(facts.serial_der))
        self.assertFalse(window.opened_early)
        self.assertEqual(self.poll(), 0, "not due again yet")
        self.gateway.advance(21600 + 1)  # the FakeCA's Retry-After
        self.assertEqual(self.poll(), 1)

    def test_a_revoked_certificate_opens_its_window_early(self):
        """
        Revoked a day after issuance: the CA suggests renewing at once, long
        before half of the lifetime — flagged, in the report and metrics.
        """
        self.register()
        old = self.first_certificate(later=86400)
        self.poll()
        for certificate in self.ca.certificates:
            if certificate.certificate.serial_number == old.serial_number:
                certificate.revoked_reason = 1
        self.gateway.advance(21600 + 1)
        self.poll()
        (window,) = self.successResultOf(self.gateway.store.renewal_windows())
        self.assertTrue(window.opened_early)
        report = self.successResultOf(defer.Deferred.fromCoroutine(
            self.gateway.gateway.admin._report()))
        (held,) = report.certificates
        self.assertTrue(held.opened_early)
        self.assertIn("OPENED EARLY", report.as_text())
        (client,) = report.clients
        self.assertEqual(report.opened_early(client.client), (held,))
        self.assertIn("RENEW NOW", report.as_text())
        self.assertEqual(report.as_json()["clients"][0]["renewal_window_opened_early"], [held.id])
        page = self.successResultOf(defer.Deferred.fromCoroutine(
            self.gateway.gateway.admin.status_page(None))).body.decode()
        self.assertIn("opened early", page)
        scrape = self.gateway.gateway.metrics
        scrape.set_renewal_windows(report.certificates)
        body, _ = scrape.render("")
        self.assertIn(f'acme_gateway_renewal_window_opened_early{{account="{KEY.thumbprint}",'
                      f'serial="{format(old.serial_number, "x")}"}} 1.0', body.decode())

    def test_a_ca_without_ari_is_not_asked(self):
        self.ca.renewal_info = False
        self.gateway.upstream._directory = None
        self.register()
        self.first_certificate()
        self.assertEqual(self.poll(), 0)
        self.assertEqual(self.ca.counts["renewalInfo"], 0)


def test_ari_cert_id_matches_rfc_9773_example():
    """
    RFC 9773 §4.1's example: keyIdentifier 69:88:5B:6B:87:46:40:41:E1:B3:7B:84:7B:A0:AE:2C:DE:01:C8:D4
    and serial 00:87:65:43:21 give ``aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE``.
    """
    from gateway.store import Certificate

    certificate = Certificate(
        id="c", account_id=1, order_id=None, serial="87654321", leaf_der=b"",
        issuer_ids=(), upstream_url="", issued_at="2026-01-01T00:00:00Z",
        authority_key_id="69885b6b87464041e1b37b847ba0ae2cde01c8d4")
    assert ari_cert_id(certificate) == "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE"


class FreshInPlanTests(RenewalTestCase):
    """
    Which authorization of an open planned order a renewal's new-authz
    answers from the store (`gateway.translate.authorizations._fresh_in_plan`).
    """

    def planned_with_reuse(self):
        """The renewal planned with valid (reused) authorizations; the plan's stored ones."""
        self.register()
        self.assertEqual(self.issue(NAMES).status, 201)
        self.gateway.advance(3600)
        for client in self.clients.values():
            client.nonce = None  # expired meanwhile
        first = self.new_authz(NAMES[0])
        self.assertEqual((first.status, first.json()["status"]), (201, "valid"), first.body)
        order_id = self.stored_authorization(first.header("location")).order_id
        stored = self.successResultOf(self.gateway.store.authorizations_for_order(order_id))
        return order_id, {a.identifier: a for a in stored}

    def lapsing_soon(self):
        return format_timestamp(self.gateway.clock.seconds() + HONOUR_MARGIN_SECONDS - 60)

    def test_a_plans_valid_authorization_lapsing_soon_is_not_answered(self):
        _, stored = self.planned_with_reuse()
        lapsing = stored[NAMES[1]]
        self.successResultOf(self.gateway.store.update_authorization(
            lapsing.id, expires=self.lapsing_soon()))
        orders = self.ca.counts["newOrder"]
        reply = self.new_authz(NAMES[1])
        self.assertEqual(reply.status, 201, reply.body)
        # not answered from the store: the renewal is ordered again
        self.assertEqual(self.ca.counts["newOrder"], orders + 1)

    def test_a_plans_authorizations_are_not_answered_when_the_order_lapses_soon(self):
        order_id, _ = self.planned_with_reuse()
        self.successResultOf(self.gateway.store.update_order(order_id, expires=self.lapsing_soon()))
        orders = self.ca.counts["newOrder"]
        reply = self.new_authz(NAMES[1])
        self.assertEqual(reply.status, 201, reply.body)
        self.assertEqual(self.ca.counts["newOrder"], orders + 1)

    def test_a_plans_pending_authorization_is_confirmed_with_the_ca(self):
        self.register()
        self.first_certificate()
        first = self.new_authz(NAMES[0])
        self.assertEqual((first.status, first.json()["status"]), (201, "pending"))
        reads = self.ca.counts["authorization"]
        second = self.new_authz(NAMES[1])
        self.assertEqual((second.status, second.json()["status"]), (201, "pending"))
        self.assertEqual(self.ca.counts["authorization"], reads + 1)
