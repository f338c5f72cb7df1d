"""
Retries after lost answers, partial rows, and a change of upstream CA,
through whole in-memory gateways (`gateway.process.testing.build_test_gateway`)
over `FakeCA`: fast, deterministic companions of the process-level tests
in ``tests/e2e/test_retries_crashes.py`` and ``test_upstream_switch.py``.
"""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from gateway.keys.jose import b64url
from gateway.operations.report import OrphanedCertificate, build_report
from gateway.operations.statuspage import render
from gateway.store import Authorization, Insert, OrderAttempt
from gateway.process.testing import FakeCA, build_test_gateway
from gateway.translate.accounts import upstream_for
from gateway.translate.recovery import recover
from tests.test_v1_face import KEY, NAME, NEW, FaceTestCase, make_csr


def spki(public_key) -> bytes:
    return public_key.public_bytes(serialization.Encoding.DER,
                                   serialization.PublicFormat.SubjectPublicKeyInfo)


def leaf_key(der: bytes) -> bytes:
    return spki(x509.load_der_x509_certificate(der).public_key())


class LostAnswerTests(FaceTestCase):
    """
    The CA issued, but the certificate never reached the client.
    """

    def new_cert(self, csr_key, names=(NAME,)):
        return self.post("/acme/new-cert", {
            "resource": "new-cert", "csr": b64url(make_csr(list(names), key=csr_key))})

    def lose_download(self):
        self.gateway.upstream.read_retries = 0
        self.ca.fail_next("/cert/", 500, {"type": "serverInternal"})

    def test_retry_with_a_new_key_gets_a_certificate_for_that_key(self):
        """
        The first download fails after the order went valid; the client's
        retry with a new CSR key gets a certificate for that key, from a new
        order.  The first certificate is kept as an orphan: listed, never
        handed out.
        """
        self.authorize()
        first_key, second_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(2))
        self.lose_download()
        self.assertProblem(self.new_cert(first_key), 500, "serverInternal")
        self.assertEqual(len(self.ca.certificates), 1)

        reply = self.new_cert(second_key)
        self.assertEqual(reply.status, 201, reply.body)
        self.assertEqual(leaf_key(reply.body), spki(second_key.public_key()))
        self.assertEqual(len(self.ca.orders), 2)
        (orphan,) = self.successResultOf(self.gateway.store.orphaned_certificates())
        self.assertEqual(leaf_key(orphan.leaf_der), spki(first_key.public_key()))
        self.assertEqual(orphan.order_id, self.successResultOf(
            self.gateway.store.find_orders(1, (NAME,), ("valid",)))[-1].id)
        self.assertNotEqual(reply.header("location"), self.url(f"/acme/cert/{orphan.id}"))

        third = self.new_cert(ec.generate_private_key(ec.SECP256R1()))
        self.assertEqual(third.status, 201, third.body)
        self.assertEqual(len(self.successResultOf(self.gateway.store.orphaned_certificates())), 1,
                         "a delivered certificate never becomes an orphan")

    def test_retry_with_the_same_key_gets_the_issued_certificate(self):
        """
        The same CSR again: the certificate the CA issued is the right one,
        from the same order; nothing is orphaned.
        """
        self.authorize()
        csr_key = ec.generate_private_key(ec.SECP256R1())
        self.lose_download()
        self.assertProblem(self.new_cert(csr_key), 500, "serverInternal")
        reply = self.new_cert(csr_key)
        self.assertEqual(reply.status, 201, reply.body)
        self.assertEqual(leaf_key(reply.body), spki(csr_key.public_key()))
        self.assertEqual(len(self.ca.orders), 1)
        self.assertEqual(self.successResultOf(self.gateway.store.orphaned_certificates()), [])

    def test_orphans_in_the_report(self):
        """
        The migration report (text, JSON, the /status page) lists each
        orphan: serial, names, account key, CA.
        """
        self.authorize()
        self.lose_download()
        self.new_cert(ec.generate_private_key(ec.SECP256R1()))
        self.new_cert(ec.generate_private_key(ec.SECP256R1()))
        (orphan,) = self.successResultOf(self.gateway.store.orphaned_certificates())
        report = build_report([], self.gateway.clock.seconds(),
                              orphans=[OrphanedCertificate.of(orphan, KEY.thumbprint)])
        (listed,) = report.as_json()["orphaned_certificates"]
        self.assertEqual(listed, {"id": orphan.id, "serial": orphan.serial, "names": [NAME],
                                  "thumbprint": KEY.thumbprint, "issued_at": orphan.issued_at,
                                  "ca": self.ca.directory_url})
        self.assertIn(f"serial {orphan.serial}  {NAME}", report.as_text())
        page = render(report).decode()
        self.assertIn("1 certificate issued that no client received", page)
        self.assertIn(orphan.serial, page)


