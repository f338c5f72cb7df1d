"""
`gateway.translate.registration` at its edges (issue 21): what a new
registration stores and sends upstream, a key the CA knows but this gateway
does not, a key a key change retired, a new-reg racing another request of
the same key (in this process, and in a replica sharing the store), and the
v2 ``newAccount`` forms.  Through whole in-memory gateways over the FakeCA.
"""

from __future__ import annotations

from twisted.internet import defer

from gateway.process.testing import FakeCA, build_test_gateway
from gateway.translate.context import Policy
from tests.support.v1_client import V1TestClient
from tests.test_v1_face import KEY, NAME, NEW, OTHER, FaceTestCase

CONTACT = "mailto:admin@example.test"


class NewRegistrationTests(FaceTestCase):

    def test_what_a_new_registration_stores_and_sends_upstream(self):
        """
        new-reg with a contact and an agreement: the CA account gets the
        contact, the reply shows both and the client's address, and the
        account's first new-authz needs no upstream account lookup.
        """
        reply = self.post("/acme/new-reg", {"resource": "new-reg", "contact": [CONTACT],
                                            "agreement": self.url("/terms")})
        self.assertEqual(reply.status, 201, reply.body)
        shown = reply.json()
        self.assertEqual(shown["contact"], [CONTACT])
        self.assertEqual(shown["agreement"], self.url("/terms"))
        self.assertEqual(list(self.ca.accounts[1].contact), [CONTACT])
        stored = self.successResultOf(self.gateway.store.account_by_id(1))
        self.assertEqual(stored.upstream_url, self.ca.accounts[1].url)
        self.assertTrue(stored.initial_ip)
        self.assertEqual(shown["initialIp"], stored.initial_ip)
        lookups = self.ca.counts["newAccount"]
        self.assertEqual(self.new_authz().status, 201)
        self.assertEqual(self.ca.counts["newAccount"], lookups)

    def test_a_new_registration_keeps_the_contact_the_client_sent(self):
        """
        A CA that keeps fewer contacts than it was sent (one, here): the new
        registration shows and stores the client's, as sent.
        """
        class OneContactCA(FakeCA):
            @staticmethod
            def _contact(payload):
                return FakeCA._contact(payload)[:1]

        gateway = build_test_gateway([KEY], ca=OneContactCA())
        client = V1TestClient(gateway.base_url, KEY, http=gateway.client)
        contact = [CONTACT, "mailto:second@example.test"]
        reply = self.resolve(client.post(gateway.url("/acme/new-reg"), {
            "resource": "new-reg", "contact": contact}))
        self.assertEqual(reply.status, 201, reply.body)
        self.assertEqual(reply.json()["contact"], contact)
        self.assertEqual(list(gateway.ca.accounts[1].contact), [CONTACT])

    def test_a_repeated_new_reg_asks_the_ca_nothing(self):
        location = self.register()
        before = dict(self.ca.counts)
        reply = self.post("/acme/new-reg", {"resource": "new-reg"})
        self.assertProblem(reply, 409, "malformed", "Registration key is already in use")
        self.assertEqual(reply.header("location"), location)
        self.assertEqual({k: v for k, v in self.ca.counts.items() if k not in ("newNonce",)},
                         {k: v for k, v in before.items() if k not in ("newNonce",)})

    def test_a_key_the_ca_knows_is_a_conflict_with_the_cas_contact(self):
        """
        A key with an account at the CA (made through another gateway) that
        this gateway has never seen: new-reg is a 409 with the registration
        it records, which keeps the CA's contact, not the new one.
        """
        elsewhere = build_test_gateway([KEY], ca=self.ca)
        client = V1TestClient(elsewhere.base_url, KEY, http=elsewhere.client)
        reply = self.resolve(client.post(elsewhere.url("/acme/new-reg"), {
            "resource": "new-reg", "contact": [CONTACT]}))
        self.assertEqual(reply.status, 201, reply.body)
        reply = self.post("/acme/new-reg", {"resource": "new-reg",
                                            "contact": ["mailto:other@example.test"]})
        self.assertProblem(reply, 409, "malformed", "already in use")
        self.assertEqual(reply.header("location"), self.url("/acme/reg/1"))
        stored = self.successResultOf(self.gateway.store.account_by_id(1))
        self.assertEqual(stored.contact, (CONTACT,))
        self.assertEqual(stored.upstream_url, self.ca.accounts[1].url)
        self.assertEqual(len(self.ca.accounts), 1)

    def test_a_retired_key_cannot_register_again(self):
        reg_url = self.register()
        self.assertEqual(self.post("/acme/key-change",
                                   self.key_change_payload(NEW, reg_url)).status, 200)
        reply = self.post("/acme/new-reg", {"resource": "new-reg"}, key=KEY)
        problem = self.assertProblem(reply, 403, "unauthorized")
        self.assertEqual(problem["detail"],
                         "This key was replaced by a key change and cannot register again")
        self.assertEqual(len(self.ca.accounts), 1)

    def test_new_reg_and_new_authz_of_one_key_at_once_make_one_account(self):
        """
        A new-reg whose upstream lookup is in flight, and a new-authz of the
        same key meanwhile: the new-authz waits for the registration, which
        is the one that creates the account (201).
        """
        self.ca.hold_next("/new-account")
        registering = defer.ensureDeferred(self.client().post(self.url("/acme/new-reg"), {
            "resource": "new-reg", "contact": [CONTACT]}))
        authorizing = defer.ensureDeferred(self.client().post(self.url("/acme/new-authz"), {
            "resource": "new-authz", "identifier": {"type": "dns", "value": NAME}}))
        self.assertNoResult(registering)
        self.assertEqual(self.ca.release_held(), 1)
        self.gateway.flush()
        registered = self.successResultOf(registering)
        self.assertEqual(registered.status, 201, registered.body)
        self.assertEqual(self.successResultOf(authorizing).status, 201)
        self.assertEqual(len(self.ca.accounts), 1)

    def test_a_replica_registering_the_same_key_meanwhile(self):
        """
        Two gateways sharing one store: while one's new-reg waits for the
        CA, the other registers the key.  The first answers 409 with the
        registration the other stored, not an error.
        """
        replica = build_test_gateway([KEY], ca=self.ca, store=self.gateway.store)
        self.ca.hold_next("/new-account")
        registering = defer.ensureDeferred(self.client().post(self.url("/acme/new-reg"), {
            "resource": "new-reg"}))
        client = V1TestClient(replica.base_url, KEY, http=replica.client)
        reply = self.resolve(client.post(replica.url("/acme/new-reg"), {"resource": "new-reg"}))
        self.assertEqual(reply.status, 201, reply.body)
        self.assertEqual(self.ca.release_held(), 1)
        self.gateway.flush()
        reply = self.successResultOf(registering)
        self.assertProblem(reply, 409, "malformed", "already in use")
        self.assertEqual(reply.header("location"), self.url("/acme/reg/1"))


