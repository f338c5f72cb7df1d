"""
``new-cert`` when the CA's finalize answers with an order that is final but
holds no certificate (``invalid``, with or without the CA's ``error``): the
client gets Boulder's refusal with the CA's words (for a CN-only CSR, the
advice to add the name as a SAN), and the stored order keeps the CA's status.
Through a whole in-memory gateway and the FakeCA, whose finalize answer is
scripted.
"""

from __future__ import annotations

import json

from gateway.keys.jose import b64url
from tests.test_csr import vector
from tests.test_v1_face import NAME, FaceTestCase, make_csr


class InvalidOrderTests(FaceTestCase):

    def script_invalid_finalize(self, error=None):
        """The next finalize answers with the account's last order, made invalid."""
        order = self.ca.orders[-1]
        body = dict(order.to_json(self.ca.format_time), status="invalid")
        if error is not None:
            body["error"] = error
        self.ca.fail_next("/finalize/", 200, json.dumps(body).encode(),
                          headers={"Content-Type": "application/json", "Location": order.url})

    def stored_statuses(self, names=(NAME,)):
        account = self.successResultOf(self.gateway.store.account_by_thumbprint(self.keys[0].thumbprint))
        orders = self.successResultOf(self.gateway.store.find_orders(
            account.id, names, ("pending", "ready", "processing", "valid", "invalid")))
        return [order.status for order in orders]

    def new_cert(self, der):
        return self.post("/acme/new-cert", {"resource": "new-cert", "csr": b64url(der)})

    def test_the_cas_error_reaches_the_client_and_the_order_is_stored_invalid(self):
        self.register()
        self.authorize()
        self.script_invalid_finalize({"type": "urn:ietf:params:acme:error:caa",
                                      "detail": "CAA record forbids issuance", "status": 403})
        problem = self.assertProblem(self.new_cert(make_csr([NAME])), 403, "unauthorized")
        self.assertEqual(problem["detail"], "Error creating new cert :: CAA record forbids issuance")
        self.assertEqual(self.stored_statuses(), ["invalid"])

    def test_without_an_error_the_client_is_told_the_orders_status(self):
        self.register()
        self.authorize()
        self.script_invalid_finalize()
        problem = self.assertProblem(self.new_cert(make_csr([NAME])), 403, "unauthorized")
        self.assertEqual(problem["detail"], "Error creating new cert :: the order is invalid")
        self.assertEqual(self.stored_statuses(), ["invalid"])

    def test_a_cn_only_csr_the_ca_made_invalid_is_told_to_add_a_san(self):
        name = "cn-only.example.test"
        self.register()
        self.authorize(name)
        self.script_invalid_finalize({"type": "urn:ietf:params:acme:error:badCSR",
                                      "detail": "CSR has no DNS names", "status": 400})
        problem = self.assertProblem(self.new_cert(vector("openssl-cn-only-rsa2048.pem")), 400, "malformed")
        self.assertTrue(problem["detail"].startswith(
            "Error creating new cert :: the CA refused the CSR (CSR has no DNS names). The CSR names "
            f"{name} only in its subject's Common Name"), problem["detail"])
        self.assertEqual(self.stored_statuses((name,)), ["invalid"])

    def test_a_cn_only_csr_refused_for_another_reason_gets_the_cas_words(self):
        name = "cn-only.example.test"
        self.register()
        self.authorize(name)
        self.script_invalid_finalize({"type": "urn:ietf:params:acme:error:caa",
                                      "detail": "CAA record forbids issuance", "status": 403})
        problem = self.assertProblem(self.new_cert(vector("openssl-cn-only-rsa2048.pem")), 403, "unauthorized")
        self.assertEqual(problem["detail"], "Error creating new cert :: CAA record forbids issuance")
