"""
`gateway.translate.revocation` for a certificate of the CA the gateway ran
against before ``--upstream`` changed (issue 21): it is revoked there, as
the issuing account found by its key at that CA, and refused in words that
name that CA when the account is gone from it.
"""

from __future__ import annotations

from gateway.keys.jose import b64url
from gateway.process.testing import FakeCA, build_test_gateway
from tests.test_v1_face import FaceTestCase


class PreviousCARevocationTests(FaceTestCase):

    def issue_then_switch(self):
        """
        A certificate from the first CA, then the gateway restarted against
        a second one on the same store; the certificate and both CAs.
        """
        issued = self.issue()
        old = self.ca
        new = FakeCA(base_url="https://ca-b.test", clock=self.gateway.clock)
        store = self.gateway.store
        store.upstream = new.directory_url
        self.gateway = build_test_gateway(self.keys, ca=new, store=store, other_cas=[old])
        self.clients = {}
        return issued.body, old, new

    def test_revoked_at_the_previous_ca_as_the_issuing_account(self):
        certificate, old, new = self.issue_then_switch()
        lookups = old.counts["newAccount"]
        reply = self.post("/acme/revoke-cert", {"resource": "revoke-cert",
                                                "certificate": b64url(certificate), "reason": 4})
        self.assertEqual(reply.status, 200, reply.body)
        self.assertEqual(old.certificates[0].revoked_reason, 4)
        self.assertEqual(old.counts["newAccount"], lookups + 1)  # found by key, not made
        self.assertEqual(len(old.accounts), 1)
        self.assertEqual(new.counts["revokeCert"], 0)

    def test_an_issuing_account_the_previous_ca_forgot(self):
        """
        The previous CA no longer knows the issuing account: 403
        ``unauthorized`` naming that CA, nothing revoked, no account made
        there.
        """
        certificate, old, new = self.issue_then_switch()
        old.accounts.clear()
        reply = self.post("/acme/revoke-cert", {"resource": "revoke-cert",
                                                "certificate": b64url(certificate)})
        problem = self.assertProblem(reply, 403, "unauthorized")
        self.assertEqual(problem["detail"],
                         "The account that issued this certificate is not known to the CA that "
                         f"issued it ({old.directory_url}) any more")
        self.assertIsNone(old.certificates[0].revoked_reason)
        self.assertEqual(old.accounts, {})
        self.assertEqual(new.counts["revokeCert"], 0)
