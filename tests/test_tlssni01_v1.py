"""
tls-sni-01 in the v1 face (`gateway.translate.tlssni`), through whole
in-memory gateways over a `FakeCA`: offered in v1 authorizations only when
the gateway has a means to prove names upstream, in Boulder's v1 shape
(its own token, one combination per challenge); an answer is checked (a
scripted checker stands for `gateway.validation.tlssni01`, whose own
tests run it against real TLS servers), then the name is proved upstream
with the gateway's responder, and the authorization is valid only when
both hold; a failed check shows in the authorization and the challenge as
Boulder showed it, also after a restart.
"""

from __future__ import annotations

import base64

from cryptography.hazmat.primitives.asymmetric import ec
from twisted.internet import defer
from twisted.trial.unittest import SynchronousTestCase

from gateway.keys.jose import AccountKey, b64url
from gateway.process.testing import FakeCA, build_test_gateway
from gateway.status import Status
from gateway.translate.revalidation import Validators
from gateway.validation.http01 import HTTP01Responder
from gateway.validation.tlssni01 import TLSSNI01Result, VAProblem, ValidationRecord, z_name
from tests.support.v1_client import V1TestClient
from tests.test_v1_face import make_csr

KEY = AccountKey.from_private_key(ec.generate_private_key(ec.SECP256R1()))
NAME = "www.example.test"


class ScriptedChecker:
    """
    Answers each check with the next problem of ``problems`` (``None``: the
    answer holds), and records what it was asked.
    """

    def __init__(self, *problems):
        self.problems = list(problems)
        self.asked = []

    def check(self, name, key_authorization):
        self.asked.append((name, key_authorization))
        problem = self.problems.pop(0) if self.problems else None
        record = ValidationRecord(hostname=name, port=443, addresses_resolved=("127.0.0.1",),
                                  address_used="127.0.0.1")
        return defer.succeed(TLSSNI01Result(z_name(key_authorization), record, problem))


