"""
Unit tests of ``/acme/reg/<key thumbprint>``: the registration URL
``acme-gateway adopt certbot`` writes into a migrated certbot's
``regr.json`` (its gateway id is unknown until its first request, and the
old URL names the dead v1 CA).  It is the signer's own registration, and
nobody else's.
"""

from __future__ import annotations

from tests.test_v1_face import KEY, OTHER, FaceTestCase


class RegistrationByThumbprintTests(FaceTestCase):
    """
    ``reg/<thumbprint>`` from a migrated client, through an in-memory
    gateway over the FakeCA.
    """

    def test_first_request_updates_contact(self):
        """
        A key the gateway has never seen may update its contact at its
        thumbprint URL as its very first request: the account is adopted
        and the contact changed upstream (202).
        """
        reply = self.post(f"/acme/reg/{KEY.thumbprint}", {
            "resource": "reg", "contact": ["mailto:new@example.test"]})
        self.assertEqual(reply.status, 202, reply.body)
        self.assertEqual(reply.json()["contact"], ["mailto:new@example.test"])
        self.assertEqual(list(self.ca.accounts[1].contact), ["mailto:new@example.test"])

    def test_deactivation(self):
        """
        Deactivation at the thumbprint URL deactivates upstream and locally
        (200), after which the key is refused as Boulder refused it.
        """
        self.register()
        reply = self.post(f"/acme/reg/{KEY.thumbprint}", {"resource": "reg", "status": "deactivated"})
        self.assertEqual(reply.status, 200, reply.body)
        self.assertEqual(self.ca.accounts[1].status, "deactivated")
        self.assertProblem(self.new_authz(), 403, "unauthorized", "Registration is not valid")

    def test_another_keys_thumbprint(self):
        """
        Another key's thumbprint is not the signer's registration: 403, and
        that account is untouched.
        """
        self.register(OTHER)
        reply = self.post(f"/acme/reg/{OTHER.thumbprint}", {"resource": "reg", "status": "deactivated"})
        self.assertProblem(reply, 403, "unauthorized", "did not match registration key")
        self.assertEqual(self.ca.accounts[1].status, "valid")