class PartialRowTests(FaceTestCase):
    """
    Rows a crash of an older gateway left, repaired from the CA.
    """

    def bare_authorization(self) -> Authorization:
        """
        A pending authorization stored without its challenges, as a crash
        between the two writes of an older gateway left it.
        """
        self.authorize(NAME)  # makes the account
        context = self.gateway.context
        account = self.successResultOf(self.gateway.store.account_by_thumbprint(KEY.thumbprint))

        async def make():
            upstream_account = await upstream_for(context, account)
            order = await context.upstream.new_order(upstream_account, ["bare.example.test"])
            upstream = await context.upstream.get_authorization(upstream_account, order.authorizations[0])
            now = context.now()
            return await context.store.add_authorization(Authorization(
                id=context.store.new_id(), account_id=account.id, order_id=None,
                upstream_url=upstream.url, identifier=upstream.identifier, wildcard=False,
                status="pending", expires=upstream.expires, created_at=now, updated_at=now))

        return self.resolve(make())

    def test_new_authz_repairs_an_authorization_without_challenges(self):
        """
        new-authz finds the partial authorization and answers it with its
        challenges, read from the CA (it used to answer ``"challenges": []``
        forever).
        """
        bare = self.bare_authorization()
        reply = self.new_authz("bare.example.test")
        self.assertEqual(reply.status, 201, reply.body)
        self.assertEqual(reply.header("location"), self.url(f"/acme/authz/{bare.id}"))
        self.assertTrue(reply.json()["challenges"])
        self.assertTrue(self.successResultOf(self.gateway.store.challenges_for_authorization(bare.id)))

    def test_recovery_repairs_partial_rows_and_marks_lost_orders(self):
        """
        Recovery completes the authorization from the CA, and marks an
        attempt whose order the CA cannot list (FakeCA has no order list,
        like Let's Encrypt) as lost — still counted in the order budget.
        """
        bare = self.bare_authorization()
        store = self.gateway.store
        attempt = OrderAttempt(id=store.new_id(), account_id=1, identifiers=("lost.example.test",),
                               created_at=self.gateway.context.now())
        self.successResultOf(store.write([Insert(attempt)]))
        self.assertEqual(len(self.successResultOf(store.inconsistencies())), 2)
        done = self.resolve(recover(self.gateway.context))
        self.assertEqual((done.repaired, done.lost, done.failed), (1, 1, 0))
        self.assertTrue(self.successResultOf(store.challenges_for_authorization(bare.id)))
        self.assertEqual(self.successResultOf(store.inconsistencies()), [])
        self.assertEqual(self.successResultOf(store.open_order_attempts()), [])
        self.assertIn(attempt.created_at, self.successResultOf(store.order_times_since(1, attempt.created_at)))

    def test_key_change_done_at_the_ca_but_not_recorded(self):
        """
        The CA rolled the account over to the new key, but the gateway never
        recorded it (it crashed in between).  The client's retried
        key-change completes: the gateway sees the new key owns the account
        at the CA and records it.
        """
        registration = self.register(KEY)
        account = self.successResultOf(self.gateway.store.account_by_thumbprint(KEY.thumbprint))
        context = self.gateway.context
        self.resolve(_roll_over(context, account, NEW))
        reply = self.post("/acme/key-change", self.key_change_payload(NEW, registration))
        self.assertEqual(reply.status, 200, reply.body)
        self.assertEqual(reply.json()["key"], NEW.public_jwk_json)
        self.assertEqual(self.successResultOf(self.gateway.store.account_by_thumbprint(KEY.thumbprint)).status,
                         "retired")


async def _roll_over(context, account, new_key):
    upstream = await upstream_for(context, account)
    await context.upstream.change_key(upstream, new_key)