class TLSSNI01Tests(SynchronousTestCase):
    def build(self, checker=None, responders=True, ca=None, store=None):
        self.checker = checker if checker is not None else ScriptedChecker()
        self.ca = ca or FakeCA(reuse_authorizations=False)
        validators = Validators({"http-01": HTTP01Responder()} if responders else {},
                                tls_sni01=self.checker)
        self.gateway = build_test_gateway([KEY], ca=self.ca, validators=validators, store=store)
        self.client = V1TestClient(self.gateway.base_url, KEY, http=self.gateway.client)

    def resolve(self, coroutine):
        done = []
        defer.Deferred.fromCoroutine(coroutine).addBoth(done.append)
        self.assertTrue(done, "the request did not complete")
        return done[0]

    def new_authz(self, name=NAME):
        reply = self.resolve(self.client.post(self.gateway.url("/acme/new-authz"), {
            "resource": "new-authz", "identifier": {"type": "dns", "value": name}}))
        self.assertEqual(reply.status, 201, reply.body)
        return reply.json(), reply.header("location")

    def answer(self, challenge, key_authorization=None):
        return self.resolve(self.client.post(challenge["uri"], {
            "resource": "challenge", "type": "tls-sni-01",
            "keyAuthorization": key_authorization or KEY.key_authorization(challenge["token"])}))

    def read(self, url):
        reply = self.resolve(self.client.get(url))
        self.assertEqual(reply.status, 200, reply.body)
        return reply.json()

    @staticmethod
    def tls_sni(authorization):
        return next(c for c in authorization["challenges"] if c["type"] == "tls-sni-01")

    def test_not_offered_without_a_means(self):
        """
        Without a responder to prove names upstream, v1 authorizations
        offer the CA's challenges only, as before.
        """
        self.build(responders=False)
        authorization, _ = self.new_authz()
        self.assertEqual([c["type"] for c in authorization["challenges"]], ["http-01", "dns-01"])

    def test_offered_in_boulders_shape(self):
        """
        With a means: tls-sni-01 beside the CA's challenges, with a token of
        its own (32 random bytes, base64url, as Boulder's) and one
        combination per challenge, which is how certbot 0.20 picks the one
        challenge its authenticator answers.
        """
        self.build()
        authorization, location = self.new_authz()
        types = [c["type"] for c in authorization["challenges"]]
        self.assertEqual(types, ["http-01", "dns-01", "tls-sni-01"])
        self.assertEqual(authorization["combinations"], [[0], [1], [2]])
        challenge = self.tls_sni(authorization)
        self.assertEqual(len(base64.urlsafe_b64decode(challenge["token"] + "=")), 32)
        self.assertNotIn(challenge["token"], [c["token"] for c in authorization["challenges"][:2]])
        self.assertEqual(challenge["status"], "pending")
        self.assertTrue(challenge["uri"].startswith(self.gateway.url("/acme/challenge/")))
        # the same challenge on every read
        self.assertEqual(self.tls_sni(self.read(location)), challenge)

    def test_wildcards_do_not_get_it(self):
        """
        A wildcard authorization offers dns-01 only, as before.
        """
        self.build()
        authorization, _ = self.new_authz("*.example.test")
        self.assertEqual([c["type"] for c in authorization["challenges"]], ["dns-01"])

    def test_answer_checked_then_proved_upstream(self):
        """
        The client's answer is checked for its key authorization, then the
        gateway proves the name with its own http-01 responder: the
        authorization is valid, the tls-sni-01 challenge valid with
        Boulder's validation record, and new-cert issues.
        """
        self.build()
        authorization, location = self.new_authz()
        challenge = self.tls_sni(authorization)
        reply = self.answer(challenge)
        self.assertEqual(reply.status, 202, reply.body)
        self.assertEqual(reply.links("up"), [location])
        self.assertEqual(self.checker.asked, [(NAME, KEY.key_authorization(challenge["token"]))])
        final = self.read(location)
        self.assertEqual(final["status"], "valid")
        checked = self.tls_sni(final)
        self.assertEqual(checked["status"], "valid")
        self.assertEqual(checked["validationRecord"], [{
            "hostname": NAME, "port": "443", "addressesResolved": ["127.0.0.1"],
            "addressUsed": "127.0.0.1"}])
        self.assertNotIn("error", checked)
        # the gateway answered the CA's http-01 challenge itself
        (ca_authorization,) = self.ca.authorizations.values()
        self.assertEqual(ca_authorization.status, Status.VALID)
        issued = self.resolve(self.client.post(self.gateway.url("/acme/new-cert"), {
            "resource": "new-cert", "csr": b64url(make_csr([NAME]))}))
        self.assertEqual(issued.status, 201, issued.body)
        self.assertEqual(self.gateway.context.revalidations.counts, {"valid": 1})

    def test_failed_check_shows_as_boulder_showed_it(self):
        """
        A server presenting another certificate (checked three times, 2 and
        4 s apart) makes the authorization and the challenge invalid with
        Boulder's problem and validation record; nothing is proved
        upstream, where the authorization is deactivated; new-authz orders
        anew.  The outcome survives a restart.
        """
        wrong = VAProblem.unauthorized("Incorrect validation certificate for tls-sni-01 challenge. "
                                       "Requested x.acme.invalid from 127.0.0.1:443. Received 1 "
                                       "certificate(s), first certificate had names \"other\"")
        self.build(ScriptedChecker(wrong, wrong, wrong))
        authorization, location = self.new_authz()
        reply = self.answer(self.tls_sni(authorization))
        self.assertEqual(reply.status, 202, reply.body)
        self.assertEqual(reply.json()["status"], "pending")
        self.assertEqual(len(self.checker.asked), 1)
        self.gateway.advance(2)
        self.assertEqual(len(self.checker.asked), 2)
        self.gateway.advance(4)
        self.assertEqual(len(self.checker.asked), 3)

        final = self.read(location)
        self.assertEqual(final["status"], "invalid")
        failed = self.tls_sni(final)
        self.assertEqual(failed["status"], "invalid")
        self.assertEqual(failed["error"], {"type": "urn:acme:error:unauthorized",
                                           "detail": wrong.detail, "status": 403})
        self.assertEqual(failed["validationRecord"][0]["hostname"], NAME)
        (ca_authorization,) = self.ca.authorizations.values()
        self.assertEqual(ca_authorization.status, Status.DEACTIVATED)
        self.assertEqual(self.gateway.context.revalidations.counts, {})
        # new-authz does not hand the invalid authorization out again
        again, again_location = self.new_authz()
        self.assertNotEqual(again_location, location)
        self.assertEqual(again["status"], "pending")

        # another gateway on the same state (a restart) shows the same
        store = self.gateway.store
        self.build(ca=self.ca, store=store)
        self.assertEqual(self.tls_sni(self.read(location))["error"]["detail"], wrong.detail)

    def test_a_connection_problem_once_then_the_right_certificate(self):
        """
        nginx applies a reload asynchronously: a first look that finds no
        server is tried again, and the answer then holds.
        """
        self.build(ScriptedChecker(VAProblem.connection("Connection refused")))
        authorization, location = self.new_authz()
        self.answer(self.tls_sni(authorization))
        self.assertEqual(self.read(location)["status"], "pending")
        self.gateway.advance(2)
        self.assertEqual(self.read(location)["status"], "valid")

    def test_other_problems_are_not_tried_again(self):
        """
        A DNS problem is final at once, as at Boulder.
        """
        self.build(ScriptedChecker(VAProblem.dns("DNS problem: NXDOMAIN looking up A for x")))
        authorization, location = self.new_authz()
        self.answer(self.tls_sni(authorization))
        self.assertEqual(len(self.checker.asked), 1)
        final = self.read(location)
        self.assertEqual(final["status"], "invalid")
        self.assertEqual(self.tls_sni(final)["error"]["type"], "urn:acme:error:dns")

    def test_right_answer_but_the_gateway_cannot_prove_the_name(self):
        """
        Both must hold: a right answer whose name the CA does not validate
        for the gateway leaves the authorization invalid, saying why.
        """
        self.build(ca=FakeCA(reuse_authorizations=False, validator=lambda *args: False))
        authorization, location = self.new_authz()
        self.answer(self.tls_sni(authorization))
        final = self.read(location)
        self.assertEqual(final["status"], "invalid")
        error = self.tls_sni(final)["error"]
        self.assertEqual(error["type"], "urn:acme:error:unauthorized")
        self.assertIn("could not prove the name to the upstream CA", error["detail"])
        self.assertEqual(self.gateway.context.revalidations.counts, {"invalid": 1})

    def test_wrong_key_authorization_is_refused(self):
        """
        A key authorization for another key is refused before any check, as
        any v1 challenge answer is.
        """
        self.build()
        authorization, _ = self.new_authz()
        challenge = self.tls_sni(authorization)
        reply = self.answer(challenge, key_authorization=challenge["token"] + ".not-my-key")
        self.assertEqual(reply.status, 400, reply.body)
        self.assertEqual(self.checker.asked, [])

    def test_a_second_answer_does_not_check_twice(self):
        """
        A retried answer while the check runs (or after it) starts nothing
        more.
        """
        wrong = VAProblem.unauthorized("wrong certificate")
        self.build(ScriptedChecker(wrong, wrong, wrong))
        authorization, _ = self.new_authz()
        challenge = self.tls_sni(authorization)
        self.answer(challenge)
        self.answer(challenge)
        self.assertEqual(len(self.checker.asked), 1)
        self.gateway.advance(2)
        self.gateway.advance(4)
        self.answer(challenge)
        self.assertEqual(len(self.checker.asked), 3)

    def test_no_longer_offered_once_the_means_is_gone(self):
        """
        A gateway restarted without a means on the same state no longer
        shows the tls-sni-01 challenge it offered, and refuses an answer.
        """
        self.build()
        authorization, location = self.new_authz()
        challenge = self.tls_sni(authorization)
        self.build(ca=self.ca, store=self.gateway.store, responders=False)
        self.assertEqual([c["type"] for c in self.read(location)["challenges"]],
                         ["http-01", "dns-01"])
        self.assertEqual(self.answer(challenge).status, 404)
