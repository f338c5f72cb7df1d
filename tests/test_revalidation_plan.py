"""
`gateway.translate.revalidation.revalidate` against a scripted CA and
recording responders: which challenge each name gets (wildcards dns-01 only,
others by the operator's preference, never one without a token), the
refusal naming the flags that would let the gateway revalidate, the order
of publish / answer / poll, the CA's own reason when validation fails, a
responder that cannot provision, and cleanup of every record published,
also when validation failed or a withdrawal fails.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric import ec
from twisted.internet import defer
from twisted.trial.unittest import SynchronousTestCase

from gateway.keys.jose import AccountKey
from gateway.translate.errors import InternalFailure, Unauthorized, ValidationFailed
from gateway.translate.revalidation import ENABLING_FLAGS, Validators, revalidate
from gateway.upstream import messages as v2
from gateway.upstream.errors import UpstreamProblem
from gateway.validation.dns01 import ResponderError

from tests.support.logs import LogLines

KEY = AccountKey.from_private_key(ec.generate_private_key(ec.SECP256R1()))
ACCOUNT = v2.UpstreamAccount(KEY, "https://ca.test/acct/1")


def challenge(kind, n, token="tok", status="pending", error=None):
    return v2.Challenge(url=f"https://ca.test/chall/{n}/{kind}", type=kind, status=status,
                        token=token, error=error)


def authorization(name, n, status="pending", kinds=("http-01", "dns-01"), wildcard=False,
                  token="tok", challenges=None):
    return v2.Authorization(
        url=f"https://ca.test/authz/{n}", identifier_type="dns", identifier=name, status=status,
        expires=None, wildcard=wildcard,
        challenges=tuple(challenges) if challenges is not None else tuple(
            challenge(k, n, token=f"{token}-{n}-{k}" if token else token) for k in kinds))


class Recorder:
    def __init__(self):
        self.calls = []


class Responder:
    def __init__(self, kind, journal, fail_publish=(), fail_withdraw=()):
        self.kind = kind
        self.journal = journal
        self.fail_publish = set(fail_publish)
        self.fail_withdraw = set(fail_withdraw)

    async def publish(self, name, token, key_authorization):
        self.journal.calls.append(("publish", self.kind, name, token, key_authorization))
        if name in self.fail_publish:
            raise ResponderError(f"cannot write {name}")

    async def withdraw(self, name, token, key_authorization):
        self.journal.calls.append(("withdraw", self.kind, name, token, key_authorization))
        if name in self.fail_withdraw:
            raise ResponderError(f"cannot remove {name}")


class CA:
    """Answers challenges and says what each authorization became."""

    def __init__(self, journal, finals):
        self.journal = journal
        self.finals = finals

    async def answer_challenge(self, account, url):
        assert account is ACCOUNT
        self.journal.calls.append(("answer", url))

    async def poll_authorization(self, account, url):
        assert account is ACCOUNT
        self.journal.calls.append(("poll", url))
        return self.finals[url]


def final(authz, status="valid", error=None, kind="http-01"):
    return v2.Authorization(
        url=authz.url, identifier_type="dns", identifier=authz.identifier, status=status,
        expires=None, wildcard=authz.wildcard,
        challenges=(challenge("dns-01", 0, status="pending"), challenge(kind, 0, status=status, error=error)))




class RevalidateTests(SynchronousTestCase):

    def setUp(self):
        self.journal = Recorder()
        self.http = Responder("http-01", self.journal)
        self.dns = Responder("dns-01", self.journal)

    def run_revalidate(self, authorizations, validators, finals=None):
        finals = finals or {a.url: final(a) for a in authorizations}
        ca = CA(self.journal, finals)
        return defer.ensureDeferred(revalidate(ca, ACCOUNT, authorizations, validators))

    def test_each_pending_name_is_published_answered_polled_and_withdrawn(self):
        one, two = authorization("one.test", 1), authorization("two.test", 2)
        done = authorization("done.test", 3, status="valid")
        result = self.successResultOf(self.run_revalidate(
            [one, done, two], Validators({"http-01": self.http, "dns-01": self.dns})))
        self.assertEqual([a.url for a in result], [one.url, two.url])
        ka1, ka2 = KEY.key_authorization("tok-1-http-01"), KEY.key_authorization("tok-2-http-01")
        self.assertEqual(self.journal.calls, [
            ("publish", "http-01", "one.test", "tok-1-http-01", ka1),
            ("publish", "http-01", "two.test", "tok-2-http-01", ka2),
            ("answer", "https://ca.test/chall/1/http-01"),
            ("answer", "https://ca.test/chall/2/http-01"),
            ("poll", one.url),
            ("poll", two.url),
            ("withdraw", "http-01", "one.test", "tok-1-http-01", ka1),
            ("withdraw", "http-01", "two.test", "tok-2-http-01", ka2),
        ])

    def test_nothing_pending_nothing_done(self):
        done = authorization("done.test", 1, status="valid")
        self.assertEqual(self.successResultOf(self.run_revalidate([done], Validators())), [])
        self.assertEqual(self.journal.calls, [])

    def test_the_operators_preference_chooses_and_a_wildcard_takes_dns01(self):
        name = authorization("a.test", 1)
        wild = authorization("w.test", 2, wildcard=True)
        validators = Validators({"http-01": self.http, "dns-01": self.dns},
                                preference=("dns-01", "http-01"))
        self.successResultOf(self.run_revalidate([name, wild], validators))
        published = [c[:3] for c in self.journal.calls if c[0] == "publish"]
        self.assertEqual(published, [("publish", "dns-01", "a.test"), ("publish", "dns-01", "w.test")])
        self.assertEqual(validators.acceptable_types(True), ("dns-01",))
        self.assertEqual(Validators(preference=("tls-alpn-01", "http-01")).acceptable_types(False),
                         ("http-01",))

    def test_a_challenge_without_token_or_responder_is_passed_over(self):
        no_token = authorization("a.test", 1, challenges=[challenge("http-01", 1, token=None),
                                                         challenge("dns-01", 1, token="t-dns")])
        validators = Validators({"http-01": self.http, "dns-01": self.dns})
        self.successResultOf(self.run_revalidate([no_token], validators))
        self.assertEqual(self.journal.calls[0][:4], ("publish", "dns-01", "a.test", "t-dns"))
        only_dns = authorization("b.test", 2, kinds=("dns-01",))
        choice = Validators({"http-01": self.http, "dns-01": self.dns}).choose(only_dns)
        self.assertEqual((choice.challenge.type, choice.token, choice.responder),
                         ("dns-01", "tok-2-dns-01", self.dns))
        self.assertIsNone(Validators({"http-01": self.http}).choose(only_dns))
        self.assertIsNone(Validators({"http-01": self.http}).choose(
            authorization("c.test", 3, challenges=[challenge("http-01", 3, token="")])))

    def test_names_no_responder_serves_are_refused_naming_the_flags(self):
        names = [authorization("b.test", 1), authorization("a.test", 2)]
        failure = self.failureResultOf(self.run_revalidate(names, Validators()), Unauthorized)
        self.assertEqual(
            failure.value.detail,
            "Error creating new cert :: authorizations for these names not found or expired: "
            "a.test, b.test. The upstream CA requires them to be validated again; start the gateway "
            "with --http01-listen or --dns01-hook or --dns01-rfc2136 to let it revalidate them.")
        self.assertEqual(self.journal.calls, [], "nothing is published when a name cannot be served")

    def test_a_wildcard_without_dns01_is_refused_naming_dns01(self):
        names = [authorization("a.test", 1), authorization("w.test", 2, wildcard=True)]
        failure = self.failureResultOf(
            self.run_revalidate(names, Validators({"http-01": self.http})), Unauthorized)
        self.assertIn(": *.w.test. The upstream CA", failure.value.detail)
        self.assertIn(f"start the gateway with {ENABLING_FLAGS['dns-01']} to let", failure.value.detail)
        self.assertEqual(self.journal.calls, [])

    def test_a_failed_validation_gives_the_cas_reason_and_still_withdraws(self):
        one, two = authorization("one.test", 1), authorization("two.test", 2)
        problem = UpstreamProblem("urn:ietf:params:acme:error:unauthorized", "wrong answer at one.test", 403)
        finals = {one.url: final(one, "invalid", problem), two.url: final(two)}
        failure = self.failureResultOf(
            self.run_revalidate([one, two], Validators({"http-01": self.http}), finals), ValidationFailed)
        self.assertEqual(failure.value.detail,
                         "Revalidation of one.test by http-01 failed: wrong answer at one.test")
        self.assertEqual(failure.value.status, "invalid")
        self.assertEqual(failure.value.error.code, "unauthorized")
        self.assertEqual([c[2] for c in self.journal.calls if c[0] == "withdraw"], ["one.test", "two.test"])
        self.assertNotIn(("poll", two.url), self.journal.calls)

    def test_a_failure_without_a_challenge_error_names_the_status(self):
        one = authorization("one.test", 1, wildcard=True, kinds=("dns-01",))
        finals = {one.url: final(one, "deactivated", kind="dns-01")}
        failure = self.failureResultOf(
            self.run_revalidate([one], Validators({"dns-01": self.dns}), finals), ValidationFailed)
        self.assertEqual(str(failure.value),
                         "Revalidation of *.one.test by dns-01 failed: the authorization is deactivated")
        self.assertIsNone(failure.value.error)

    def test_a_responder_that_cannot_provision_is_an_internal_failure(self):
        self.http.fail_publish = {"two.test"}
        one, two = authorization("one.test", 1), authorization("two.test", 2)
        failure = self.failureResultOf(
            self.run_revalidate([one, two], Validators({"http-01": self.http})), InternalFailure)
        self.assertEqual(failure.value.detail,
                         "The gateway could not provision a challenge: cannot write two.test")
        self.assertIsInstance(failure.value.__cause__, ResponderError)
        # what was published is withdrawn; nothing was answered
        self.assertEqual([c[:3] for c in self.journal.calls], [
            ("publish", "http-01", "one.test"), ("publish", "http-01", "two.test"),
            ("withdraw", "http-01", "one.test")])

    def test_a_failed_withdrawal_is_logged_and_hides_nothing(self):
        self.http.fail_withdraw = {"one.test"}
        one, two = authorization("one.test", 1), authorization("two.test", 2)
        with LogLines("gateway.translate.revalidation") as log:
            result = self.successResultOf(
                self.run_revalidate([one, two], Validators({"http-01": self.http})))
        self.assertEqual(len(result), 2)
        self.assertEqual([c[2] for c in self.journal.calls if c[0] == "withdraw"], ["one.test", "two.test"])
        self.assertIn("cleanup of http-01 for one.test failed: cannot remove one.test", log.lines)
        self.assertIn("revalidating two.test with http-01", log.lines)


class ValidatorsTests(SynchronousTestCase):

    def test_tls_sni01_is_offered_only_with_a_means_to_prove_upstream(self):
        checker = object()
        self.assertFalse(Validators().configured)
        self.assertFalse(Validators(tls_sni01=checker).offers_tls_sni01)
        self.assertFalse(Validators({"http-01": Responder("http-01", Recorder())}).offers_tls_sni01)
        self.assertTrue(Validators({"http-01": Responder("http-01", Recorder())},
                                   tls_sni01=checker).offers_tls_sni01)

    def test_missing_means(self):
        self.assertEqual(Validators().missing_means([authorization("a.test", 1)]),
                         "--http01-listen or --dns01-hook or --dns01-rfc2136")
        self.assertEqual(Validators().missing_means(
            [authorization("a.test", 1), authorization("w.test", 2, wildcard=True)]),
            "--dns01-hook or --dns01-rfc2136")
