"""
A v1 challenge answer with the gateway's built-in HTTP-01 responder
(`gateway.translate.authorizations._answer` and `_publish_for_client`): the
client's key authorization is published before the CA is asked and
withdrawn once the authorization settles, when the CA refuses the answer,
and when the gateway stops following it; a challenge the CA calls
answered already (``malformed``) is read, and refused only while it is
still pending; other challenges publish nothing.
"""

from __future__ import annotations

from gateway.process.testing import FakeCA, build_test_gateway
from gateway.status import Status
from gateway.translate.revalidation import Validators
from tests.test_v1_face import KEY, NAME, FaceTestCase


class RecordingResponder:
    """An HTTP-01 responder that records what it is asked to serve."""

    def __init__(self, journal):
        self.journal = journal

    async def publish(self, name, token, key_authorization):
        self.journal.append(("publish", name, token, key_authorization))

    async def withdraw(self, name, token, key_authorization):
        self.journal.append(("withdraw", name, token, key_authorization))


class PublishedAnswerTestCase(FaceTestCase):
    ca_options: dict = {"reuse_authorizations": False}

    def setUp(self):
        self.journal = []
        self.ca = FakeCA(**self.ca_options)
        real_challenge = self.ca._post_challenge

        def challenge_post(signed, challenge_id):
            self.journal.append(("CA answered", challenge_id))
            return real_challenge(signed, challenge_id)

        self.ca._post_challenge = challenge_post
        validators = Validators({"http-01": RecordingResponder(self.journal)})
        self.gateway = build_test_gateway(self.keys, ca=self.ca, validators=validators)
        self.base = self.gateway.base_url
        self.clients = {}

    def challenge_of(self, reply, kind="http-01"):
        return next(c for c in reply.json()["challenges"] if c["type"] == kind)

    def ca_challenge(self, kind="http-01"):
        (authorization,) = self.ca.authorizations.values()
        return next(c for c in authorization.challenges if c.type == kind)

    def answer(self, challenge):
        return self.post(challenge["uri"], {"resource": "challenge", "type": challenge["type"],
                                            "keyAuthorization": KEY.key_authorization(challenge["token"])})

    def stored_challenge(self, reply, kind="http-01"):
        record = self.successResultOf(self.gateway.store.authorization_by_id(
            reply.header("location").rsplit("/", 1)[1]))
        return next(c for c in self.successResultOf(
            self.gateway.store.challenges_for_authorization(record.id)) if c.type == kind)



class PublishedAnswerTests(PublishedAnswerTestCase):

    def test_published_before_the_ca_is_asked_and_withdrawn_once_valid(self):
        self.register()
        reply = self.new_authz()
        challenge = self.challenge_of(reply)
        answered = self.answer(challenge)
        self.assertEqual(answered.status, 202, answered.body)
        self.assertEqual(answered.json()["status"], "valid")
        published = (NAME, challenge["token"], KEY.key_authorization(challenge["token"]))
        self.assertEqual(self.journal, [("publish", *published),
                                        ("CA answered", self.ca_challenge().id),
                                        ("withdraw", *published)])
        self.assertEqual(self.stored_challenge(reply).status, Status.VALID)

    def test_a_dns01_answer_publishes_nothing(self):
        self.register()
        answered = self.answer(self.challenge_of(self.new_authz(), "dns-01"))
        self.assertEqual(answered.status, 202, answered.body)
        self.assertEqual([entry[0] for entry in self.journal], ["CA answered"])

    def test_an_answer_the_ca_refuses_is_withdrawn_and_left_pending(self):
        self.register()
        reply = self.new_authz()
        challenge = self.challenge_of(reply)
        self.ca.fail_next("/chall/", 403, {"type": "unauthorized", "detail": "not now"})
        answered = self.answer(challenge)
        self.assertProblem(answered, 403, "unauthorized", "not now")
        self.assertEqual([entry[0] for entry in self.journal], ["publish", "withdraw"])
        self.assertEqual(self.stored_challenge(reply).status, Status.PENDING)
        self.assertEqual(self.ca_challenge().status, Status.PENDING)

    def test_malformed_for_a_challenge_still_pending_is_the_cas_refusal(self):
        self.register()
        reply = self.new_authz()
        self.ca.fail_next("/chall/", 400, {"type": "malformed", "detail": "bad answer"})
        answered = self.answer(self.challenge_of(reply))
        self.assertProblem(answered, 400, "malformed", "bad answer")
        self.assertEqual(self.ca.counts["challenge"], 2, "the answer, then a read of the challenge")
        self.assertEqual([entry[0] for entry in self.journal], ["publish", "CA answered", "withdraw"])
        self.assertEqual(self.stored_challenge(reply).status, Status.PENDING)

    def test_malformed_for_a_challenge_answered_already_is_its_state(self):
        """
        The CA refuses a second answer as ``malformed`` (a client's retry
        that the gateway did not see through): the challenge, read, is
        already valid, and so is the answer.
        """
        self.register()
        reply = self.new_authz()
        (authorization,) = self.ca.authorizations.values()
        authorization.status = Status.VALID
        self.ca_challenge().status = Status.VALID
        self.ca.fail_next("/chall/", 400, {"type": "malformed", "detail": "already answered"})
        answered = self.answer(self.challenge_of(reply))
        self.assertEqual(answered.status, 202, answered.body)
        self.assertEqual(answered.json()["status"], "valid")
        self.assertEqual(answered.json()["uri"], self.challenge_of(reply)["uri"])
        self.assertEqual(self.stored_challenge(reply).status, Status.VALID)
        self.assertEqual(self.journal[-1][0], "withdraw")


class FollowedAnswerTests(PublishedAnswerTestCase):
    """A CA that decides a challenge only at a later read."""

    ca_options = {"reuse_authorizations": False, "validate_immediately": False}

    def test_withdrawn_only_once_the_authorization_settles(self):
        self.register()
        reply = self.new_authz()
        answered = self.answer(self.challenge_of(reply))
        self.assertEqual(answered.status, 202, answered.body)
        self.assertEqual(answered.json()["status"], "pending")
        self.assertEqual(self.stored_challenge(reply).status, Status.PROCESSING)
        self.assertEqual([entry[0] for entry in self.journal], ["publish", "CA answered"])
        self.gateway.advance(5)
        self.gateway.flush()
        self.assertEqual([entry[0] for entry in self.journal], ["publish", "CA answered", "withdraw"])
        self.assertEqual(self.get(reply.header("location")[len(self.base):]).json()["status"], "valid")

    def test_withdrawn_when_the_following_fails(self):
        self.register()
        reply = self.new_authz()
        self.answer(self.challenge_of(reply))
        self.ca.fail_next("/authz/", 500, {"type": "serverInternal", "detail": "down"})
        self.gateway.advance(5)
        self.gateway.flush()
        self.assertEqual([entry[0] for entry in self.journal], ["publish", "CA answered", "withdraw"])

    def test_a_second_answer_sends_nothing_more(self):
        self.register()
        reply = self.new_authz()
        challenge = self.challenge_of(reply)
        self.answer(challenge)
        again = self.answer(challenge)
        self.assertEqual(again.status, 202, again.body)
        # a read (the CA decides at it), not a second answer nor a second publication
        self.assertEqual(again.json()["status"], "valid")
        self.assertEqual([entry[0] for entry in self.journal if entry[0] != "withdraw"],
                         ["publish", "CA answered"])
