"""
Unauthenticated reads of authorizations and challenges
(`gateway.translate.authorizations.read_authorization`, ``read_challenge``,
``read_view``) as the client, the CA and the store see them: a poll costs
one store call (`IStore.authorization_read`: the authorization with its
owner and challenges); an authorization past its expiry is refused without
asking the CA, one the CA reports expired in Boulder's words; a challenge
is shown by its own URL; a read just after the CA's is the store's;
new-authz asks the CA before handing a pending one out again; a validation
found at the CA is followed, a followed one handed out again from its
follower, one stored as validated by a process that is gone followed at
the CA's pace; a read at the CA (and a deactivation) shows the CA's problem
of a challenge, not the stored column; the gateway's failed tls-sni-01
check stands over a raced ``pending``; an answer's reply shows the key
authorization.
"""

from __future__ import annotations


from twisted.trial.unittest import SynchronousTestCase

from gateway.status import Status
from gateway.validation.tlssni01 import VAProblem
from tests import test_tlssni01_v1 as v1_tlssni
from tests.support.store_calls import count_store_calls
from tests.test_authorizations_answers import AnswerTestCase
from tests.test_v1_face import KEY


class StoreCallTests(AnswerTestCase):

    def count_calls(self, *names):
        """Count the calls of the store's methods ``names`` from now on."""
        return count_store_calls(self, self.gateway.store, *names)

    def count_store_reads(self):
        """`count_calls` of every store method a read of an authorization might use."""
        return self.count_calls("authorization_read", "authorization_by_id", "account_by_id",
                                "challenges_for_authorization")

    def assertOwnersKeyAuthorizations(self, authorization, key=KEY):
        """Each challenge shows its owner's key authorization, as Boulder showed it."""
        self.assertEqual([c["keyAuthorization"] for c in authorization["challenges"]],
                         [key.key_authorization(c["token"]) for c in authorization["challenges"]])

    def read_in_one_store_call(self, url, status):
        """
        ``url`` read by a client: shown with ``status`` and the owner's key
        authorizations, from one store call.
        """
        counts = self.count_store_reads()
        shown = self.get(url[len(self.base):])
        self.assertEqual(shown.status, 200, shown.body)
        authorization = shown.json()
        self.assertEqual(authorization["status"], status)
        self.assertOwnersKeyAuthorizations(authorization)
        self.assertEqual(dict(counts), {"authorization_read": 1})
        return authorization

    def test_a_poll_reads_the_authorization_its_owner_and_challenges_in_one_store_call(self):
        self.register()
        url, answered = self.authorize()
        self.assertEqual(answered.status, 202, answered.body)
        self.read_in_one_store_call(url, "valid")


class ExpiryTests(AnswerTestCase):

    def test_an_authorization_past_its_expiry_is_refused_without_asking_the_ca(self):
        self.register()
        reply = self.new_authz()
        url = reply.header("location")
        self.gateway.advance(8 * 86400)
        reads = self.ca.counts["authorization"]
        for path in (url, self.http01(reply.json())["uri"]):
            problem = self.assertProblem(self.get(path[len(self.base):]), 404, "malformed")
            self.assertEqual(problem["detail"], "Expired authorization")
        self.assertEqual(self.ca.counts["authorization"], reads)

    def test_an_authorization_the_ca_reports_expired_is_refused_in_boulders_words(self):
        self.register()
        reply = self.new_authz()
        url = reply.header("location")
        challenge = self.http01(reply.json())
        self.gateway.advance(60)
        (ca_authorization,) = self.ca.authorizations.values()
        ca_authorization.status = Status.EXPIRED
        problem = self.assertProblem(self.get(url[len(self.base):]), 404, "malformed")
        self.assertEqual(problem["detail"], "Expired authorization")
        self.assertEqual(self.stored(url).status, Status.EXPIRED)
        problem = self.assertProblem(self.get(challenge["uri"][len(self.base):]), 404, "malformed")
        self.assertEqual(problem["detail"], "Expired authorization")


class ChallengeReadTests(AnswerTestCase):

    def test_a_challenge_is_shown_by_its_own_url(self):
        self.register()
        reply = self.new_authz()
        for challenge in reply.json()["challenges"]:
            shown = self.get(challenge["uri"][len(self.base):])
            self.assertEqual(shown.status, 202, shown.body)  # Boulder's status for a challenge
            self.assertEqual({key: shown.json()[key] for key in ("type", "uri", "token", "status")},
                             {key: challenge[key] for key in ("type", "uri", "token", "status")})


