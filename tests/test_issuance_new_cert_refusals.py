"""
What ``new-cert`` (`gateway.translate.issuance.new_certificate`) refuses
before any order is made upstream: a name the gateway's identifier policy
forbids, and, without any means to validate names, a name the account never
authorized (Boulder's "authorizations for these names not found").  Through
a whole in-memory gateway and the FakeCA.
"""

from __future__ import annotations

from gateway.keys.jose import b64url
from tests.test_v1_face import NAME, FaceTestCase, make_csr


class NewCertRefusalTests(FaceTestCase):

    def new_cert(self, names):
        return self.post("/acme/new-cert", {"resource": "new-cert", "csr": b64url(make_csr(list(names)))})

    def test_a_name_never_authorized_is_refused_before_any_order(self):
        other = "never.example.test"
        self.register()
        self.authorize(NAME)
        orders = self.ca.counts["newOrder"]
        reply = self.new_cert((NAME, other))
        problem = self.assertProblem(reply, 403, "unauthorized")
        self.assertEqual(
            problem["detail"],
            "Error creating new cert :: authorizations for these names not found or expired: "
            f"{other}. Request an authorization (new-authz) for each name first, or start the "
            f"gateway with {self.gateway.context.validators.missing_means([])} to let it "
            "validate them.")
        self.assertEqual(self.ca.counts["newOrder"], orders, "no order is spent on it")
        self.assertEqual(self.ca.counts["finalize"], 0)

    def test_every_name_never_authorized_is_named(self):
        self.register()
        reply = self.new_cert(("a.example.test", "b.example.test"))
        problem = self.assertProblem(reply, 403, "unauthorized")
        self.assertIn("not found or expired: a.example.test, b.example.test. ", problem["detail"])
        self.assertEqual(self.ca.counts["newOrder"], 0)

    def test_a_name_the_policy_forbids_is_refused_before_any_order(self):
        self.register()
        self.authorize(NAME)
        orders = self.ca.counts["newOrder"]
        reply = self.new_cert((NAME, "example.123"))
        self.assertEqual(reply.status // 100, 4, reply.body)
        problem = reply.json()
        self.assertTrue(problem["type"].startswith("urn:acme:error:"), problem)
        self.assertIn("example.123", problem["detail"])
        self.assertEqual(self.ca.counts["newOrder"], orders)
        self.assertEqual(self.ca.counts["finalize"], 0)
