"""
Unit tests of revoke-cert signed by a certificate's own key, for
certificates the gateway did not issue (from before the migration): the
gateway verifies the v1 JWS against the certificate's public key and, when
that key was imported into the key store, revokes upstream with it (RFC
8555 ``jwk`` form); otherwise the client gets Boulder's 404.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric import ec

from gateway.keys.jose import AccountKey, b64url
from gateway.process.testing import build_test_gateway
from tests.support.v1_client import V1TestClient
from tests.test_v1_face import KEY, NAME, FaceTestCase, make_csr

CERT_KEY = AccountKey.from_private_key(ec.generate_private_key(ec.SECP256R1()))


class CertificateKeyRevocationTests(FaceTestCase):
    """
    A certificate issued through one gateway, revoked through another that
    shares the CA but not the state (as after a migration).
    """

    keys = (KEY, CERT_KEY)

    def setUp(self):
        super().setUp()
        self.register()
        self.authorize(NAME)
        reply = self.post("/acme/new-cert", {
            "resource": "new-cert", "csr": b64url(make_csr([NAME], key=CERT_KEY.private_key))})
        self.assertEqual(reply.status, 201, reply.body)
        self.leaf = reply.body

    def revoke_through(self, keys, reason=None):
        gateway = build_test_gateway(keys, ca=self.ca)
        client = V1TestClient(gateway.base_url, CERT_KEY, http=gateway.client)
        payload = {"resource": "revoke-cert", "certificate": b64url(self.leaf)}
        if reason is not None:
            payload["reason"] = reason
        return self.resolve(client.post(gateway.base_url + "/acme/revoke-cert", payload))

    def test_imported_certificate_key_revokes_upstream(self):
        """
        With the certificate key in the store, the unknown certificate is
        revoked upstream with that key, reason passed through.
        """
        reply = self.revoke_through([CERT_KEY], reason=4)
        self.assertEqual(reply.status, 200, reply.body)
        self.assertEqual(self.ca.certificates[0].revoked_reason, 4)

    def test_certificate_key_not_held(self):
        """
        Without it, the gateway cannot revoke a certificate it never
        issued: 404 "No such certificate", and nothing is revoked.
        """
        reply = self.revoke_through([KEY])
        self.assertProblem(reply, 404, "malformed", "No such certificate")
        self.assertIsNone(self.ca.certificates[0].revoked_reason)

    def test_known_certificate_still_revoked_as_its_issuer(self):
        """
        For a certificate it issued, the gateway keeps revoking as the
        issuing account even when it holds the certificate key too.
        """
        upstream = self.gateway.context.upstream
        signers = []
        original = upstream.revoke_certificate

        async def recording(der, **signer):
            signers.append(signer)
            return await original(der, **signer)

        upstream.revoke_certificate = recording
        client = V1TestClient(self.base, CERT_KEY, http=self.gateway.client)
        reply = self.resolve(client.post(self.url("/acme/revoke-cert"), {
            "resource": "revoke-cert", "certificate": b64url(self.leaf), "reason": 1}))
        self.assertEqual(reply.status, 200, reply.body)
        self.assertEqual(self.ca.certificates[0].revoked_reason, 1)
        (signer,) = signers
        self.assertEqual(signer["account"].key.thumbprint, KEY.thumbprint)
        self.assertNotIn("certificate_key", signer)
