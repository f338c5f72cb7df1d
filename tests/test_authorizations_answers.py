"""
v1 challenge answers, authorization reads and deactivations as the client
and the CA see them (`gateway.translate.authorizations`): each refusal in
its words with nothing sent upstream, what a deactivation stores, what a
failed validation leaves in the store and shows after a restart (the CA's
per-name reasons, its subproblems, included; also a
stored error the gateway cannot parse), and an authorization stored
without its challenges, repaired from the CA; an answer to a previous CA's
challenge.
"""

from __future__ import annotations

import json

from gateway.process.testing import FakeCA, build_test_gateway
from gateway.status import Status
from tests.support.logs import LogLines
from tests.test_v1_face import KEY, NAME, OTHER, FaceTestCase

LOG = "gateway.translate.authorizations"


class AnswerTestCase(FaceTestCase):
    ca_options: dict = {"reuse_authorizations": False}

    def setUp(self):
        self.gateway = build_test_gateway(self.keys, ca=FakeCA(**self.ca_options))
        self.ca = self.gateway.ca
        self.base = self.gateway.base_url
        self.clients = {}

    def stored(self, url):
        return self.successResultOf(self.gateway.store.authorization_by_id(url.rsplit("/", 1)[1]))

    def stored_challenges(self, url):
        return self.successResultOf(self.gateway.store.challenges_for_authorization(
            self.stored(url).id))

    def http01(self, authorization):
        return next(c for c in authorization["challenges"] if c["type"] == "http-01")

    def restart(self):
        """Another gateway process on the same store and CA."""
        self.gateway = build_test_gateway(self.keys, ca=self.ca, store=self.gateway.store)
        self.clients = {}


