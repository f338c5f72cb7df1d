"""
What `gateway.translate.registration`'s flows (``new_registration``,
``new_account``, ``update_registration``) answer and leave behind, as a
client and the CA see it: v2 ``onlyReturnExisting`` for keys the store, the
CA or neither knows, a retired key and an account the CA forgot; a
deactivated account's newAccount; the terms agreement sent upstream; what a
registration stores; and the refusals of ``reg/<id>`` before anything is
bound or made.
"""

from __future__ import annotations

import attrs

from gateway.process.testing import FakeCA, build_test_gateway
from gateway.status import Status
from gateway.translate.context import Policy
from tests.support.v1_client import V1TestClient
from tests.support.v2_client import V2TestClient
from tests.test_v1_face import KEY, NEW, OTHER, STRANGER, FaceTestCase

V2 = "urn:ietf:params:acme:error:"
CONTACT = "mailto:admin@example.test"
TERMS = "https://ca.test/terms"
MISMATCH = "Request signing key did not match registration key"


class OutcomeTestCase(FaceTestCase):

    def v2(self, key=KEY):
        return V2TestClient(self.gateway.url("/v2/directory"), key, http=self.gateway.client)

    def new_account(self, key=KEY, **payload):
        return self.resolve(self.v2(key).new_account(payload or None))

    def v2_problem(self, reply, code, status, detail=None):
        self.assertEqual(reply.status, status, reply.body)
        document = reply.json()
        self.assertEqual((document["type"], document["status"]), (V2 + code, status))
        if detail is not None:
            self.assertEqual(document["detail"], detail)
        return document

    def stored(self, key=KEY):
        return self.successResultOf(self.gateway.store.account_by_thumbprint(key.thumbprint))

    def register_elsewhere(self, key=KEY, **fields):
        """
        An account for ``key`` at the CA, made through another gateway (this
        gateway's store does not know it).
        """
        elsewhere = build_test_gateway([key], ca=self.ca)
        client = V1TestClient(elsewhere.base_url, key, http=elsewhere.client)
        reply = self.resolve(client.post(elsewhere.url("/acme/new-reg"),
                                         dict({"resource": "new-reg"}, **fields)))
        self.assertEqual(reply.status, 201, reply.body)


class NewAccountOnlyExistingTests(OutcomeTestCase):

    def test_a_key_only_the_ca_knows(self):
        """
        onlyReturnExisting for a held key with an account at the CA that the
        store does not know: 200 with that account, recorded with the CA's
        URL; no account made at the CA.
        """
        self.register_elsewhere(contact=[CONTACT])
        reply = self.new_account(onlyReturnExisting=True)
        self.assertEqual(reply.status, 200, reply.body)
        self.assertEqual(len(self.ca.accounts), 1)
        stored = self.stored()
        self.assertEqual(stored.upstream_url, self.ca.accounts[1].url)
        self.assertEqual(stored.contact, (CONTACT,))

    def test_a_key_nobody_knows(self):
        """
        A held key without an account anywhere: accountDoesNotExist, and no
        account is made at the CA or stored.
        """
        reply = self.new_account(onlyReturnExisting=True)
        self.v2_problem(reply, "accountDoesNotExist", 400, "No account exists with the provided key")
        self.assertEqual(self.ca.accounts, {})
        self.assertIsNone(self.stored())

    def test_a_key_the_gateway_does_not_hold(self):
        """
        onlyReturnExisting for a key outside the key store is
        accountDoesNotExist (not the key store's refusal).
        """
        reply = self.new_account(key=STRANGER, onlyReturnExisting=True)
        self.v2_problem(reply, "accountDoesNotExist", 400, "No account exists with the provided key")
        self.assertEqual(self.ca.accounts, {})

    def test_a_stored_account_is_returned_without_asking_the_ca(self):
        """
        The store knows the key: its account (200), even when the CA has
        since forgotten it; no account made at the CA.
        """
        created = self.new_account()
        self.assertEqual(created.status, 201, created.body)
        self.ca.accounts.clear()
        reply = self.new_account(onlyReturnExisting=True)
        self.assertEqual(reply.status, 200, reply.body)
        self.assertEqual(reply.header("location"), created.header("location"))
        self.assertEqual(self.ca.accounts, {})

    def test_a_retired_key(self):
        """
        A key a key change retired, which the CA no longer knows:
        accountDoesNotExist, as for any key without an account.
        """
        reg_url = self.register()
        self.assertEqual(self.post("/acme/key-change",
                                   self.key_change_payload(NEW, reg_url)).status, 200)
        reply = self.new_account(onlyReturnExisting=True)
        self.v2_problem(reply, "accountDoesNotExist", 400, "No account exists with the provided key")
        self.assertEqual(len(self.ca.accounts), 1)