class PendingReadTests(StoreCallTests):

    def test_a_read_again_within_the_recheck_is_the_stores_in_one_store_call(self):
        """
        A pending authorization nothing validates, read from the CA just
        now, is read again from the store alone: with its owner's key
        authorizations, in one store call, not asking the CA.
        """
        self.register()
        url = self.new_authz().header("location")
        self.gateway.advance(60)
        self.assertEqual(self.get(url[len(self.base):]).status, 200)
        reads = self.ca.counts["authorization"]
        self.read_in_one_store_call(url, "pending")
        self.assertEqual(self.ca.counts["authorization"], reads)

    def test_new_authz_asks_the_ca_before_handing_out_a_pending_authorization_read_just_now(self):
        self.register()
        url = self.new_authz().header("location")
        self.gateway.advance(60)
        self.assertEqual(self.get(url[len(self.base):]).status, 200)
        reads = self.ca.counts["authorization"]
        again = self.new_authz()
        self.assertEqual(again.status, 201, again.body)
        self.assertEqual(again.header("location"), url)
        self.assertEqual(self.ca.counts["authorization"], reads + 1)



class FoundValidatingTests(AnswerTestCase):
    ca_options = {"reuse_authorizations": False, "decide_after": 3600,
                  "validate_immediately": False}

    def test_an_authorization_the_ca_is_found_validating_is_followed(self):
        """
        A read that finds the CA validating (a challenge answered by
        another replica) follows the authorization until the CA decides.
        """
        self.register()
        reply = self.new_authz()
        url = reply.header("location")
        (ca_authorization,) = self.ca.authorizations.values()
        ca_challenge = next(c for c in ca_authorization.challenges if c.type == "http-01")
        ca_challenge.status = Status.PROCESSING
        ca_challenge.answered_at = self.ca._now()
        self.gateway.advance(60)
        shown = self.get(url[len(self.base):])
        self.assertEqual(shown.status, 200, shown.body)
        self.assertEqual(shown.json()["status"], "pending")
        ca_challenge.status = Status.VALID
        ca_authorization.status = Status.VALID
        reads = self.ca.counts["authorization"]
        # The follower reads the CA on its own, no client asking.
        self.gateway.advance(10)
        self.assertGreater(self.ca.counts["authorization"], reads)
        self.assertEqual(self.stored(url).status, Status.VALID)
        self.assertEqual(self.get(url[len(self.base):]).json()["status"], "valid")

    def test_new_authz_takes_a_followed_authorization_from_its_follower(self):
        """
        While the gateway follows an answered authorization, new-authz
        handing it out again takes the follower's newest answer: the CA
        is not asked once more.
        """
        self.register()
        reply = self.new_authz()
        url = reply.header("location")
        answered = self.post(self.http01(reply.json())["uri"],
                             {"resource": "challenge", "type": "http-01"})
        self.assertEqual(answered.status, 202, answered.body)
        self.assertEqual(self.get(url[len(self.base):]).json()["status"], "pending")
        reads = self.ca.counts["authorization"]
        again = self.new_authz()
        self.assertEqual(again.status, 201, again.body)
        self.assertEqual(again.header("location"), url)
        self.assertEqual(self.ca.counts["authorization"], reads)


    def test_an_answer_the_ca_has_not_decided_is_stored_processing_and_shown_with_its_key(self):
        self.register()
        reply = self.new_authz()
        url = reply.header("location")
        challenge = self.http01(reply.json())
        answered = self.post(challenge["uri"], {"resource": "challenge", "type": "http-01"})
        self.assertEqual(answered.status, 202, answered.body)
        self.assertEqual(answered.json()["status"], "pending")
        self.assertEqual(answered.json()["keyAuthorization"],
                         KEY.key_authorization(challenge["token"]))
        stored = {c.type: c.status for c in self.stored_challenges(url)}
        self.assertEqual(stored["http-01"], Status.PROCESSING)
        self.assertEqual(stored["dns-01"], Status.PENDING)