class RefusalTests(AnswerTestCase):

    def test_a_challenge_answer_of_another_type_in_boulders_words(self):
        self.register()
        challenge = self.http01(self.new_authz().json())
        reply = self.post(challenge["uri"], {"resource": "challenge", "type": "dns-01"})
        problem = self.assertProblem(reply, 400, "malformed")
        self.assertEqual(problem["detail"],
                         "Challenge type 'dns-01' does not match the challenge (http-01)")
        self.assertEqual(self.ca.counts["challenge"], 0)

    def test_a_wrong_key_authorization_in_boulders_words(self):
        self.register()
        challenge = self.http01(self.new_authz().json())
        reply = self.post(challenge["uri"], {"resource": "challenge", "type": "http-01",
                                             "keyAuthorization": challenge["token"] + ".other"})
        problem = self.assertProblem(reply, 400, "malformed")
        self.assertEqual(problem["detail"], "The key authorization provided does not match the "
                                            "expected value: provided key authorization was incorrect")
        self.assertEqual(self.ca.counts["challenge"], 0)

    def test_an_answer_without_type_or_key_authorization_is_sent(self):
        """
        Both members are optional (Boulder took them from the stored
        challenge): the answer goes upstream.
        """
        self.register()
        reply = self.new_authz()
        challenge = self.http01(reply.json())
        answered = self.post(challenge["uri"], {"resource": "challenge"})
        self.assertEqual(answered.status, 202, answered.body)
        self.assertEqual(self.ca.counts["challenge"], 1)
        self.assertEqual(self.get(reply.header("location")[len(self.base):]).json()["status"],
                         "valid")

    def test_unknown_authorizations_and_challenges_in_boulders_words(self):
        self.register()
        reply = self.new_authz()
        authz_id = reply.header("location").rsplit("/", 1)[1]
        for path in ("/acme/challenge/nope/1", "/acme/authz/nope"):
            problem = self.assertProblem(self.get(path), 404, "malformed")
            self.assertEqual(problem["detail"], "Unable to find authorization")
        answer = self.post("/acme/challenge/nope/1", {"resource": "challenge", "type": "http-01"})
        self.assertEqual(self.assertProblem(answer, 404, "malformed")["detail"],
                         "Unable to find authorization")
        deactivate = self.post("/acme/authz/nope", {"resource": "authz", "status": "deactivated"})
        self.assertEqual(self.assertProblem(deactivate, 404, "malformed")["detail"],
                         "Unable to find authorization")
        for problem in (self.get(f"/acme/challenge/{authz_id}/nope"),
                        self.post(f"/acme/challenge/{authz_id}/nope",
                                  {"resource": "challenge", "type": "http-01"})):
            self.assertEqual(self.assertProblem(problem, 404, "malformed")["detail"],
                             "No such challenge")
        self.assertEqual(self.ca.counts["challenge"], 0)

    def test_another_accounts_authorization_in_boulders_words(self):
        self.register(KEY)
        self.register(OTHER)
        reply = self.new_authz()
        challenge = self.http01(reply.json())
        answer = self.post(challenge["uri"], {"resource": "challenge", "type": "http-01"}, key=OTHER)
        self.assertEqual(self.assertProblem(answer, 403, "unauthorized")["detail"],
                         "User registration ID doesn't match registration ID in authorization")
        deactivate = self.post(reply.header("location"), {"resource": "authz",
                                                          "status": "deactivated"}, key=OTHER)
        self.assertEqual(self.assertProblem(deactivate, 403, "unauthorized")["detail"],
                         "Registration ID doesn't match ID for authorization")
        self.assertEqual(self.ca.counts["challenge"], 0)
        self.assertEqual(self.stored(reply.header("location")).status, Status.PENDING)

    def test_an_expired_authorization_is_refused_before_anything_is_sent(self):
        self.register()
        reply = self.new_authz()
        challenge = self.http01(reply.json())
        self.gateway.advance(8 * 86400)
        self.client().nonce = None  # expired meanwhile
        answer = self.post(challenge["uri"], {"resource": "challenge", "type": "http-01"})
        self.assertEqual(self.assertProblem(answer, 404, "malformed")["detail"],
                         "Expired authorization")
        self.assertEqual(self.ca.counts["challenge"], 0)

    def test_an_authorization_stored_as_expired_is_not_shown(self):
        self.register()
        reply = self.new_authz()
        self.successResultOf(self.gateway.store.update_authorization(
            self.stored(reply.header("location")).id, status=Status.EXPIRED))
        for path in (reply.header("location"), self.http01(reply.json())["uri"]):
            problem = self.assertProblem(self.get(path[len(self.base):]), 404, "malformed")
            self.assertEqual(problem["detail"], "Expired authorization")


class DeactivationTests(AnswerTestCase):

    def test_deactivation_is_sent_stored_and_shown(self):
        self.register()
        reply = self.new_authz()
        url = reply.header("location")
        deactivated = self.post(url, {"resource": "authz", "status": "deactivated"})
        self.assertEqual(deactivated.status, 200, deactivated.body)
        shown = deactivated.json()
        self.assertEqual(shown["status"], "deactivated")
        self.assertEqual(shown["identifier"], {"type": "dns", "value": NAME})
        self.assertEqual([c["type"] for c in shown["challenges"]], ["http-01", "dns-01"])
        self.assertEqual([c["token"] for c in shown["challenges"]],
                         [c["token"] for c in reply.json()["challenges"]])
        self.assertEqual([c["keyAuthorization"] for c in shown["challenges"]],
                         [KEY.key_authorization(c["token"]) for c in shown["challenges"]])
        (ca_authorization,) = self.ca.authorizations.values()
        self.assertEqual(ca_authorization.status, Status.DEACTIVATED)
        self.assertEqual(self.stored(url).status, Status.DEACTIVATED)
        # settled: later reads come from the store
        reads = self.ca.counts["authorization"]
        self.gateway.advance(60)
        self.assertEqual(self.get(url[len(self.base):]).json()["status"], "deactivated")
        self.assertEqual(self.ca.counts["authorization"], reads)

    def test_a_deactivation_the_ca_refuses_changes_nothing(self):
        self.register()
        url = self.new_authz().header("location")
        self.ca.fail_next("/authz/", 403, {"type": "unauthorized", "detail": "not yours"})
        reply = self.post(url, {"resource": "authz", "status": "deactivated"})
        self.assertProblem(reply, 403, "unauthorized", "not yours")
        self.assertEqual(self.stored(url).status, Status.PENDING)


