"""
`gateway.translate.accounts` at its edges (issue 21): the words of each
refusal of a signer, the upstream account made for a stored account at a
new CA (its contact, its agreement, the log line), External Account
Binding refusals (each code the CA may refuse a binding with, a refusal
without detail, a CA that asks for a binding only by its problem), and a CA
that lost an account (only that account's authorizations expire).  Through
whole in-memory gateways over the FakeCA, and `create_upstream_account`
against the FakeCA for refusals a whole flow cannot script.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric import ec
from twisted.internet import defer
from twisted.logger import formatEvent, globalLogPublisher

from gateway.keys.jose import AccountKey, b64url
from gateway.process.testing import FakeCA, build_test_gateway
from gateway.status import Status
from gateway.store.records import format_timestamp
from gateway.translate.accounts import create_upstream_account
from gateway.translate.bindings import AccountBindings
from gateway.translate.context import Policy
from gateway.translate.errors import ExternalAccountRequired
from gateway.upstream.errors import UpstreamProblem
from gateway.upstream.messages import ExternalAccountKey
from tests.support.v1_client import V1TestClient
from tests.test_v1_face import KEY, NAME, NEW, OTHER, FaceTestCase, make_csr

EAB_KEY = b"\x01" * 32


class LogCapture:
    def capture_log(self):
        self.events = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def logged(self, fragment):
        return [formatEvent(e) for e in self.events if fragment in (e.get("log_format") or "")]


class SignerRefusalTests(FaceTestCase):

    def test_a_key_a_key_change_replaced(self):
        reg_url = self.register()
        self.assertEqual(self.post("/acme/key-change",
                                   self.key_change_payload(NEW, reg_url)).status, 200)
        problem = self.assertProblem(self.new_authz(key=KEY), 403, "unauthorized")
        self.assertEqual(problem["detail"], "No registration exists matching provided key "
                                            "(this key was replaced by a key change)")

    def test_a_deactivated_registration(self):
        reg_url = self.register()
        self.assertEqual(self.post(reg_url, {"resource": "reg", "status": "deactivated"}).status, 200)
        problem = self.assertProblem(self.new_authz(), 403, "unauthorized")
        self.assertEqual(problem["detail"], "Registration is not valid, has status 'deactivated'")


class NewCATests(LogCapture, FaceTestCase):
    """
    A stored account meets a CA that has never seen its key (the gateway
    restarted with another ``--upstream``): the account is made there with
    the stored contact and agreement, once, and logged.
    """

    def switch(self, policy=Policy()):
        old = self.ca
        new = FakeCA(base_url="https://ca-b.test", clock=self.gateway.clock)
        store = self.gateway.store
        store.upstream = new.directory_url
        self.gateway = build_test_gateway(self.keys, ca=new, store=store, other_cas=[old],
                                          policy=policy)
        self.ca = new
        self.clients = {}
        return new

    def test_the_account_is_made_with_what_the_gateway_stored(self):
        self.capture_log()
        self.register(contact=["mailto:kept@example.test"])
        new = self.switch(Policy(agree_to_terms=False))
        self.assertEqual(self.new_authz().status, 201)
        (account,) = new.accounts.values()
        self.assertEqual(list(account.contact), ["mailto:kept@example.test"])
        self.assertTrue(account.terms_agreed)
        stored = self.successResultOf(self.gateway.store.account_by_id(1))
        self.assertEqual(stored.upstream_url, account.url)
        self.assertEqual(self.logged("created upstream account"),
                         [f"created upstream account {account.url} for key {KEY.thumbprint}"])
        made = new.counts["newAccount"]
        self.assertEqual(self.new_authz("two.example.test").status, 201)
        self.assertEqual(new.counts["newAccount"], made)

    def test_an_account_the_new_ca_knows_is_attached_not_made(self):
        self.capture_log()
        self.register()
        new = self.switch()
        before = build_test_gateway([KEY], ca=new)
        client = V1TestClient(before.base_url, KEY, http=before.client)
        self.assertEqual(self.resolve(client.post(before.url("/acme/new-reg"), {
            "resource": "new-reg"})).status, 201)
        self.assertEqual(self.new_authz().status, 201)
        self.assertEqual(len(new.accounts), 1)
        self.assertEqual(self.logged("created upstream account"), [])
        stored = self.successResultOf(self.gateway.store.account_by_id(1))
        self.assertEqual(stored.upstream_url, new.accounts[1].url)

    def test_without_an_agreement_terms_are_not_agreed_for_the_client(self):
        """
        A registration that never agreed, with ``--agree-to-terms`` off: at
        a CA that asks for terms, the new account is refused as the client
        must agree first.
        """
        self.post("/acme/new-reg", {"resource": "new-reg"})
        self.switch(Policy(agree_to_terms=False))
        problem = self.assertProblem(self.new_authz(), 403, "unauthorized")
        self.assertIn("agree", problem["detail"])
        self.assertEqual(len(self.ca.accounts), 0)


class CreateUpstreamAccountTests(FaceTestCase):
    """
    `create_upstream_account` against the FakeCA, with refusals scripted.
    """

    def create(self, bindings=AccountBindings(), key=KEY):
        return defer.ensureDeferred(create_upstream_account(
            self.gateway.upstream, bindings, key, contact=("mailto:a@example.test",)))

    def test_a_ca_asking_for_a_binding_by_its_problem_only(self):
        self.ca.fail_next("/new-account", 400, {"type": "externalAccountRequired",
                                                "detail": "bind it"})
        error = self.failureResultOf(self.create(), ExternalAccountRequired).value
        self.assertEqual(str(error.detail if hasattr(error, "detail") else error),
                         f"The upstream CA ({self.ca.directory_url}) creates accounts only with an "
                         f"External Account Binding, and the gateway has none for key "
                         f"{KEY.thumbprint}: start it with --eab-kid KID --eab-hmac-key KEY (the "
                         f"credentials the CA gave you), or give this key its own in --eab-file.")

    def test_other_refusals_without_a_binding_are_the_cas(self):
        self.ca.fail_next("/new-account", 400, {"type": "malformed", "detail": "no"})
        problem = self.failureResultOf(self.create(), UpstreamProblem).value
        self.assertEqual(problem.code, "malformed")

    def test_each_refusal_of_a_binding(self):
        bindings = AccountBindings(default=ExternalAccountKey("kid-1", EAB_KEY))
        for code in ("unauthorized", "malformed", "badPublicKey", "externalAccountRequired"):
            self.ca.fail_next("/new-account", 400, {"type": code, "detail": "refused"})
            error = self.failureResultOf(self.create(bindings), ExternalAccountRequired).value
            self.assertEqual(
                str(error.detail if hasattr(error, "detail") else error),
                f"The upstream CA ({self.ca.directory_url}) refused the External Account "
                f"Binding the gateway sent for key {KEY.thumbprint} (--eab-kid kid-1): "
                f"refused. Check --eab-kid and --eab-hmac-key; a CA whose keys bind one "
                f"account only needs one per account key (--eab-file).")
        self.ca.fail_next("/new-account", 400, {"type": "unauthorized", "detail": ""})
        error = self.failureResultOf(self.create(bindings), ExternalAccountRequired).value
        self.assertIn("(--eab-kid kid-1): unauthorized. Check",
                      str(error.detail if hasattr(error, "detail") else error))
        self.ca.fail_next("/new-account", 429, {"type": "rateLimited", "detail": "slow down"})
        self.assertEqual(self.failureResultOf(self.create(bindings), UpstreamProblem).value.code,
                         "rateLimited")
        self.assertEqual(len(self.ca.accounts), 0)


class LostAccountTests(LogCapture, FaceTestCase):

    def test_only_the_lost_accounts_authorizations_expire(self):
        """
        The CA forgot one account (KEY's) but not another (OTHER's): KEY's
        valid authorization is expired when the loss is noticed, OTHER's
        stays valid, and the re-attachment is logged.
        """
        self.capture_log()
        self.register(KEY)
        self.register(OTHER)
        mine, _ = self.authorize(NAME, KEY)
        pending = self.new_authz("pending.example.test", KEY).header("location")
        theirs, _ = self.authorize(NAME, OTHER)
        lost_url = self.ca.accounts[1].url
        self.ca.accounts[1].url = self.ca.url("/acct/found-again")  # acct/1 is unknown now
        self.assertEqual(self.new_authz("other.example.test", KEY).status, 201)
        stored = self.successResultOf(self.gateway.store.account_by_thumbprint(KEY.thumbprint))
        self.assertEqual(stored.upstream_url, self.ca.url("/acct/found-again"))

        def status(url):
            record = self.successResultOf(
                self.gateway.store.authorization_by_id(url.rsplit("/", 1)[1]))
            return record.status

        self.assertEqual((status(mine), status(pending), status(theirs)),
                         (Status.EXPIRED, Status.EXPIRED, Status.VALID))
        expired = self.successResultOf(
            self.gateway.store.authorization_by_id(mine.rsplit("/", 1)[1]))
        self.assertEqual(expired.updated_at, format_timestamp(self.gateway.clock.seconds()))
        # (each request signed with the old URL meets the loss, and logs it)
        self.assertEqual(set(self.logged("upstream lost account")),
                         {f"upstream lost account {lost_url}; re-attached as {stored.upstream_url}"})


class AdoptionTests(FaceTestCase):
    """
    First sight of a key the gateway holds (a client migrating without
    new-reg): the registration recorded from the CA's account.
    """

    def test_a_key_the_ca_knows_is_adopted_with_the_cas_contact(self):
        elsewhere = build_test_gateway([KEY], ca=self.ca)
        client = V1TestClient(elsewhere.base_url, KEY, http=elsewhere.client)
        self.assertEqual(self.resolve(client.post(elsewhere.url("/acme/new-reg"), {
            "resource": "new-reg", "contact": ["mailto:at-the-ca@example.test"]})).status, 201)
        self.assertEqual(self.new_authz().status, 201)
        stored = self.successResultOf(self.gateway.store.account_by_id(1))
        self.assertEqual(stored.contact, ("mailto:at-the-ca@example.test",))
        self.assertEqual(stored.upstream_url, self.ca.accounts[1].url)
        self.assertIsNone(stored.agreement)
        self.assertTrue(stored.initial_ip)
        self.assertEqual(len(self.ca.accounts), 1)

    def test_without_agree_to_terms_a_new_key_is_not_agreed_for(self):
        gateway = build_test_gateway([KEY], policy=Policy(agree_to_terms=False))
        client = V1TestClient(gateway.base_url, KEY, http=gateway.client)
        reply = self.resolve(client.post(gateway.url("/acme/new-authz"), {
            "resource": "new-authz", "identifier": {"type": "dns", "value": NAME}}))
        self.assertEqual(reply.status, 403, reply.body)
        self.assertIn("agree", reply.json()["detail"])
        self.assertEqual(len(gateway.ca.accounts), 0)

    def test_a_replica_adopting_the_same_key_meanwhile(self):
        """
        Two gateways sharing one store see a key first at once: the one
        whose CA lookup was held finds the other's registration and serves
        the request.
        """
        replica = build_test_gateway([KEY], ca=self.ca, store=self.gateway.store)
        self.ca.hold_next("/new-account")
        authorizing = defer.ensureDeferred(self.client().post(self.url("/acme/new-authz"), {
            "resource": "new-authz", "identifier": {"type": "dns", "value": NAME}}))
        client = V1TestClient(replica.base_url, KEY, http=replica.client)
        reply = self.resolve(client.post(replica.url("/acme/new-authz"), {
            "resource": "new-authz", "identifier": {"type": "dns", "value": "two.example.test"}}))
        self.assertEqual(reply.status, 201, reply.body)
        self.assertEqual(self.ca.release_held(), 1)
        self.gateway.flush()
        reply = self.successResultOf(authorizing)
        self.assertEqual(reply.status, 201, reply.body)
        accounts = self.successResultOf(self.gateway.store.list_accounts())
        self.assertEqual([a.id for a in accounts], [1])

    def test_an_account_the_ca_moved_needs_no_binding_to_be_found(self):
        """
        A CA that requires External Account Binding moved the account
        (made with a binding, by a gateway that had one); a gateway on the
        same store without binding credentials finds it by key, rather
        than asking to make one.
        """
        ca = FakeCA(eab_keys={"kid-1": EAB_KEY}, eab_required=True)
        binding = AccountBindings(default=ExternalAccountKey("kid-1", EAB_KEY))
        first = build_test_gateway([KEY], ca=ca, bindings=binding)
        client = V1TestClient(first.base_url, KEY, http=first.client)
        self.assertEqual(self.resolve(client.post(first.url("/acme/new-reg"), {
            "resource": "new-reg"})).status, 201)
        unbound = build_test_gateway([KEY], ca=ca, store=first.store)
        ca.accounts[1].url = ca.url("/acct/found-again")
        client = V1TestClient(unbound.base_url, KEY, http=unbound.client)
        reply = self.resolve(client.post(unbound.url("/acme/new-authz"), {
            "resource": "new-authz", "identifier": {"type": "dns", "value": NAME}}))
        self.assertEqual(reply.status, 201, reply.body)
        stored = self.successResultOf(unbound.store.account_by_id(1))
        self.assertEqual(stored.upstream_url, ca.url("/acct/found-again"))

    def test_an_account_made_again_agrees_only_with_agree_to_terms(self):
        """
        Without ``--agree-to-terms``, an account the CA forgot entirely is
        not made again on the client's behalf at a CA that asks for terms:
        the request is refused, and no account appears there.
        """
        gateway = build_test_gateway([KEY], policy=Policy(agree_to_terms=False))
        client = V1TestClient(gateway.base_url, KEY, http=gateway.client)
        self.assertEqual(self.resolve(client.post(gateway.url("/acme/new-reg"), {
            "resource": "new-reg", "agreement": gateway.url("/terms")})).status, 201)
        gateway.ca.accounts.clear()
        reply = self.resolve(client.post(gateway.url("/acme/new-authz"), {
            "resource": "new-authz", "identifier": {"type": "dns", "value": NAME}}))
        self.assertEqual(reply.status, 403, reply.body)
        self.assertIn("agree", reply.json()["detail"])
        self.assertEqual(gateway.ca.accounts, {})

    def test_a_migrating_key_costs_one_lookup_and_one_creation(self):
        """
        A key the CA has never seen, first used with new-authz: one
        ``onlyReturnExisting`` lookup, one creation, and the URL recorded at
        once -- the next requests ask the CA nothing about the account.
        """
        self.assertEqual(self.new_authz().status, 201)
        self.assertEqual(self.ca.counts["newAccount"], 2)
        stored = self.successResultOf(self.gateway.store.account_by_id(1))
        self.assertEqual(stored.upstream_url, self.ca.accounts[1].url)
        self.assertEqual(self.new_authz("two.example.test").status, 201)
        self.assertEqual(self.ca.counts["newAccount"], 2)


class KeyLeftTheStoreTests(FaceTestCase):
    """
    An account whose key the gateway no longer holds (restarted without
    it), and managed mode's keys.
    """

    def test_revoking_as_an_issuer_whose_key_left_names_that_key(self):
        """
        A certificate revoked with its own key (not held) is revoked as its
        issuing account; that account's key left the store: the refusal
        names the issuing account's key, the one to import.
        """
        certificate_key = AccountKey.from_private_key(ec.generate_private_key(ec.SECP256R1()))
        self.register()
        self.authorize(NAME)
        reply = self.post("/acme/new-cert", {"resource": "new-cert", "csr": b64url(
            make_csr([NAME], key=certificate_key.private_key))})
        self.assertEqual(reply.status, 201, reply.body)
        restarted = build_test_gateway([OTHER], ca=self.ca, store=self.gateway.store)
        client = V1TestClient(restarted.base_url, certificate_key, http=restarted.client)
        revoked = self.resolve(client.post(restarted.url("/acme/revoke-cert"), {
            "resource": "revoke-cert", "certificate": b64url(reply.body)}))
        problem = self.assertProblem(revoked, 403, "unauthorized", "key store")
        self.assertIn(f"JWK thumbprint {KEY.thumbprint} is not", problem["detail"])
        self.assertIsNone(self.ca.certificates[0].revoked_reason)

    def test_a_held_key_in_managed_mode_is_adopted_at_its_registration_url(self):
        """
        Managed mode refuses keys it has never seen at a registration URL;
        a key the gateway holds is not one of those: its first request,
        to its thumbprint's registration URL, adopts its account (202).
        """
        gateway = build_test_gateway([KEY], unknown_keys="managed", managed_keys=self.mktemp())
        client = V1TestClient(gateway.base_url, KEY, http=gateway.client)
        reply = self.resolve(client.post(gateway.url(f"/acme/reg/{KEY.thumbprint}"), {
            "resource": "reg", "contact": ["mailto:new@example.test"]}))
        self.assertEqual(reply.status, 202, reply.body)
        self.assertEqual(list(gateway.ca.accounts[1].contact), ["mailto:new@example.test"])

    def test_a_key_with_an_account_is_adopted_without_a_binding(self):
        """
        At a CA that requires External Account Binding, a key whose account
        was made elsewhere (with a binding) is adopted by a gateway that has
        no binding credentials: found by key, not made.
        """
        ca = FakeCA(eab_keys={"kid-1": EAB_KEY}, eab_required=True)
        elsewhere = build_test_gateway(
            [KEY], ca=ca, bindings=AccountBindings(default=ExternalAccountKey("kid-1", EAB_KEY)))
        client = V1TestClient(elsewhere.base_url, KEY, http=elsewhere.client)
        self.assertEqual(self.resolve(client.post(elsewhere.url("/acme/new-reg"), {
            "resource": "new-reg"})).status, 201)
        unbound = build_test_gateway([KEY], ca=ca)
        client = V1TestClient(unbound.base_url, KEY, http=unbound.client)
        reply = self.resolve(client.post(unbound.url("/acme/new-authz"), {
            "resource": "new-authz", "identifier": {"type": "dns", "value": NAME}}))
        self.assertEqual(reply.status, 201, reply.body)
        self.assertEqual(len(ca.accounts), 1)
