"""
`gateway.translate.renewalinfo.RenewalInfoPoller` over the SQLite store
(in memory) and a scripted CA: which certificates it asks about (valid, with
an issuer key id, of this CA or none known, not orphaned), when each is due
(``next_check_at`` passed), when it asks again (twelve hours, the CA's
Retry-After held between a minute and a day, an hour after a failure, a week
after a 404), what it stores (the window, the first window's start, the
error) and the warning when a window opens early.
"""

from __future__ import annotations

from types import SimpleNamespace

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from gateway.store import Account, Certificate, Insert
from gateway.store.records import format_timestamp, timestamp_instant
from gateway.store.sqlite import SQLiteStore
from gateway.translate.inventory import ari_cert_id
from gateway.translate.renewalinfo import RenewalInfoPoller
from gateway.upstream.errors import UpstreamError, UpstreamProblem, UpstreamUnavailable
from gateway.upstream.messages import RenewalInfo

from tests.support.logs import LogLines

CA = "https://ca.test/directory"
HOUR, DAY = 3600.0, 86400.0
START = timestamp_instant("2026-06-01T00:00:00Z").timestamp()


def at(seconds):
    return format_timestamp(seconds)


class ScriptedCA:
    """The upstream client, as the poller uses it: answers in order."""

    directory_url = CA

    def __init__(self, ari=True):
        self.ari = ari
        self.answers = []
        self.asked = []

    async def directory(self):
        return SimpleNamespace(renewal_info="https://ca.test/ari" if self.ari else None)

    async def renewal_info(self, cert_id):
        self.asked.append(cert_id)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer




class PollerTests(SynchronousTestCase):

    def setUp(self):
        self.clock = Clock()
        self.clock.advance(START + 10 * DAY)
        self.store = SQLiteStore.inline(clock=self.clock, upstream=CA)
        self.account = self.successResultOf(self.store.write([Insert(Account(
            id=0, thumbprint="tp", public_jwk={"kty": "EC", "crv": "P-256", "x": "eA", "y": "eQ"},
            upstream_url=f"{CA}/acct/1", contact=(), agreement=None, status="valid",
            created_at=at(START), initial_ip=""))]))[0]
        self.ca = ScriptedCA()
        self.poller = RenewalInfoPoller(self.ca, self.store, self.clock)
        self.serial = 0x10

    def now(self):
        return self.clock.seconds()

    def certificate(self, names=("a.test",), authority_key_id="0a0b", not_after=None, orphaned=False,
                    not_before=None):
        self.serial += 1
        certificate = Certificate(
            id=f"cert-{self.serial}", account_id=self.account.id, order_id=None,
            serial=format(self.serial, "x"), leaf_der=b"leaf-%d" % self.serial, issuer_ids=(),
            upstream_url=f"{CA}/cert/{self.serial}", issued_at=at(START), orphaned=orphaned,
            names=names, authority_key_id=authority_key_id,
            not_before=not_before or at(START), not_after=not_after or at(START + 90 * DAY))
        return self.successResultOf(self.store.write([Insert(certificate)]))[0]

    def poll(self):
        return self.successResultOf(defer.ensureDeferred(self.poller.poll_due()))

    def window(self, certificate):
        return self.successResultOf(self.store.renewal_window(certificate.id))

    def info(self, start_day=60, end_day=62, retry_after=None, explanation=None):
        return RenewalInfo(at(START + start_day * DAY), at(START + end_day * DAY), explanation, retry_after)

    def test_a_window_is_stored_and_asked_again_in_twelve_hours(self):
        held = self.certificate()
        self.ca.answers = [self.info(explanation="https://ca.test/why")]
        self.assertEqual(self.poll(), 1)
        self.assertEqual(self.poller.asked, 1)
        self.assertEqual(self.ca.asked, [ari_cert_id(held)])
        window = self.window(held)
        self.assertEqual((window.cert_id, window.account_id), (ari_cert_id(held), self.account.id))
        self.assertEqual((window.window_start, window.window_end, window.first_start),
                         (at(START + 60 * DAY), at(START + 62 * DAY), at(START + 60 * DAY)))
        self.assertEqual(window.explanation_url, "https://ca.test/why")
        self.assertEqual(window.checked_at, at(self.now()))
        self.assertEqual(window.next_check_at, at(self.now() + 12 * HOUR))
        self.assertFalse(window.opened_early)
        self.assertIsNone(window.error)
        self.clock.advance(12 * HOUR - 1)
        self.assertEqual(self.poll(), 0, "not due yet")
        self.clock.advance(1)
        self.ca.answers = [self.info()]
        self.assertEqual(self.poll(), 1, "due at the instant")
        self.assertEqual(self.poller.asked, 2)

    def test_the_cas_retry_after_is_kept_between_a_minute_and_a_day(self):
        for retry_after, expected in [(5.0, 60.0), (7200.0, 7200.0), (30 * DAY, DAY)]:
            held = self.certificate(names=(f"r{retry_after}.test",))
            self.ca.answers = [self.info(retry_after=retry_after)]
            self.poll()
            self.assertEqual(self.window(held).next_check_at, at(self.now() + expected), retry_after)

    def test_certificates_not_to_ask_about(self):
        self.certificate(names=("orphan.test",), orphaned=True)
        self.certificate(names=("no-aki.test",), authority_key_id=None)
        self.certificate(names=("expired.test",), not_after=at(self.now()))
        other = self.certificate(names=("other.test",))
        # a certificate of the CA the gateway ran against before
        self.store.upstream = "https://old.test/directory"
        self.certificate(names=("old-ca.test",))
        self.store.upstream = CA
        still = self.certificate(names=("still.test",), not_after=at(self.now() + 1))
        self.ca.answers = [self.info(), self.info()]
        self.assertEqual(self.poll(), 2)
        self.assertEqual(sorted(self.ca.asked), sorted([ari_cert_id(other), ari_cert_id(still)]))

    def test_a_certificate_of_no_known_ca_is_asked_about(self):
        held = self.certificate()
        held_unknown = Certificate(**{**{f: getattr(held, f) for f in (
            "account_id", "order_id", "leaf_der", "issuer_ids", "upstream_url", "issued_at", "names",
            "authority_key_id", "not_before", "not_after")}, "id": "adopted", "serial": "ff",
            "directory_url": None})
        poller = RenewalInfoPoller(self.ca, self.store, self.clock)
        self.assertTrue(poller._polled(held_unknown))
        self.assertFalse(poller._polled(Certificate(**{**{f: getattr(held_unknown, f) for f in (
            "account_id", "order_id", "leaf_der", "issuer_ids", "upstream_url", "issued_at", "names",
            "authority_key_id", "not_before", "not_after", "id", "serial")},
            "directory_url": "https://old.test/directory"})))

    def test_a_ca_without_ari_is_not_asked(self):
        self.certificate()
        self.ca.ari = False
        self.assertEqual(self.poll(), 0)
        self.assertEqual(self.ca.asked, [])

    def test_failures_are_stored_and_asked_again_later(self):
        cases = [
            (UpstreamUnavailable("connection refused"), HOUR),
            (UpstreamUnavailable("busy", retry_after=10.0), HOUR),
            (UpstreamUnavailable("busy", retry_after=5 * HOUR), 5 * HOUR),
            (UpstreamUnavailable("busy", retry_after=30 * DAY), DAY),
            (UpstreamProblem("urn:ietf:params:acme:error:malformed", "unknown certificate", 404), 7 * DAY),
            (UpstreamProblem("urn:ietf:params:acme:error:malformed", "unknown", 404, retry_after=DAY), 7 * DAY),
            (UpstreamProblem("urn:ietf:params:acme:error:serverInternal", "oops", 500), HOUR),
        ]
        for n, (error, expected) in enumerate(cases):
            held = self.certificate(names=(f"f{n}.test",))
            self.ca.answers = [error]
            with LogLines("gateway.translate.renewalinfo") as log:
                self.assertEqual(self.poll(), 1)
            window = self.window(held)
            self.assertEqual(window.next_check_at, at(self.now() + expected), error)
            self.assertEqual(window.checked_at, at(self.now()))
            self.assertEqual(window.error, str(error))
            self.assertIsNone(window.window_start)
            self.assertEqual(log.lines, [f"renewalInfo for certificate {held.id} failed: {error}"])

    def test_an_answer_after_a_failure_clears_the_error(self):
        held = self.certificate()
        self.ca.answers = [UpstreamUnavailable("connection refused")]
        self.poll()
        self.clock.advance(HOUR)
        self.ca.answers = [self.info()]
        self.poll()
        window = self.window(held)
        self.assertIsNone(window.error)
        self.assertEqual(window.window_start, at(START + 60 * DAY))
        self.assertEqual(window.next_check_at, at(self.now() + 12 * HOUR))

    def test_a_window_that_moves_earlier_opened_early_and_is_told_once(self):
        held = self.certificate(names=("a.test", "b.test"))
        self.ca.answers = [self.info(60, 62)]
        self.poll()
        self.clock.advance(12 * HOUR)
        self.ca.answers = [self.info(50, 52, explanation="https://ca.test/incident")]
        with LogLines("gateway.translate.renewalinfo") as log:
            self.poll()
        window = self.window(held)
        self.assertEqual(window.first_start, at(START + 60 * DAY), "the first window's start is kept")
        self.assertEqual(window.window_start, at(START + 50 * DAY))
        self.assertTrue(window.opened_early)
        self.assertEqual(log.lines, [
            f"the CA's renewal window of certificate {held.id} (a.test, b.test) opened early: "
            f"{at(START + 50 * DAY)} to {at(START + 52 * DAY)} (https://ca.test/incident); "
            f"its client should renew now"])
        self.clock.advance(12 * HOUR)
        self.ca.answers = [self.info(49, 51)]
        with LogLines("gateway.translate.renewalinfo") as log:
            self.poll()
        self.assertTrue(self.window(held).opened_early)
        self.assertEqual(log.lines, [], "told once")

    def test_a_window_before_half_the_lifetime_opened_early_at_the_first_answer(self):
        held = self.certificate()
        self.ca.answers = [self.info(11, 12)]
        with LogLines("gateway.translate.renewalinfo") as log:
            self.poll()
        self.assertTrue(self.window(held).opened_early)
        self.assertEqual(log.lines, [
            f"the CA's renewal window of certificate {held.id} (a.test) opened early: "
            f"{at(START + 11 * DAY)} to {at(START + 12 * DAY)}; its client should renew now"])

    def test_a_certificate_not_due_is_passed_over_for_those_that_are(self):
        first = self.certificate(names=("first.test",))
        self.ca.answers = [self.info()]
        self.assertEqual(self.poll(), 1)
        self.clock.advance(11 * HOUR)
        self.certificate(names=("second.test",))
        self.ca.answers = [self.info()]
        self.assertEqual(self.poll(), 1)
        self.clock.advance(HOUR)
        third = self.certificate(names=("third.test",))
        self.ca.answers = [self.info(), self.info()]
        self.ca.asked = []
        # first is due again, second is not (asked an hour later), third never was
        self.assertEqual(self.poll(), 2)
        self.assertEqual(sorted(self.ca.asked), sorted([ari_cert_id(first), ari_cert_id(third)]))

    def test_an_upstream_error_without_retry_after_is_asked_again_in_an_hour(self):
        held = self.certificate()
        self.ca.answers = [UpstreamError("the connection was reset")]
        self.assertEqual(self.poll(), 1)
        window = self.window(held)
        self.assertEqual((window.error, window.next_check_at),
                         ("the connection was reset", at(self.now() + HOUR)))
