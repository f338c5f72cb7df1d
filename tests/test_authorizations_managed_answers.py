"""
A challenge answer from a client whose key the gateway manages
(``--unknown-keys managed``; `gateway.translate.authorizations.
_validate_for_managed_account`): the CA checks key authorizations against
the gateway's key, so whatever challenge the client answers, the gateway
validates the name itself with its own responder — counted, logged when
the CA refuses it, and not at all when the CA no longer holds the
authorization pending.
"""

from __future__ import annotations

import shutil
import tempfile

from cryptography.hazmat.primitives.asymmetric import ec

from gateway.keys.jose import AccountKey
from gateway.process.testing import FakeCA, build_test_gateway
from gateway.status import Status
from gateway.translate.revalidation import Validators
from tests.support.logs import LogLines
from tests.test_authorizations_published_answers import RecordingResponder
from tests.test_v1_face import KEY, NAME, FaceTestCase

LOG = "gateway.translate.authorizations"
CLIENT = AccountKey.from_private_key(ec.generate_private_key(ec.SECP256R1()))


class ManagedAnswerTests(FaceTestCase):
    keys = (KEY,)

    def build(self, **ca_options):
        self.journal = []
        self.ca = FakeCA(reuse_authorizations=False, **ca_options)
        validators = Validators({"http-01": RecordingResponder(self.journal)})
        self.gateway = build_test_gateway(self.keys, ca=self.ca, validators=validators,
                                          unknown_keys="managed",
                                          managed_keys=self.key_directory())
        self.base = self.gateway.base_url
        self.clients = {}

    def key_directory(self) -> str:
        directory = tempfile.mkdtemp(prefix="managed-keys-")
        self.addCleanup(shutil.rmtree, directory, True)
        return directory

    def answer_as_client(self):
        reply = self.new_authz(key=CLIENT)
        self.assertEqual(reply.status, 201, reply.body)
        # the client's choice: the gateway validates with its own means whatever it is
        challenge = next(c for c in reply.json()["challenges"] if c["type"] == "dns-01")
        answered = self.post(challenge["uri"], {"resource": "challenge", "type": "dns-01"},
                             key=CLIENT)
        return reply, answered

    def test_the_gateway_validates_the_name_itself(self):
        self.build()
        reply, answered = self.answer_as_client()
        self.assertEqual(answered.status, 202, answered.body)
        self.assertEqual(answered.json()["type"], "dns-01")  # the challenge answered, as it stands
        self.assertEqual(self.gateway.context.revalidations.counts, {"valid": 1})
        self.assertEqual([entry[0:2] for entry in self.journal],
                         [("publish", NAME), ("withdraw", NAME)])
        (ca_authorization,) = self.ca.authorizations.values()
        self.assertEqual(ca_authorization.status, Status.VALID)
        self.assertEqual(self.get(reply.header("location")[len(self.base):]).json()["status"],
                         "valid")

    def test_a_name_the_ca_refuses_is_counted_logged_and_shown_invalid(self):
        self.build(validator=lambda *args: False)
        with LogLines(LOG) as log:
            reply, answered = self.answer_as_client()
        self.assertEqual(answered.status, 202, answered.body)
        self.assertEqual(self.gateway.context.revalidations.counts, {"invalid": 1})
        (line,) = log.lines
        self.assertTrue(line.startswith(f"managed validation of {NAME} failed: "), line)
        self.assertIn("not the expected key authorization", line)
        shown = self.get(reply.header("location")[len(self.base):]).json()
        self.assertEqual(shown["status"], "invalid")

    def test_an_authorization_the_ca_no_longer_holds_pending_is_not_validated(self):
        self.build()
        reply = self.new_authz(key=CLIENT)
        (ca_authorization,) = self.ca.authorizations.values()
        ca_authorization.status = Status.VALID
        challenge = reply.json()["challenges"][0]
        answered = self.post(challenge["uri"], {"resource": "challenge", "type": challenge["type"]},
                             key=CLIENT)
        self.assertEqual(answered.status, 202, answered.body)
        self.assertEqual(self.gateway.context.revalidations.counts, {})
        self.assertEqual(self.journal, [])
        self.assertEqual(self.ca.counts["challenge"], 0)

    def test_a_read_right_after_the_answer_costs_the_ca_nothing(self):
        """
        The answer read the authorization upstream after the gateway's own
        attempt — here a wildcard, which its http-01 responder cannot prove,
        so nothing was sent and it stays pending: a client's read right
        after it is answered from the store.
        """
        self.build()
        reply = self.new_authz("*." + NAME, key=CLIENT)
        self.assertEqual(reply.status, 201, reply.body)
        (challenge,) = reply.json()["challenges"]
        answered = self.post(challenge["uri"], {"resource": "challenge", "type": "dns-01"},
                             key=CLIENT)
        self.assertEqual(answered.status, 202, answered.body)
        self.assertEqual(self.gateway.context.revalidations.counts, {"invalid": 1})
        reads = self.ca.counts["authorization"]
        shown = self.get(reply.header("location")[len(self.base):])
        self.assertEqual(shown.json()["status"], "pending")
        self.assertEqual(self.ca.counts["authorization"], reads)