class FailedValidationTests(AnswerTestCase):
    ca_options = {"reuse_authorizations": False,
                  "validator": lambda authorization, challenge, key_authorization: False}

    def test_the_cas_reason_is_stored_and_shown_after_a_restart(self):
        self.register()
        reply = self.new_authz()
        url = reply.header("location")
        challenge = self.http01(reply.json())
        answered = self.post(challenge["uri"], {"resource": "challenge", "type": "http-01"})
        self.assertEqual(answered.status, 202, answered.body)
        shown = self.get(url[len(self.base):]).json()
        self.assertEqual(shown["status"], "invalid")
        error = self.http01(shown)["error"]
        (ca_authorization,) = self.ca.authorizations.values()
        ca_error = next(c for c in ca_authorization.challenges if c.type == "http-01").error
        self.assertEqual(error["detail"], ca_error["detail"])
        self.assertEqual(error["status"], ca_error.get("status", 403))
        stored = next(c for c in self.stored_challenges(url) if c.type == "http-01")
        self.assertEqual(stored.status, Status.INVALID)
        self.assertEqual(json.loads(stored.error), {"type": ca_error["type"],
                                                    "detail": ca_error["detail"],
                                                    "status": error["status"]})
        self.assertNotIn(" ", stored.error.replace(ca_error["detail"], ""))
        self.restart()
        self.assertEqual(self.http01(self.get(url[len(self.base):]).json())["error"], error)
        # a read soon after the last comes from the store, the CA's reason with it
        reads = self.ca.counts["authorization"]
        again = self.get(url[len(self.base):]).json()
        self.assertEqual(self.http01(again)["error"], error)
        self.assertEqual(self.ca.counts["authorization"], reads)
        self.assertNotIn("error", [key for c in again["challenges"] if c["type"] == "dns-01"
                                   for key in c])

    def test_the_cas_per_name_reasons_are_stored_and_shown_after_a_restart(self):
        """
        A challenge error with subproblems: the v1 document (the type
        taken from the first subproblem of a ``compound`` problem, each
        name's reason in the detail) is the same read fresh from the CA,
        from the store, and after a restart.
        """
        compound = {"type": "urn:ietf:params:acme:error:compound", "status": 403,
                    "detail": "Validation failed for some names",
                    "subproblems": [{"type": "urn:ietf:params:acme:error:caa",
                                     "detail": "CAA record forbids issuance",
                                     "identifier": {"type": "dns", "value": NAME}},
                                    {"type": "urn:ietf:params:acme:error:dns",
                                     "detail": "SERVFAIL looking up CAA"}]}
        decide = self.ca._decide

        def decide_with_subproblems(authorization, challenge):
            decide(authorization, challenge)
            challenge.error = compound

        self.ca._decide = decide_with_subproblems
        self.register()
        reply = self.new_authz()
        url = reply.header("location")[len(self.base):]
        self.post(self.http01(reply.json())["uri"], {"resource": "challenge", "type": "http-01"})
        first = self.http01(self.get(url).json())["error"]
        self.assertEqual(first["type"], "urn:acme:error:caa")
        self.assertEqual(first["detail"], f"Validation failed for some names: {NAME}: CAA record "
                                          f"forbids issuance; SERVFAIL looking up CAA")
        reads = self.ca.counts["authorization"]
        self.assertEqual(self.http01(self.get(url).json())["error"], first)
        self.restart()
        self.gateway.advance(60)
        self.assertEqual(self.http01(self.get(url).json())["error"], first)
        self.assertEqual(self.ca.counts["authorization"], reads)
        stored = next(c for c in self.stored_challenges(url) if c.type == "http-01")
        self.assertEqual(json.loads(stored.error)["subproblems"], compound["subproblems"])

    def failed_authorization(self):
        """A failed authorization's URL and its stored http-01 challenge."""
        self.register()
        reply = self.new_authz()
        url = reply.header("location")
        self.post(self.http01(reply.json())["uri"], {"resource": "challenge", "type": "http-01"})
        return url, next(c for c in self.stored_challenges(url) if c.type == "http-01")

    def shown_with_stored_error(self, url, challenge, column):
        """
        The http-01 error a restarted gateway shows once the challenge's
        ``error`` column holds ``column``, and the CA's authorization reads
        that cost.
        """
        self.restart()
        self.get(url[len(self.base):])  # invalid is final: shown from the store
        self.gateway.store._database.execute("UPDATE challenges SET error = ? WHERE id = ?",
                                             (column, challenge.id))
        reads = self.ca.counts["authorization"]
        error = self.http01(self.get(url[len(self.base):]).json())["error"]
        return error, self.ca.counts["authorization"] - reads

    def test_stored_subproblems_read_back_as_the_cas_document_was_read(self):
        """
        A stored column is read by the parser of the CA's documents: an
        entry that is no object is left out, one without a type is
        ``about:blank``, an identifier that is no object is dropped, and
        ``subproblems`` that is no list is none.
        """
        url, stored = self.failed_authorization()
        column = json.dumps({"type": "urn:ietf:params:acme:error:compound", "status": 403,
                             "detail": "Some failed",
                             "subproblems": ["text", {"detail": "no type"}, {"type": 7},
                                             {"type": "urn:ietf:params:acme:error:dns",
                                              "detail": "no TXT", "identifier": "not a dict"},
                                             {"type": "urn:ietf:params:acme:error:caa"}]})
        for subproblems, expected in ((column, ("malformed", "Some failed: no type; 7; no TXT; caa")),
                                      (json.dumps({**json.loads(column), "subproblems": "x"}),
                                       ("malformed", "Some failed"))):
            error, _ = self.shown_with_stored_error(url, stored, subproblems)
            self.assertEqual((error["type"], error["detail"]),
                             ("urn:acme:error:" + expected[0], expected[1]))

    def test_a_stored_error_the_gateway_cannot_read_is_the_cas_unnamed_refusal(self):
        url, stored = self.failed_authorization()
        for column in ("not json", json.dumps({"type": "x"}), json.dumps({"type": "t", "detail": "d",
                                                                          "status": "four"})):
            error, reads = self.shown_with_stored_error(url, stored, column)
            self.assertEqual(reads, 0)
            # the face's words for a CA's problem of no known type
            self.assertEqual(error, {"type": "urn:acme:error:serverInternal", "status": 500,
                                     "detail": "The upstream CA failed: 400 about:blank: "
                                               "The CA refused this challenge"}, column)