class UpstreamSwitchTests(FaceTestCase):
    """
    The gateway restarted with another ``--upstream`` on the same state.
    """

    def switch(self) -> FakeCA:
        """
        Point the gateway at a fresh CA, as a restart with another
        ``--upstream`` does (the same store, bound to the new CA).
        """
        old = self.ca
        new = FakeCA(base_url="https://ca-b.test", clock=self.gateway.clock)
        store = self.gateway.store
        store.upstream = new.directory_url
        self.gateway = build_test_gateway(self.keys, ca=new, store=store, other_cas=[old])
        self.clients = {}
        return new

    def test_nothing_of_the_old_ca_is_used_with_the_new(self):
        """
        After the switch, new-authz for a name the old CA validated makes a
        new order at the new CA (under an account found or created there by
        key); the old authorization's URL answers 404; the old certificate
        stays readable at its URL and is revoked at the CA that issued it.
        """
        authz_url, _ = self.authorize()
        issued = self.post("/acme/new-cert", {"resource": "new-cert",
                                              "csr": b64url(make_csr([NAME]))})
        self.assertEqual(issued.status, 201, issued.body)
        old = self.ca
        before = sum(old.counts.values())
        new = self.switch()

        reply = self.new_authz(NAME)
        self.assertEqual(reply.status, 201, reply.body)
        self.assertNotEqual(reply.header("location"), authz_url)
        self.assertEqual(reply.json()["status"], "pending")
        self.assertEqual((new.counts["newAccount"] >= 1, new.counts["newOrder"]), (True, 1))
        self.assertEqual(sum(old.counts.values()), before, "nothing was sent to the old CA")
        account = self.successResultOf(self.gateway.store.account_by_thumbprint(KEY.thumbprint))
        self.assertTrue(account.upstream_url.startswith("https://ca-b.test/"))
        self.assertProblem(self.get(authz_url[len(self.base):]), 404, "malformed",
                           "previous upstream CA")

        again = self.get(issued.header("location")[len(self.base):])
        self.assertEqual((again.status, again.body), (200, issued.body))
        revoked = self.post("/acme/revoke-cert", {"resource": "revoke-cert",
                                                  "certificate": b64url(issued.body)})
        self.assertEqual(revoked.status, 200, revoked.body)
        self.assertEqual(old.certificates[0].revoked_reason, 0)
        self.assertEqual(new.counts["revokeCert"], 0)

    def test_new_cert_after_the_switch(self):
        """
        A client that only calls new-cert (its v1 authorizations made at the
        old CA) is told to authorize its names at the new one, rather than
        the gateway finalizing an old order.
        """
        self.issue()
        self.switch()
        reply = self.post("/acme/new-cert", {"resource": "new-cert", "csr": b64url(make_csr([NAME]))})
        self.assertProblem(reply, 403, "unauthorized", "not found or expired", NAME)
        self.issue()


class LostCAStateTests(FaceTestCase):
    """
    The CA lost its state (a Pebble restarted on the same address): the
    account is found or created again by key, and nothing the CA knew of
    the old one is offered to a client again.
    """

    def test_client_flow_works_after_the_ca_forgot_everything(self):
        """
        A client that validated its name and got a certificate runs its
        flow again after the CA forgot everything: within two runs of the
        flow (one, with the rule that new-authz never returns a used
        authorization) it gets a certificate, and the authorizations from
        before are expired once the gateway noticed the loss.
        """
        old_authz, _ = self.authorize()
        reply = self.post("/acme/new-cert", {"resource": "new-cert", "csr": b64url(make_csr([NAME]))})
        self.assertEqual(reply.status, 201, reply.body)
        for table in (self.ca.accounts, self.ca.authorizations, self.ca._challenges):
            table.clear()
        del self.ca.orders[:], self.ca.certificates[:]

        for run in range(2):
            authz = self.new_authz(NAME)
            self.assertEqual(authz.status, 201, authz.body)
            if authz.json()["status"] != "valid":
                challenge = next(c for c in authz.json()["challenges"] if c["type"] == "http-01")
                self.post(challenge["uri"], {"resource": "challenge", "type": "http-01",
                                             "keyAuthorization": KEY.key_authorization(challenge["token"])})
            issued = self.post("/acme/new-cert", {"resource": "new-cert",
                                                  "csr": b64url(make_csr([NAME]))})
            if issued.status == 201:
                break
        self.assertEqual(issued.status, 201, issued.body)
        self.assertEqual(len(self.ca.certificates), 1)
        self.assertProblem(self.get(old_authz[len(self.base):]), 404, "malformed", "Expired")