class NewAccountTests(OutcomeTestCase):

    def test_contact_sent_and_stored_without_agreement(self):
        """
        newAccount with a contact: the CA account and the store have it; no
        v1 agreement is recorded; the client's address is.
        """
        reply = self.new_account(contact=[CONTACT], termsOfServiceAgreed=True)
        self.assertEqual(reply.status, 201, reply.body)
        self.assertEqual(list(self.ca.accounts[1].contact), [CONTACT])
        stored = self.stored()
        self.assertEqual(stored.contact, (CONTACT,))
        self.assertIsNone(stored.agreement)
        self.assertEqual(stored.public_jwk, KEY.public_jwk_json)
        self.assertEqual(stored.upstream_url, self.ca.accounts[1].url)
        self.assertTrue(stored.initial_ip)

    def test_a_deactivated_account(self):
        """
        newAccount for a deactivated account: 403 naming its status.
        """
        reg_url = self.register()
        self.assertEqual(self.post(reg_url, {"resource": "reg", "status": "deactivated"}).status, 200)
        reply = self.new_account()
        self.v2_problem(reply, "unauthorized", 403, 'Account is not valid, has status "deactivated"')

    def test_a_retired_key_cannot_make_an_account(self):
        reg_url = self.register()
        self.assertEqual(self.post("/acme/key-change",
                                   self.key_change_payload(NEW, reg_url)).status, 200)
        reply = self.new_account()
        self.v2_problem(reply, "unauthorized", 403,
                        "This key was replaced by a key change and cannot register again")
        self.assertEqual(len(self.ca.accounts), 1)


class TermsTests(OutcomeTestCase):
    """
    A CA with terms of service, which it requires agreed; the gateway
    leaves agreeing to the client (unless a test says otherwise).
    """

    def setUp(self):
        self.ca = FakeCA(terms_of_service=TERMS)
        self.build()

    def build(self, policy=Policy(agree_to_terms=False)):
        self.gateway = build_test_gateway(self.keys, ca=self.ca, policy=policy)
        self.base = self.gateway.base_url
        self.clients = {}

    def test_v2_agreed(self):
        reply = self.new_account(termsOfServiceAgreed=True)
        self.assertEqual(reply.status, 201, reply.body)
        self.assertEqual(len(self.ca.accounts), 1)

    def test_v2_not_agreed(self):
        reply = self.new_account(termsOfServiceAgreed=False)
        self.v2_problem(reply, "userActionRequired", 403)
        self.assertEqual(self.ca.accounts, {})
        self.assertIsNone(self.stored())

    def test_v1_with_agreement(self):
        reply = self.post("/acme/new-reg", {"resource": "new-reg", "agreement": self.url("/terms")})
        self.assertEqual(reply.status, 201, reply.body)
        self.assertEqual(self.stored().agreement, self.url("/terms"))
        self.assertEqual(len(self.ca.accounts), 1)

    def test_v1_without_agreement(self):
        reply = self.post("/acme/new-reg", {"resource": "new-reg"})
        self.assertProblem(reply, 403, "unauthorized", "Must agree to subscriber agreement")
        self.assertEqual(self.ca.accounts, {})
        self.assertIsNone(self.stored())

    def test_v1_without_agreement_when_the_gateway_agrees(self):
        """
        ``--agree-to-terms``: the gateway agrees upstream for the client.
        """
        self.build(Policy(agree_to_terms=True))
        reply = self.post("/acme/new-reg", {"resource": "new-reg"})
        self.assertEqual(reply.status, 201, reply.body)
        self.assertIsNone(self.stored().agreement)
        self.assertEqual(len(self.ca.accounts), 1)


class NewRegistrationTests(OutcomeTestCase):

    def test_a_key_the_ca_knows_without_contact(self):
        """
        The CA's account of the key has no contact: the registration keeps
        the contact the client sent (409, it existed).
        """
        self.register_elsewhere()
        reply = self.post("/acme/new-reg", {"resource": "new-reg", "contact": [CONTACT]})
        self.assertEqual(reply.status, 409, reply.body)
        self.assertEqual(self.stored().contact, (CONTACT,))
        self.assertEqual(len(self.ca.accounts), 1)

    def test_a_new_registration_is_201_and_stored(self):
        reply = self.post("/acme/new-reg", {"resource": "new-reg", "contact": [CONTACT],
                                            "agreement": self.url("/terms")})
        self.assertEqual(reply.status, 201, reply.body)
        stored = self.stored()
        self.assertEqual(reply.header("location"), self.url(f"/acme/reg/{stored.id}"))
        self.assertEqual(stored.status, Status.VALID)
        self.assertEqual(stored.agreement, self.url("/terms"))
        self.assertEqual(stored.contact, (CONTACT,))