class RepairTests(AnswerTestCase):

    def test_an_authorization_stored_without_its_challenges_gets_them_from_the_ca(self):
        """
        A crash left the authorization's row without its challenges: the
        next read asks the CA, stores them and shows them, and says so in
        the log.
        """
        self.register()
        reply = self.new_authz()
        url = reply.header("location")
        record = self.stored(url)
        self.gateway.store._database.execute("DELETE FROM challenges WHERE authorization_id = ?",
                                             (record.id,))
        self.restart()
        with LogLines(LOG) as log:
            shown = self.get(url[len(self.base):])
        self.assertEqual(shown.status, 200, shown.body)
        self.assertEqual(sorted(c["token"] for c in shown.json()["challenges"]),
                         sorted(c["token"] for c in reply.json()["challenges"]))
        self.assertEqual(sorted(c.type for c in self.stored_challenges(url)), ["dns-01", "http-01"])
        self.assertEqual(log.lines, [f"authorization {record.id} was stored without 2 of its "
                                     f"challenges; added them from the CA"])


class ReadRefreshTests(AnswerTestCase):

    def test_a_read_that_changes_nothing_writes_nothing(self):
        """
        An upstream read of a pending authorization that nothing changed
        leaves its row as it was (``updated_at`` dates the last change the
        CA made), and logs nothing.
        """
        self.register()
        reply = self.new_authz()
        url = reply.header("location")
        before = self.stored(url)
        self.gateway.advance(60)
        reads = self.ca.counts["authorization"]
        with LogLines(LOG) as log:
            shown = self.get(url[len(self.base):])
        self.assertEqual(self.ca.counts["authorization"], reads + 1)
        self.assertEqual(shown.json()["status"], "pending")
        self.assertEqual(self.stored(url), before)
        self.assertEqual(log.lines, [])
        self.assertEqual([c["keyAuthorization"] for c in shown.json()["challenges"]],
                         [KEY.key_authorization(c["token"]) for c in shown.json()["challenges"]])

    def test_a_new_expiry_is_stored_with_the_challenges_a_row_lacked(self):
        self.register()
        reply = self.new_authz()
        url = reply.header("location")
        record = self.stored(url)
        (ca_authorization,) = self.ca.authorizations.values()
        ca_authorization.expires += 3600
        self.gateway.store._database.execute("DELETE FROM challenges WHERE authorization_id = ?",
                                             (record.id,))
        self.restart()
        shown = self.get(url[len(self.base):])
        self.assertEqual(shown.status, 200, shown.body)
        self.assertEqual(shown.json()["expires"], self.ca.format_time(ca_authorization.expires))
        self.assertEqual(self.stored(url).expires, self.ca.format_time(ca_authorization.expires))
        self.assertEqual(sorted(c.type for c in self.stored_challenges(url)), ["dns-01", "http-01"])

    def test_challenges_of_a_settled_authorization_are_not_added(self):
        """
        Only a pending authorization's row is completed: one the CA holds
        valid is shown as stored, and nothing is logged.
        """
        self.register()
        reply = self.new_authz()
        url = reply.header("location")
        record = self.stored(url)
        self.gateway.store._database.execute("DELETE FROM challenges WHERE authorization_id = ?",
                                             (record.id,))
        (ca_authorization,) = self.ca.authorizations.values()
        ca_authorization.status = Status.VALID
        self.restart()
        with LogLines(LOG) as log:
            shown = self.get(url[len(self.base):])
        self.assertEqual(shown.json()["status"], "valid")
        self.assertEqual(self.stored_challenges(url), [])
        self.assertEqual(log.lines, [])


