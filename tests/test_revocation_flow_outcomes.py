"""
What `gateway.translate.revocation`'s flows (``revoke_certificate``,
``change_key``) leave behind, as a client and the CA see it: the signer and
reason the CA is asked to revoke with, the certificate's stored revocation
time and reason, the refusals (status, type, exact detail) and that nothing
was sent upstream for them, and the account records a key change writes.
"""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from twisted.logger import capturedLogs, formatEvent

from gateway.keys.jose import AccountKey, b64url
from gateway.process.testing import FakeCA, build_test_gateway
from gateway.status import Status
from tests.support.v1_client import V1TestClient
from tests.test_v1_face import KEY, NAME, NEW, OTHER, FaceTestCase, make_csr

CERT_KEY = AccountKey.from_private_key(ec.generate_private_key(ec.SECP256R1()))

_NOT_ALLOWED = (
    "Revocation request must be signed by private key of cert to be revoked, by the account "
    "key of the account that issued it, or by the account key of an account that holds valid "
    "authorizations for all names in the certificate."
)


class RevocationOutcomeTests(FaceTestCase):
    """
    A certificate for NAME with CERT_KEY's public key, issued to KEY's
    account.
    """

    keys = (KEY, OTHER, NEW)

    def setUp(self):
        super().setUp()
        self.registration = self.register()
        self.authorize(NAME)
        reply = self.post("/acme/new-cert", {
            "resource": "new-cert", "csr": b64url(make_csr([NAME], key=CERT_KEY.private_key))})
        self.assertEqual(reply.status, 201, reply.body)
        self.leaf = reply.body
        self.serial = format(x509.load_der_x509_certificate(self.leaf).serial_number, "x")

    # -- helpers ------------------------------------------------------------

    def stored(self, gateway=None):
        gateway = gateway or self.gateway
        return self.successResultOf(gateway.store.certificate_by_serial(self.serial))

    def record_signers(self, gateway=None):
        """
        Wrap the gateway's upstream client's ``revoke_certificate``; the list
        of the signer arguments of each call (``reason`` included).
        """
        upstream = (gateway or self.gateway).context.upstream
        calls = []
        original = upstream.revoke_certificate

        async def recording(der, **signer):
            calls.append(dict(signer, der=der))
            return await original(der, **signer)

        upstream.revoke_certificate = recording
        return calls

    def revoke(self, key=KEY, gateway=None, **fields):
        gateway = gateway or self.gateway
        payload = dict({"resource": "revoke-cert", "certificate": b64url(self.leaf)}, **fields)
        client = V1TestClient(gateway.base_url, key, http=gateway.client)
        return self.resolve(client.post(gateway.base_url + "/acme/revoke-cert", payload))

    def assertDetail(self, reply, status, code, detail):
        problem = self.assertProblem(reply, status, code)
        self.assertEqual(problem["detail"], detail)
        return problem

    # -- signed by the issuing account -----------------------------------------

    def test_account_revocation_reason_upstream_and_stored(self):
        """
        The issuing account revokes with reason 4: the CA is asked by that
        account with reason 4, and the stored certificate records the
        gateway clock's time and reason 4.
        """
        calls = self.record_signers()
        self.gateway.advance(17)
        lookups = self.ca.counts["newAccount"]
        reply = self.revoke(reason=4)
        self.assertEqual(reply.status, 200, reply.body)
        # the stored account's upstream URL is used: no lookup at the CA
        self.assertEqual(self.ca.counts["newAccount"], lookups)
        (call,) = calls
        self.assertEqual(call["reason"], 4)
        self.assertEqual(call["der"], self.leaf)
        self.assertEqual(call["account"].key.thumbprint, KEY.thumbprint)
        self.assertEqual(call["account"].url, self.ca.accounts[1].url)
        self.assertNotIn("certificate_key", call)
        self.assertEqual(self.ca.certificates[0].revoked_reason, 4)
        stored = self.stored()
        self.assertEqual(stored.revocation_reason, 4)
        self.assertEqual(stored.revoked_at, self.gateway.context.now())

    def test_account_revocation_without_reason(self):
        """
        No reason: none is sent upstream (the CA records 0), and 0
        (unspecified) is stored.
        """
        calls = self.record_signers()
        reply = self.revoke()
        self.assertEqual(reply.status, 200, reply.body)
        self.assertIsNone(calls[0]["reason"])
        self.assertEqual(self.ca.certificates[0].revoked_reason, 0)
        stored = self.stored()
        self.assertEqual(stored.revocation_reason, 0)
        self.assertIsNotNone(stored.revoked_at)

    def test_reason_one_is_kept(self):
        """
        Reason 1 (keyCompromise) is passed and stored as 1.
        """
        self.assertEqual(self.revoke(reason=1).status, 200)
        self.assertEqual(self.ca.certificates[0].revoked_reason, 1)
        self.assertEqual(self.stored().revocation_reason, 1)

    def test_another_account_is_refused_before_the_ca(self):
        """
        Another account of the gateway: 403 with Boulder's exact detail, no
        revocation request reaches the CA, nothing stored.
        """
        self.register(OTHER)
        before = self.ca.counts["revokeCert"]
        reply = self.revoke(key=OTHER, reason=1)
        self.assertDetail(reply, 403, "unauthorized", _NOT_ALLOWED)
        self.assertEqual(self.ca.counts["revokeCert"], before)
        self.assertIsNone(self.ca.certificates[0].revoked_reason)
        self.assertIsNone(self.stored().revoked_at)

    def test_already_revoked_in_the_store_is_not_sent_again(self):
        """
        Revoked through the gateway before: 409 "Certificate already
        revoked" from the store, without asking the CA again; the first
        reason stays.
        """
        self.assertEqual(self.revoke(reason=4).status, 200)
        before = self.ca.counts["revokeCert"]
        self.assertDetail(self.revoke(reason=1), 409, "malformed", "Certificate already revoked")
        self.assertEqual(self.ca.counts["revokeCert"], before)
        self.assertEqual(self.stored().revocation_reason, 4)
        self.assertEqual(self.ca.certificates[0].revoked_reason, 4)

    def test_already_revoked_by_certificate_key_is_not_sent_again(self):
        """
        The same, signed by the certificate key.
        """
        self.assertEqual(self.revoke(reason=4).status, 200)
        before = self.ca.counts["revokeCert"]
        reply = self.revoke(key=CERT_KEY, gateway=self.gateway_with([KEY, CERT_KEY]))
        self.assertDetail(reply, 409, "malformed", "Certificate already revoked")
        self.assertEqual(self.ca.counts["revokeCert"], before)

    def test_stored_certificate_with_other_der(self):
        """
        A stored certificate of the same serial whose DER differs from the
        one sent: 404 "No such certificate", nothing revoked.
        """
        stored = self.stored()
        self.successResultOf(self.gateway.store.update_certificate(
            stored.id, leaf_der=stored.leaf_der + b"\x00"))
        before = self.ca.counts["revokeCert"]
        self.assertDetail(self.revoke(reason=4), 404, "malformed", "No such certificate")
        self.assertEqual(self.ca.counts["revokeCert"], before)
        self.assertIsNone(self.ca.certificates[0].revoked_reason)
        self.assertIsNone(self.stored().revoked_at)

    def test_account_of_a_gateway_that_never_stored_it(self):
        """
        A gateway on another store (same CA, same account key) revokes a
        certificate it has no record of as the signing account; the CA
        revokes it with the reason given.
        """
        other = build_test_gateway([KEY], ca=self.ca)
        calls = self.record_signers(other)
        reply = self.revoke(gateway=other, reason=5)
        self.assertEqual(reply.status, 200, reply.body)
        self.assertEqual(calls[0]["account"].url, self.ca.accounts[1].url)
        self.assertEqual(self.ca.certificates[0].revoked_reason, 5)

    # -- signed by the certificate key -----------------------------------------

    def gateway_with(self, keys):
        """
        A gateway on the same store and CA holding ``keys``.
        """
        return build_test_gateway(keys, ca=self.ca, store=self.gateway.store)

    def test_certificate_key_not_held_revokes_as_issuer(self):
        """
        Signed by the certificate key, which the gateway does not hold: the
        CA is asked by the issuing account, the store records it.
        """
        calls = self.record_signers()
        lookups = self.ca.counts["newAccount"]
        reply = self.revoke(key=CERT_KEY, reason=3)
        self.assertEqual(reply.status, 200, reply.body)
        self.assertEqual(self.ca.counts["newAccount"], lookups)
        (call,) = calls
        self.assertEqual(call["account"].key.thumbprint, KEY.thumbprint)
        self.assertNotIn("certificate_key", call)
        self.assertEqual(call["reason"], 3)
        self.assertEqual(self.ca.certificates[0].revoked_reason, 3)
        self.assertEqual(self.stored().revocation_reason, 3)

    def test_issuer_key_gone_revokes_with_certificate_key(self):
        """
        The certificate key is held but the issuing account's key left the
        key store: the CA is asked with the certificate key (``jwk``), and
        the store records the revocation.
        """
        gateway = self.gateway_with([CERT_KEY])
        calls = self.record_signers(gateway)
        new_accounts = self.ca.counts["newAccount"]
        reply = self.revoke(key=CERT_KEY, gateway=gateway, reason=4)
        self.assertEqual(reply.status, 200, reply.body)
        (call,) = calls
        self.assertIsNone(call.get("account"))
        self.assertEqual(call["certificate_key"].thumbprint, CERT_KEY.thumbprint)
        self.assertEqual(call["reason"], 4)
        self.assertEqual(self.ca.certificates[0].revoked_reason, 4)
        self.assertEqual(self.ca.counts["newAccount"], new_accounts)
        stored = self.stored(gateway)
        self.assertEqual(stored.revocation_reason, 4)
        self.assertEqual(stored.revoked_at, gateway.context.now())

    def test_issuer_key_and_certificate_key_held(self):
        """
        Both held: the issuing account revokes, not the certificate key.
        """
        gateway = self.gateway_with([KEY, CERT_KEY])
        calls = self.record_signers(gateway)
        reply = self.revoke(key=CERT_KEY, gateway=gateway)
        self.assertEqual(reply.status, 200, reply.body)
        (call,) = calls
        self.assertEqual(call["account"].key.thumbprint, KEY.thumbprint)
        self.assertNotIn("certificate_key", call)
        self.assertEqual(self.stored().revocation_reason, 0)

    def test_unknown_certificate_with_held_certificate_key(self):
        """
        Another store: the certificate key, held, revokes it at the CA;
        nothing made at the CA.
        """
        gateway = build_test_gateway([CERT_KEY], ca=self.ca)
        calls = self.record_signers(gateway)
        reply = self.revoke(key=CERT_KEY, gateway=gateway, reason=1)
        self.assertEqual(reply.status, 200, reply.body)
        self.assertEqual(calls[0]["certificate_key"].thumbprint, CERT_KEY.thumbprint)
        self.assertEqual(self.ca.certificates[0].revoked_reason, 1)
        self.assertEqual(len(self.ca.accounts), 1)

    def test_unknown_certificate_without_certificate_key(self):
        """
        Another store that does not hold the certificate key: 404 "No such
        certificate", nothing asked of the CA.
        """
        gateway = build_test_gateway([KEY], ca=self.ca)
        before = self.ca.counts["revokeCert"]
        reply = self.revoke(key=CERT_KEY, gateway=gateway)
        self.assertDetail(reply, 404, "malformed", "No such certificate")
        self.assertEqual(self.ca.counts["revokeCert"], before)

    # -- a certificate of the previous CA --------------------------------------

    def switch_ca(self, keys):
        old = self.ca
        new = FakeCA(base_url="https://ca-b.test", clock=self.gateway.clock)
        store = self.gateway.store
        store.upstream = new.directory_url
        gateway = build_test_gateway(keys, ca=new, store=store, other_cas=[old])
        return gateway, old, new

    def test_previous_ca_certificate_key_signed(self):
        """
        Signed by the certificate key (not held), a certificate of the
        previous CA: revoked there as the issuing account found by key,
        nothing sent to the current CA, the store records it.
        """
        gateway, old, new = self.switch_ca([KEY])
        lookups = old.counts["newAccount"]
        reply = self.revoke(key=CERT_KEY, gateway=gateway, reason=4)
        self.assertEqual(reply.status, 200, reply.body)
        self.assertEqual(old.certificates[0].revoked_reason, 4)
        self.assertEqual(old.counts["newAccount"], lookups + 1)
        self.assertEqual(len(old.accounts), 1)
        self.assertEqual(new.counts["revokeCert"], 0)
        self.assertEqual(new.counts["newAccount"], 0)
        self.assertEqual(self.stored(gateway).revocation_reason, 4)

    def test_previous_ca_issuer_key_gone(self):
        """
        A certificate of the previous CA whose issuer key left the store,
        certificate key held: revoked at the previous CA with the
        certificate key.
        """
        gateway, old, new = self.switch_ca([CERT_KEY])
        reply = self.revoke(key=CERT_KEY, gateway=gateway, reason=1)
        self.assertEqual(reply.status, 200, reply.body)
        self.assertEqual(old.certificates[0].revoked_reason, 1)
        self.assertEqual(new.counts["revokeCert"], 0)

    def test_previous_ca_account_signed(self):
        """
        Signed by the issuing account: revoked at the previous CA, the store
        records it; the current CA sees nothing.
        """
        gateway, old, new = self.switch_ca([KEY])
        reply = self.revoke(gateway=gateway, reason=3)
        self.assertEqual(reply.status, 200, reply.body)
        self.assertEqual(old.certificates[0].revoked_reason, 3)
        self.assertEqual(new.counts["revokeCert"], 0)
        self.assertEqual(self.stored(gateway).revocation_reason, 3)

    def test_previous_ca_forgot_the_issuer_certificate_key_signed(self):
        """
        Signed by the certificate key, the previous CA no longer knows the
        issuing account: 403 naming that CA, nothing revoked, no account made.
        """
        gateway, old, new = self.switch_ca([KEY])
        old.accounts.clear()
        reply = self.revoke(key=CERT_KEY, gateway=gateway)
        self.assertDetail(
            reply, 403, "unauthorized",
            "The account that issued this certificate is not known to the CA that issued it "
            f"({old.directory_url}) any more")
        self.assertIsNone(old.certificates[0].revoked_reason)
        self.assertEqual(old.accounts, {})
        self.assertIsNone(self.stored(gateway).revoked_at)


