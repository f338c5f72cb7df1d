"""
What an answered challenge shows and is stored with while the CA validates
it (`gateway.translate.authorizations._answer`), seen by a v2 client, whose
challenge shows the gateway's status as it stands (v1 shows ``processing``
as ``pending``): ``processing`` — also when the CA's answer still says
``pending`` (Debian's Pebble 2.4 does, for a moment, until its VA takes the
job) — for the answered challenge only; a verdict the CA gave in its
answer is stored as such, even when the read that follows it fails.
"""

from __future__ import annotations

import attrs

from gateway.process.testing import FakeCA
from gateway.status import Status
from tests.support.v2_client import POST_AS_GET
from tests.test_v2_face import V2FaceTestCase


class LaggingCA(FakeCA):
    """A CA whose answer to a challenge still shows it ``pending``."""

    def _post_challenge(self, signed, challenge_id):
        reply = super()._post_challenge(signed, challenge_id)
        if signed.payload is not None:
            reply = attrs.evolve(reply, body=dict(reply.body, status=Status.PENDING))
        return reply


class AnsweredStatusTests(V2FaceTestCase):

    def answer(self, ca, fail_read=False):
        self.build(ca=ca)
        self.ok(self.resolve(self.client.new_account()), 201)
        order, _ = self.new_order()
        url = order["authorizations"][0]
        authorization = self.ok(self.post(url, POST_AS_GET)).json()
        challenge = next(c for c in authorization["challenges"] if c["type"] == "http-01")
        if fail_read:
            self.ca.fail_next("/authz/", 500, {"type": "serverInternal", "detail": "the CA broke"})
            self.problem(self.post(challenge["url"], {}), "serverInternal", 500)
            answered = None
        else:
            answered = self.ok(self.post(challenge["url"], {})).json()
        stored = self.successResultOf(self.gateway.store.challenges_for_authorization(
            url.rsplit("/", 1)[1]))
        return answered, {c.type: c.status for c in stored}

    def test_a_challenge_the_ca_validates_later_shows_processing(self):
        answered, stored = self.answer(FakeCA(validate_immediately=False))
        self.assertEqual((answered["type"], answered["status"]), ("http-01", "processing"))
        self.assertEqual(stored, {"http-01": Status.PROCESSING, "dns-01": Status.PENDING})

    def test_a_cas_answer_that_still_says_pending_is_processing(self):
        answered, stored = self.answer(LaggingCA(validate_immediately=False))
        self.assertEqual((answered["type"], answered["status"]), ("http-01", "processing"))
        self.assertEqual(stored, {"http-01": Status.PROCESSING, "dns-01": Status.PENDING})

    def test_the_cas_verdict_in_its_answer_is_stored_when_the_read_after_it_fails(self):
        _, stored = self.answer(FakeCA(), fail_read=True)
        self.assertEqual(stored, {"http-01": Status.VALID, "dns-01": Status.PENDING})