class EarlierErrorTests(AnswerTestCase):
    """
    A CA whose new authorization lists a challenge with an earlier error
    (the detail of an attempt the CA lets a client retry).
    """

    def setUp(self):
        super().setUp()
        make = self.ca._new_authorization

        def with_error(account, name):
            authorization = make(account, name)
            authorization.challenges[1].error = {
                "type": "urn:ietf:params:acme:error:dns", "detail": "no TXT record found",
                "status": 400}
            return authorization

        self.ca._new_authorization = with_error

    def test_new_authz_shows_the_cas_error_of_a_challenge(self):
        self.register()
        reply = self.new_authz()
        self.assertEqual(reply.status, 201, reply.body)
        dns01 = next(c for c in reply.json()["challenges"] if c["type"] == "dns-01")
        self.assertEqual(dns01["error"], {"type": "urn:acme:error:dns",
                                          "detail": "no TXT record found", "status": 400})
        self.assertNotIn("error", self.http01(reply.json()))


class ReadSourceTests(AnswerTestCase):

    def test_an_authorization_whose_key_left_the_gateway_is_read_from_the_store(self):
        self.register()
        reply = self.new_authz()
        url = reply.header("location")
        self.gateway = build_test_gateway((OTHER,), ca=self.ca, store=self.gateway.store)
        self.clients = {}
        self.gateway.advance(60)
        reads = self.ca.counts["authorization"]
        shown = self.get(url[len(self.base):])
        self.assertEqual(shown.status, 200, shown.body)
        self.assertEqual(shown.json()["status"], "pending")
        self.assertEqual(self.ca.counts["authorization"], reads)

    def test_a_ca_failing_a_read_is_the_clients_error_and_changes_nothing(self):
        self.register()
        reply = self.new_authz()
        url = reply.header("location")
        before = self.stored(url)
        self.gateway.advance(60)
        self.ca.fail_next("/authz/", 500, {"type": "serverInternal", "detail": "the CA broke"})
        shown = self.get(url[len(self.base):])
        self.assertEqual(shown.status // 100, 5, shown.body)
        self.assertEqual(self.stored(url), before)
        self.assertEqual(self.get(url[len(self.base):]).json()["status"], "pending")


class DeactivationRefusalTests(AnswerTestCase):

    def test_another_status_is_refused_in_boulders_words_before_anything_is_sent(self):
        self.register()
        url = self.new_authz().header("location")
        for payload in ({"resource": "authz", "status": "valid"}, {"resource": "authz"}):
            problem = self.assertProblem(self.post(url, payload), 400, "malformed")
            self.assertEqual(problem["detail"], "Invalid status value")
        self.assertEqual(self.stored(url).status, Status.PENDING)
        (ca_authorization,) = self.ca.authorizations.values()
        self.assertEqual(ca_authorization.status, Status.PENDING)


class ForgottenAuthorizationTests(AnswerTestCase):

    def test_an_authorization_the_ca_forgot_is_stored_expired_when_it_said_so(self):
        self.register()
        reply = self.new_authz()
        url = reply.header("location")
        before = self.stored(url)
        self.gateway.advance(60)
        self.ca.fail_next("/authz/", 404, {"type": "malformed", "detail": "No such authorization"})
        shown = self.get(url[len(self.base):])
        self.assertEqual(self.assertProblem(shown, 404, "malformed")["detail"], "Expired authorization")
        after = self.stored(url)
        self.assertEqual(after.status, Status.EXPIRED)
        self.assertNotEqual(after.updated_at, before.updated_at)
        self.assertEqual(after.updated_at, self.gateway.context.now())
        reads = self.ca.counts["authorization"]
        again = self.get(url[len(self.base):])
        self.assertEqual(self.assertProblem(again, 404, "malformed")["detail"], "Expired authorization")
        self.assertEqual(self.ca.counts["authorization"], reads)


class PreviousCATests(AnswerTestCase):

    def test_an_answer_to_a_previous_cas_challenge_in_words_that_say_so(self):
        """
        After a restart with another ``--upstream``, a challenge of an
        authorization made at the old CA is answered 404 with the reason,
        and nothing is sent to either CA.
        """
        self.register()
        reply = self.new_authz()
        challenge = self.http01(reply.json())
        old = self.ca
        new = FakeCA(base_url="https://ca-b.test", clock=self.gateway.clock)
        store = self.gateway.store
        store.upstream = new.directory_url
        self.gateway = build_test_gateway(self.keys, ca=new, store=store, other_cas=[old])
        self.clients = {}
        self.assertEqual(self.new_authz("other.example.test").status, 201)
        answer = self.post(challenge["uri"], {"resource": "challenge", "type": "http-01"})
        self.assertEqual(self.assertProblem(answer, 404, "malformed")["detail"],
                         "Expired authorization (it was made at a previous upstream CA)")
        self.assertEqual((old.counts["challenge"], new.counts["challenge"]), (0, 0))