class RegistrationUpdateTests(FaceTestCase):

    def test_an_unchanged_contact_is_not_sent_upstream(self):
        reg_url = self.register()
        before = self.ca.counts["account"]
        reply = self.post(reg_url, {"resource": "reg", "contact": ["mailto:admin@example.test"]})
        self.assertEqual(reply.status, 202, reply.body)
        self.assertEqual(self.ca.counts["account"], before)

    def test_a_new_agreement_is_recorded(self):
        gateway = build_test_gateway([KEY], ca=FakeCA(terms_of_service=None),
                                     policy=Policy(agree_to_terms=False))
        client = V1TestClient(gateway.base_url, KEY, http=gateway.client)
        reply = self.resolve(client.post(gateway.url("/acme/new-reg"), {"resource": "new-reg"}))
        self.assertEqual(reply.status, 201, reply.body)
        self.assertNotIn("agreement", reply.json())
        reply = self.resolve(client.post(gateway.url("/acme/reg/1"), {
            "resource": "reg", "agreement": gateway.url("/terms")}))
        self.assertEqual(reply.status, 202, reply.body)
        self.assertEqual(reply.json()["agreement"], gateway.url("/terms"))
        stored = self.successResultOf(gateway.store.account_by_id(1))
        self.assertEqual(stored.agreement, gateway.url("/terms"))

    def test_another_registration_id_of_a_registered_key(self):
        self.register(KEY)
        self.register(OTHER)
        reply = self.post("/acme/reg/2", {"resource": "reg", "status": "deactivated"}, key=KEY)
        self.assertProblem(reply, 403, "unauthorized", "did not match registration key")
        self.assertEqual(self.ca.accounts[2].status, "valid")