class FreshErrorTests(AnswerTestCase):

    def test_a_read_at_the_ca_shows_the_cas_error_not_the_stored_column(self):
        """
        A read at the CA shows the CA's problem of a challenge as the CA
        sent it, whatever the store's ``error`` column holds (kept from an
        earlier answer, or unreadable).
        """
        self.register()
        reply = self.new_authz()
        url = reply.header("location")
        stored = next(c for c in self.stored_challenges(url) if c.type == "http-01")
        (ca_authorization,) = self.ca.authorizations.values()
        ca_challenge = next(c for c in ca_authorization.challenges if c.type == "http-01")
        ca_challenge.error = {"type": "urn:ietf:params:acme:error:connection", "status": 400,
                              "detail": "the CA could not connect this time"}
        self.gateway.store._database.execute("UPDATE challenges SET error = ? WHERE id = ?",
                                             ("not json", stored.id))
        self.gateway.advance(60)
        reads = self.ca.counts["authorization"]
        shown = self.get(url[len(self.base):])
        self.assertEqual(shown.status, 200, shown.body)
        self.assertEqual(self.ca.counts["authorization"], reads + 1)
        error = self.http01(shown.json())["error"]
        self.assertIn("the CA could not connect this time", error["detail"])
        self.assertEqual(error["type"], "urn:acme:error:connection")


    def test_a_deactivation_shows_the_cas_error_not_the_stored_column(self):
        self.register()
        reply = self.new_authz()
        url = reply.header("location")
        stored = next(c for c in self.stored_challenges(url) if c.type == "http-01")
        (ca_authorization,) = self.ca.authorizations.values()
        ca_challenge = next(c for c in ca_authorization.challenges if c.type == "http-01")
        ca_challenge.error = {"type": "urn:ietf:params:acme:error:connection", "status": 400,
                              "detail": "the CA could not connect this time"}
        self.gateway.store._database.execute("UPDATE challenges SET error = ? WHERE id = ?",
                                             ("not json", stored.id))
        shown = self.post(url, {"resource": "authz", "status": "deactivated"})
        self.assertEqual(shown.status, 200, shown.body)
        self.assertEqual(shown.json()["status"], "deactivated")
        error = self.http01(shown.json())["error"]
        self.assertIn("the CA could not connect this time", error["detail"])
        self.assertEqual(error["type"], "urn:acme:error:connection")

class GatewayVerdictReadTests(SynchronousTestCase):
    """
    A gateway that offers tls-sni-01 (it judges those answers itself).
    """
    build = v1_tlssni.TLSSNI01Tests.build
    resolve = v1_tlssni.TLSSNI01Tests.resolve
    new_authz = v1_tlssni.TLSSNI01Tests.new_authz
    answer = v1_tlssni.TLSSNI01Tests.answer
    read = v1_tlssni.TLSSNI01Tests.read
    tls_sni = staticmethod(v1_tlssni.TLSSNI01Tests.tls_sni)
    count_calls = StoreCallTests.count_calls
    count_store_reads = StoreCallTests.count_store_reads
    assertOwnersKeyAuthorizations = StoreCallTests.assertOwnersKeyAuthorizations

    def test_the_gateways_failed_check_stands_over_a_raced_pending_in_one_store_call(self):
        """
        A read that raced the failed check stored the CA's ``pending`` over
        the gateway's ``invalid``: a client read still shows the gateway's
        verdict, with the owner's key authorizations, from one store call
        and without asking the CA.
        """
        self.build(v1_tlssni.ScriptedChecker(VAProblem.dns("DNS problem: NXDOMAIN")))
        authorization, location = self.new_authz()
        self.answer(self.tls_sni(authorization))
        authorization_id = location.rsplit("/", 1)[1]
        self.successResultOf(self.gateway.store.update_authorization(
            authorization_id, status=Status.PENDING))
        self.gateway.advance(60)
        reads = self.ca.counts["authorization"]
        counts = self.count_store_reads()
        shown = self.read(location)
        self.assertEqual(shown["status"], "invalid")
        self.assertEqual(self.tls_sni(shown)["status"], "invalid")
        self.assertOwnersKeyAuthorizations(shown, v1_tlssni.KEY)
        self.assertEqual(dict(counts), {"authorization_read": 1})
        self.assertEqual(self.ca.counts["authorization"], reads)


class StoredValidatingTests(AnswerTestCase):
    ca_options = {"reuse_authorizations": False, "decide_after": 3600,
                  "validate_immediately": False, "retry_after": "5"}

    def test_a_read_of_an_authorization_stored_as_validating_follows_it_at_the_cas_pace(self):
        """
        An answer stored as being validated by a process that is gone: the
        first client read starts a follower whose first read is the
        client's, and which then waits the CA's ``Retry-After`` (5 s).
        """
        self.register()
        reply = self.new_authz()
        url = reply.header("location")
        (ca_authorization,) = self.ca.authorizations.values()
        ca_challenge = next(c for c in ca_authorization.challenges if c.type == "http-01")
        ca_challenge.status = Status.PROCESSING
        ca_challenge.answered_at = self.ca._now()
        stored = next(c for c in self.stored_challenges(url) if c.type == "http-01")
        self.successResultOf(self.gateway.store.update_challenge(stored.id,
                                                                 status=Status.PROCESSING))
        reads = self.ca.counts["authorization"]
        self.assertEqual(self.get(url[len(self.base):]).json()["status"], "pending")
        self.assertEqual(self.ca.counts["authorization"], reads + 1)
        self.gateway.advance(1)
        self.assertEqual(self.ca.counts["authorization"], reads + 1)
        self.gateway.advance(4)
        self.assertEqual(self.ca.counts["authorization"], reads + 2)