class KeyChangeOutcomeTests(FaceTestCase):
    """
    key-change from KEY to NEW (both held).
    """

    def setUp(self):
        super().setUp()
        self.registration = self.register()
        self.ca_account = self.ca.accounts[1]

    def change(self, new_key=NEW, url=None, signer=None):
        return self.post("/acme/key-change",
                         self.key_change_payload(new_key, url or self.registration, signer))

    def accounts(self):
        store = self.gateway.store
        return (self.successResultOf(store.account_by_thumbprint(KEY.thumbprint)),
                self.successResultOf(store.account_by_thumbprint(NEW.thumbprint)))

    def assertUnchanged(self):
        old, new = self.accounts()
        self.assertIsNone(new)
        self.assertEqual(old.id, 1)
        self.assertEqual(old.status, Status.VALID)

    def test_recorded_in_one_write(self):
        """
        The registration moves to the new key (thumbprint and JWK); the old
        key is remembered as a retired account record without upstream
        account, contact or agreement, with the registration's initial IP
        and the current time.
        """
        before = self.successResultOf(self.gateway.store.account_by_id(1))
        self.gateway.advance(30)
        reply = self.change()
        self.assertEqual(reply.status, 200, reply.body)
        self.assertEqual(reply.json()["key"], NEW.public_jwk_json)
        old, new = self.accounts()
        self.assertEqual(new.id, 1)
        self.assertEqual(new.public_jwk, NEW.public_jwk_json)
        self.assertEqual(new.upstream_url, before.upstream_url)
        self.assertNotEqual(old.id, 1)
        self.assertEqual(old.status, Status.RETIRED)
        self.assertEqual(old.public_jwk, before.public_jwk)
        self.assertIsNone(old.upstream_url)
        self.assertEqual(tuple(old.contact), ())
        self.assertIsNone(old.agreement)
        self.assertEqual(old.initial_ip, before.initial_ip)
        self.assertEqual(old.created_at, self.gateway.context.now())
        self.assertEqual(self.ca_account.thumbprint, NEW.thumbprint)
        self.assertEqual(self.ca.counts["keyChange"], 1)

    def test_rollover_already_done_at_the_ca(self):
        """
        The CA rolled the account over for an earlier attempt the gateway
        never recorded: the CA refuses the old key, the new key finds the
        same account, and the gateway records the change (200).
        """
        self.ca_account.jwk, self.ca_account.thumbprint = NEW.public_jwk_json, NEW.thumbprint
        with capturedLogs() as events:
            reply = self.change()
        self.assertEqual(reply.status, 200, reply.body)
        self.assertIn("key change of account 1 was already done at the CA; recording it",
                      [formatEvent(event) for event in events])
        self.assertEqual(reply.json()["key"], NEW.public_jwk_json)
        old, new = self.accounts()
        self.assertEqual(new.id, 1)
        self.assertEqual(old.status, Status.RETIRED)
        self.assertEqual(len(self.ca.accounts), 1)

    def test_ca_refusal_is_the_clients(self):
        """
        The CA refuses the key change and the new key has no account there:
        the client gets the CA's refusal, nothing is recorded.
        """
        self.ca.fail_next("key-change", 400, {"type": "malformed", "detail": "no rollover today"})
        reply = self.change()
        self.assertProblem(reply, 400, "malformed", "no rollover today")
        self.assertUnchanged()
        self.assertEqual(self.ca_account.thumbprint, KEY.thumbprint)

    def test_new_key_has_another_account_at_the_ca(self):
        """
        The new key already holds another account at the CA (one the
        gateway's store does not know): the CA's 409 reaches the client,
        nothing is recorded.
        """
        elsewhere = build_test_gateway([NEW], ca=self.ca)
        client = V1TestClient(elsewhere.base_url, NEW, http=elsewhere.client)
        made = self.resolve(client.post(elsewhere.base_url + "/acme/new-reg", {
            "resource": "new-reg", "agreement": elsewhere.base_url + "/terms"}))
        self.assertEqual(made.status, 201, made.body)
        reply = self.change()
        self.assertProblem(reply, 409, "malformed")
        self.assertUnchanged()
        self.assertEqual(self.ca_account.thumbprint, KEY.thumbprint)

    def test_new_key_of_another_gateway_account(self):
        """
        A key another account of the gateway uses: 409 with the gateway's own
        detail, no key change sent upstream.
        """
        self.register(OTHER)
        reply = self.post("/acme/key-change", self.key_change_payload(OTHER, self.registration))
        self.assertEqual(
            self.assertProblem(reply, 409, "malformed")["detail"],
            "New key is already in use for a different account")
        self.assertEqual(self.ca.counts["keyChange"], 0)

    def test_wrong_account_url(self):
        """
        An inner payload naming another registration: 400 with the exact
        detail, nothing sent upstream or recorded.
        """
        self.register(OTHER)
        reply = self.change(url=self.url("/acme/reg/2"))
        self.assertEqual(self.assertProblem(reply, 400, "malformed")["detail"],
                         "Incorrect account URL provided in payload")
        self.assertEqual(self.ca.counts["keyChange"], 0)
        self.assertUnchanged()

    def test_new_key_not_held(self):
        """
        A new key the gateway does not hold: 403 whose detail names it and
        says what to do; nothing sent upstream.
        """
        stranger = AccountKey.from_private_key(ec.generate_private_key(ec.SECP256R1()))
        reply = self.change(new_key=stranger)
        detail = self.assertProblem(reply, 403, "unauthorized")["detail"]
        self.assertEqual(
            detail,
            f"The new account key (JWK thumbprint {stranger.thumbprint}) is not in the gateway's "
            f"key store. The gateway must roll the account over upstream with the new private "
            f"key: import the new key into the --keys directory first, then retry the key change.")
        self.assertEqual(self.ca.counts["keyChange"], 0)
        self.assertUnchanged()

    def test_old_key_after_change_is_refused(self):
        """
        After the change the old key reaches no account and makes none.
        """
        self.assertEqual(self.change().status, 200)
        reply = self.new_authz(key=KEY)
        self.assertProblem(reply, 403, "unauthorized")
        self.assertEqual(len(self.ca.accounts), 1)
        self.assertEqual(self.new_authz(key=NEW).status, 201)