class UpdateRegistrationTests(OutcomeTestCase):

    def test_an_unknown_key_naming_a_registration(self):
        """
        A held key the store does not know, posting to another
        registration: 403, and no account is made for it (upstream or
        stored).
        """
        reg_url = self.register()
        accounts = self.ca.counts["newAccount"]
        reply = self.post(reg_url, {"resource": "reg"}, key=OTHER)
        self.assertEqual(self.assertProblem(reply, 403, "unauthorized")["detail"], MISMATCH)
        self.assertEqual(self.ca.counts["newAccount"], accounts)
        self.assertEqual(len(self.ca.accounts), 1)
        self.assertIsNone(self.stored(OTHER))

    def test_a_known_key_naming_another_registration(self):
        reg_url = self.register()
        self.register(OTHER)
        reply = self.post(reg_url, {"resource": "reg", "contact": ["mailto:x@example.test"]},
                          key=OTHER)
        self.assertEqual(self.assertProblem(reply, 403, "unauthorized")["detail"], MISMATCH)
        self.assertEqual(self.stored().contact, (CONTACT,))

    def test_contact_change(self):
        """
        A new contact goes upstream and is stored; 202.
        """
        reg_url = self.register()
        reply = self.post(reg_url, {"resource": "reg", "contact": ["mailto:new@example.test"]})
        self.assertEqual(reply.status, 202, reply.body)
        self.assertEqual(reply.json()["contact"], ["mailto:new@example.test"])
        self.assertEqual(list(self.ca.accounts[1].contact), ["mailto:new@example.test"])
        self.assertEqual(self.stored().contact, ("mailto:new@example.test",))
        self.assertEqual(self.stored().status, Status.VALID)

    def answer_update_with_contact(self, contact):
        """
        The CA answers a contact update with ``contact`` instead of the
        one sent (a CA that keeps no contacts, as Let's Encrypt since 2025,
        or one that rewrites them).
        """
        upstream = self.gateway.context.upstream
        original = upstream.update_account

        async def answering(account, sent):
            updated = await original(account, sent)
            return attrs.evolve(updated, contact=contact)

        upstream.update_account = answering

    def test_a_ca_that_keeps_no_contact(self):
        """
        The CA's answer has no contact: the registration keeps the contact
        the client sent.
        """
        reg_url = self.register()
        self.answer_update_with_contact(())
        reply = self.post(reg_url, {"resource": "reg", "contact": ["mailto:new@example.test"]})
        self.assertEqual(reply.status, 202, reply.body)
        self.assertEqual(reply.json()["contact"], ["mailto:new@example.test"])
        self.assertEqual(self.stored().contact, ("mailto:new@example.test",))

    def test_the_contact_the_ca_kept(self):
        """
        The CA answers with another contact than the one sent: the
        registration shows and stores the CA's.
        """
        reg_url = self.register()
        self.answer_update_with_contact(("mailto:kept@example.test",))
        reply = self.post(reg_url, {"resource": "reg", "contact": ["mailto:NEW@example.test"]})
        self.assertEqual(reply.status, 202, reply.body)
        self.assertEqual(reply.json()["contact"], ["mailto:kept@example.test"])
        self.assertEqual(self.stored().contact, ("mailto:kept@example.test",))

    def test_same_agreement_and_new_agreement(self):
        reg_url = self.register()
        reply = self.post(reg_url, {"resource": "reg", "agreement": self.url("/terms")})
        self.assertEqual(reply.status, 202, reply.body)
        self.assertEqual(self.stored().agreement, self.url("/terms"))
        reply = self.post(reg_url, {"resource": "reg", "agreement": "https://other.test/terms"})
        self.assertEqual(reply.status, 202, reply.body)
        self.assertEqual(self.stored().agreement, "https://other.test/terms")

    def test_deactivation(self):
        """
        Deactivation: 200, the CA account and the stored one are deactivated,
        the contact is kept.
        """
        reg_url = self.register()
        reply = self.post(reg_url, {"resource": "reg", "status": "deactivated"})
        self.assertEqual(reply.status, 200, reply.body)
        self.assertEqual(reply.json()["status"], "deactivated")
        self.assertEqual(self.ca.accounts[1].status, "deactivated")
        stored = self.stored()
        self.assertEqual(stored.status, Status.DEACTIVATED)
        self.assertEqual(stored.contact, (CONTACT,))

    def test_plain_read_changes_nothing(self):
        reg_url = self.register()
        before = self.stored()
        counts = self.ca.counts["account"]
        reply = self.post(reg_url, {"resource": "reg"})
        self.assertEqual(reply.status, 202, reply.body)
        self.assertEqual(self.stored(), before)
        self.assertEqual(self.ca.counts["account"], counts)
