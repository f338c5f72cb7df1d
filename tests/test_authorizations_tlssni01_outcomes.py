"""
The outcomes of a tls-sni-01 answer the gateway judges itself
(`gateway.translate.authorizations._check_and_prove`), as the client, the
store, the log and the CA see them: each failure's words and type, an
authorization the CA no longer has pending, one it already holds valid,
a CA that fails while the gateway proves the name, a deactivation the CA
refuses, and a check a restart interrupted.
"""

from __future__ import annotations

from twisted.internet import defer
from twisted.trial.unittest import SynchronousTestCase

from gateway.process.testing import FakeCA
from gateway.status import Status
from gateway.validation.tlssni01 import VAProblem
from tests.support.logs import LogLines
from tests import test_tlssni01_v1 as v1_tlssni
from tests.test_tlssni01_v1 import NAME, ScriptedChecker

LOG = "gateway.translate.authorizations"


class SilentChecker(ScriptedChecker):
    """A check that never ends (the process is stopped while it runs)."""

    def check(self, name, key_authorization):
        self.asked.append((name, key_authorization))
        return defer.Deferred()


class TLSSNI01OutcomeTests(SynchronousTestCase):
    build = v1_tlssni.TLSSNI01Tests.build
    resolve = v1_tlssni.TLSSNI01Tests.resolve
    new_authz = v1_tlssni.TLSSNI01Tests.new_authz
    answer = v1_tlssni.TLSSNI01Tests.answer
    read = v1_tlssni.TLSSNI01Tests.read
    tls_sni = staticmethod(v1_tlssni.TLSSNI01Tests.tls_sni)

    def ca_authorization(self):
        (authorization,) = self.ca.authorizations.values()
        return authorization

    def stored_status(self, location):
        record = self.successResultOf(self.gateway.store.authorization_by_id(
            location.rsplit("/", 1)[1]))
        challenges = self.successResultOf(self.gateway.store.challenges_for_authorization(record.id))
        return record.status, {c.type: c.status for c in challenges}

    def deactivations_sent(self):
        """The deactivations the gateway asks of the CA from now on."""
        sent = []
        post = self.ca._post_authorization

        def recording(signed, authz_id):
            if signed.payload == {"status": Status.DEACTIVATED}:
                sent.append(authz_id)
            return post(signed, authz_id)

        self.patch(self.ca, "_post_authorization", recording)
        return sent

    def test_a_right_answer_the_gateway_cannot_prove_says_why_in_full(self):
        self.build(ca=FakeCA(reuse_authorizations=False, validator=lambda *args: False))
        authorization, location = self.new_authz()
        deactivations = self.deactivations_sent()
        self.answer(self.tls_sni(authorization))
        self.assertEqual(deactivations, [], "the CA's own verdict is left as it stands")
        ca_error = next(c for c in self.ca_authorization().challenges if c.type == "http-01").error
        final = self.read(location)
        self.maxDiff = None
        self.assertEqual(final["status"], "invalid")
        challenge = self.tls_sni(final)
        self.assertEqual(challenge["status"], "invalid")
        self.assertEqual(challenge["error"], {
            "type": "urn:acme:error:unauthorized", "status": 403,
            "detail": f"The tls-sni-01 answer for {NAME} was right, but the gateway could not "
                      f"prove the name to the upstream CA: Revalidation of {NAME} by http-01 "
                      f"failed: {ca_error['detail']}"})
        self.assertEqual(challenge["validationRecord"][0]["hostname"], NAME)
        self.assertEqual(self.stored_status(location),
                         (Status.INVALID, {"http-01": Status.PENDING, "dns-01": Status.PENDING,
                                           "tls-sni-01": Status.INVALID}))
        self.assertEqual(self.ca_authorization().status, Status.INVALID,
                         "left invalid at the CA, not deactivated")
        self.assertEqual(self.gateway.context.revalidations.counts, {"invalid": 1})

    def test_an_authorization_the_ca_no_longer_has_pending(self):
        """
        The CA's authorization was deactivated meanwhile: the answer was
        right, but the authorization is invalid, saying what the CA has.
        """
        self.build()
        authorization, location = self.new_authz()
        self.ca_authorization().status = Status.DEACTIVATED
        reads = self.ca.counts["authorization"]
        self.answer(self.tls_sni(authorization))
        self.assertEqual(self.ca.counts["authorization"], reads + 1,
                         "one read, and no deactivation of what the CA settled")
        challenge = self.tls_sni(self.read(location))
        self.assertEqual(challenge["error"], {
            "type": "urn:acme:error:unauthorized", "status": 403,
            "detail": "The authorization is deactivated at the upstream CA"})
        self.assertEqual(challenge["validationRecord"][0]["hostname"], NAME)
        self.assertEqual(self.stored_status(location)[0], Status.INVALID)
        self.assertEqual(self.gateway.context.revalidations.counts, {})
        self.assertEqual(self.ca.counts["challenge"], 0)

    def test_an_authorization_the_ca_holds_valid_needs_no_proof(self):
        self.build()
        authorization, location = self.new_authz()
        self.ca_authorization().status = Status.VALID
        with LogLines(LOG) as log:
            self.answer(self.tls_sni(authorization))
        final = self.read(location)
        self.assertEqual(final["status"], "valid")
        self.assertEqual(self.tls_sni(final)["status"], "valid")
        self.assertEqual(self.ca.counts["challenge"], 0)
        self.assertEqual(self.gateway.context.revalidations.counts, {})
        self.assertEqual(self.stored_status(location)[0], Status.VALID)
        self.assertIn(f"tls-sni-01 answer for {NAME} checked and the name proved upstream", log.lines)

    def test_a_ca_failing_while_the_name_is_proved(self):
        """
        The CA answers the gateway's read with a 500: the gateway's
        ``serverInternal``, saying so, and the check ends (an answer
        retried later starts nothing).
        """
        self.build()
        authorization, location = self.new_authz()
        self.ca.fail_next("/authz/", 500, {"type": "serverInternal", "detail": "the CA broke"})
        self.answer(self.tls_sni(authorization))
        final = self.read(location)
        self.assertEqual(final["status"], "invalid")
        error = self.tls_sni(final)["error"]
        self.assertEqual((error["type"], error["status"]), ("urn:acme:error:serverInternal", 500))
        self.assertTrue(error["detail"].startswith(
            "The gateway could not complete the tls-sni-01 validation: "), error["detail"])
        self.assertIn("the CA broke", error["detail"])
        self.assertEqual(self.tls_sni(final)["validationRecord"], [], "nothing was checked")
        self.assertEqual(self.ca_authorization().status, Status.PENDING, "not deactivated")
        self.answer(self.tls_sni(authorization))
        self.assertEqual(len(self.checker.asked), 1)

    def test_a_failed_check_is_logged_and_the_cas_authorization_freed(self):
        dns = VAProblem.dns("DNS problem: NXDOMAIN looking up A for x")
        self.build(ScriptedChecker(dns))
        authorization, location = self.new_authz()
        with LogLines(LOG) as log:
            self.answer(self.tls_sni(authorization))
        self.assertEqual(log.lines, [f"tls-sni-01 check of {NAME} failed: {dns.detail}"])
        self.assertEqual(self.ca_authorization().status, Status.DEACTIVATED)
        self.assertEqual(self.stored_status(location),
                         (Status.INVALID, {"http-01": Status.PENDING, "dns-01": Status.PENDING,
                                           "tls-sni-01": Status.INVALID}))

    def test_a_deactivation_the_ca_refuses_is_logged_and_the_verdict_stands(self):
        dns = VAProblem.dns("DNS problem: NXDOMAIN looking up A for x")
        self.build(ScriptedChecker(dns))
        authorization, location = self.new_authz()
        url = self.ca_authorization().url
        self.ca.fail_next("/authz/", 500, {"type": "serverInternal", "detail": "no deactivation"})
        with LogLines(LOG) as log:
            self.answer(self.tls_sni(authorization))
        self.assertEqual(len(log.lines), 2, log.lines)
        self.assertTrue(log.lines[1].startswith(f"could not deactivate {url} upstream: "), log.lines)
        self.assertIn("no deactivation", log.lines[1])
        self.assertEqual(self.ca_authorization().status, Status.PENDING)
        final = self.read(location)
        self.assertEqual(final["status"], "invalid")
        self.assertEqual(self.tls_sni(final)["error"]["type"], "urn:acme:error:dns")

    def test_a_check_a_restart_interrupted_starts_again(self):
        self.build(SilentChecker())
        authorization, location = self.new_authz()
        challenge = self.tls_sni(authorization)
        reply = self.answer(challenge)
        self.assertEqual(reply.status, 202, reply.body)
        self.assertEqual(self.stored_status(location)[1]["tls-sni-01"], Status.PROCESSING)
        self.assertEqual(self.tls_sni(self.read(location))["status"], "pending")
        # the process is stopped mid-check; another one runs on the same state
        self.build(ca=self.ca, store=self.gateway.store)
        self.answer(challenge)
        self.assertEqual(len(self.checker.asked), 1)
        final = self.read(location)
        self.assertEqual(final["status"], "valid")
        self.assertEqual(self.stored_status(location)[1]["tls-sni-01"], Status.VALID)

    def test_the_gateways_verdict_stands_over_a_status_a_racing_read_stored(self):
        """
        A read that raced the failed check stored the CA's status
        (deactivated, as the gateway left it there) over the gateway's
        ``invalid``: clients are still shown ``invalid``.
        """
        self.build(ScriptedChecker(VAProblem.dns("DNS problem: NXDOMAIN looking up A for x")))
        authorization, location = self.new_authz()
        self.answer(self.tls_sni(authorization))
        self.successResultOf(self.gateway.store.update_authorization(
            location.rsplit("/", 1)[1], status=Status.DEACTIVATED))
        final = self.read(location)
        self.assertEqual(final["status"], "invalid")
        self.assertEqual(self.tls_sni(final)["status"], "invalid")

    def test_an_answer_once_the_means_is_gone_is_no_such_challenge(self):
        self.build()
        authorization, location = self.new_authz()
        challenge = self.tls_sni(authorization)
        self.build(ca=self.ca, store=self.gateway.store, responders=False)
        reply = self.answer(challenge)
        self.assertEqual(reply.status, 404, reply.body)
        self.assertEqual(reply.json()["detail"], "No such challenge")
        self.assertEqual(self.checker.asked, [])

    def test_an_answer_to_an_authorization_valid_already_checks_nothing(self):
        self.build()
        authorization, location = self.new_authz()
        http01 = next(c for c in authorization["challenges"] if c["type"] == "http-01")
        answered = self.resolve(self.client.post(http01["uri"], {
            "resource": "challenge", "type": "http-01",
            "keyAuthorization": v1_tlssni.KEY.key_authorization(http01["token"])}))
        self.assertEqual(answered.status, 202, answered.body)
        self.assertEqual(self.read(location)["status"], "valid")
        reply = self.answer(self.tls_sni(authorization))
        self.assertEqual(reply.status, 202, reply.body)
        self.assertEqual(self.checker.asked, [])
        self.assertEqual(self.stored_status(location)[1]["tls-sni-01"], Status.PENDING)

    def test_the_answer_shows_a_check_that_ended_at_once(self):
        """
        A check and a proof that end before the answer is rendered (every
        step answered at once): the client's 202 already shows the
        challenge valid, with Boulder's validation record and the client's
        own key authorization.
        """
        self.build()
        authorization, location = self.new_authz()
        challenge = self.tls_sni(authorization)
        reply = self.answer(challenge)
        self.assertEqual(reply.status, 202, reply.body)
        shown = reply.json()
        self.assertEqual((shown["status"], shown["uri"]), ("valid", challenge["uri"]))
        self.assertEqual(shown["keyAuthorization"], v1_tlssni.KEY.key_authorization(challenge["token"]))
        self.assertEqual(shown["validationRecord"][0]["hostname"], NAME)
        self.assertEqual(self.read(location)["status"], "valid")

    def test_checks_of_two_challenges_run_side_by_side(self):
        """
        A check still running holds back a retry of its own challenge only:
        another authorization's tls-sni-01 answer is checked meanwhile.
        """
        self.build(SilentChecker())
        first, _ = self.new_authz()
        second, _ = self.new_authz("other.example.test")
        for authorization in (first, second, first):
            reply = self.answer(self.tls_sni(authorization))
            self.assertEqual(reply.status, 202, reply.body)
        self.assertEqual([name for name, _ in self.checker.asked], [NAME, "other.example.test"])
