"""
What the first answer of ``--upstream`` means (`gateway.upstream.startup`),
case by case, and how the gateway keeps asking an upstream that is not there
yet: the exact reason an operator reads for each failure (TLS trust, a
certificate for another host, a failed handshake, 4xx and 5xx, a protocol
error, an unresolved host, an exception of no known kind), the causes
Twisted's HTTP client wraps, and the retry delays on a `task.Clock`.

The exceptions are the real ones the libraries raise (pyOpenSSL,
service_identity, Twisted's web client), built by hand: the end-to-end
cases with real servers are in ``tests/test_startup.py``.
"""

from __future__ import annotations

from typing import List

import pytest
from OpenSSL import SSL
from service_identity.exceptions import VerificationError
from twisted.internet import defer
from twisted.internet.error import ConnectionRefusedError, DNSLookupError
from twisted.internet.task import Clock
from twisted.logger import LogLevel, capturedLogs, formatEvent
from twisted.python.failure import Failure
from twisted.web._newclient import ResponseNeverReceived

from gateway.upstream import startup
from gateway.upstream.errors import UpstreamProblem, UpstreamProtocolError, UpstreamUnavailable
from gateway.upstream.messages import Directory
from gateway.upstream.startup import ASK_DIRECTORY, Diagnosis, diagnose, keep_asking

URL = "https://ca.example.test:14000/dir"
UNTRUSTED = SSL.Error([("SSL routines", "", "certificate verify failed")])
HANDSHAKE = SSL.Error([("SSL routines", "", "wrong version number")])


def wrapped(cause: BaseException) -> UpstreamUnavailable:
    """
    What the upstream client raises for a failed exchange: an
    `UpstreamUnavailable` raised while handling Twisted's
    ``ResponseNeverReceived``, whose ``reasons`` hold the real cause.
    """
    try:
        try:
            raise ResponseNeverReceived([Failure(cause)])
        except ResponseNeverReceived:
            raise UpstreamUnavailable(f"cannot reach {URL}: {cause}", url=URL)
    except UpstreamUnavailable as error:
        return error


def test_an_untrusted_certificate_asks_for_a_bundle():
    assert diagnose(wrapped(UNTRUSTED), URL) == Diagnosis(
        True, "the CA's certificate is not trusted: give --upstream-ca-bundle with the PEM of "
              "the root that issued it (a private CA, Pebble)")
    assert diagnose(wrapped(UNTRUSTED), URL, "/etc/ca.pem") == Diagnosis(
        True, "the CA's certificate is not trusted by --upstream-ca-bundle /etc/ca.pem: give the "
              "PEM of the root that issued it")


def test_a_certificate_for_another_host_names_the_host():
    error = wrapped(VerificationError(errors=["DNS-ID mismatch"]))
    assert diagnose(error, URL, "/etc/ca.pem") == Diagnosis(
        True, "the CA's certificate is not valid for ca.example.test: use the host name its "
              "certificate names in --upstream")


def test_a_failed_handshake_asks_whether_it_is_tls():
    error = wrapped(HANDSHAKE)
    assert diagnose(error, URL) == Diagnosis(
        True, f"the TLS handshake with ca.example.test failed ({error}): is --upstream an https "
              f"URL of a TLS server?")


def test_tls_failures_are_found_as_direct_causes_too():
    """
    A TLS error raised as the explicit cause, or as the exception itself,
    counts as much as one among Twisted's reasons.
    """
    try:
        raise UpstreamUnavailable("cannot reach") from UNTRUSTED
    except UpstreamUnavailable as error:
        explicit = error
    assert explicit.__context__ is None
    assert diagnose(explicit, URL).reason.startswith("the CA's certificate is not trusted:")
    assert diagnose(HANDSHAKE, URL).reason.startswith("the TLS handshake with ca.example.test failed")
    # a reason given as the exception itself rather than a Failure
    bare = ResponseNeverReceived([VerificationError(errors=["mismatch"])])
    assert diagnose(bare, URL).reason.startswith("the CA's certificate is not valid for")


def test_errors_of_other_modules_with_the_same_names_are_not_tls():
    """
    Only pyOpenSSL's ``Error`` and service_identity's
    ``VerificationError`` are TLS failures, not any exception so named.
    """
    Error = type("Error", (Exception,), {"__module__": "gateway.elsewhere"})
    VerificationError_ = type("VerificationError", (Exception,), {"__module__": "gateway.elsewhere"})
    for cause in (Error("certificate verify failed"), VerificationError_("mismatch")):
        diagnosis = diagnose(wrapped(cause), URL)
        assert diagnosis == Diagnosis(False, f"cannot reach {URL}: {cause}")
    # and another pyOpenSSL class is no TLS verdict either
    other = type("WantReadError", (Exception,), {"__module__": "OpenSSL.SSL"})
    assert not diagnose(wrapped(other("x")), URL).wrong


def test_a_cause_chain_with_a_loop_ends():
    """
    An exception that is its own context (or reached twice) is read once:
    the diagnosis ends.
    """
    error = UpstreamUnavailable("cannot reach")
    other = ConnectionRefusedError()
    error.__context__ = other
    other.__context__ = error
    assert diagnose(error, URL) == Diagnosis(False, "cannot reach")


def test_5xx_is_not_reachable_yet_and_4xx_is_wrong():
    problem = UpstreamProblem("urn:ietf:params:acme:error:serverInternal", "boom", 500)
    assert diagnose(problem, URL) == Diagnosis(
        False, "the CA answered 500 (500 serverInternal: boom); it may be starting")
    assert diagnose(UpstreamProblem("about:blank", "", 503), URL).wrong is False
    assert diagnose(UpstreamProblem("about:blank", "", 499), URL) == Diagnosis(
        True, f"it answered 499: {ASK_DIRECTORY}")
    assert diagnose(UpstreamProblem("about:blank", "", 404), URL) == Diagnosis(
        True, f"it answered 404: {ASK_DIRECTORY}")


def test_the_question_names_lets_encrypts_directory():
    assert ASK_DIRECTORY == ("is this an ACME v2 directory URL? (Let's Encrypt: "
                             "https://acme-v02.api.letsencrypt.org/directory)")


def test_protocol_errors_are_wrong():
    """
    An ACME v1 directory says so (its message carries the fix); any other
    protocol error gets the question.
    """
    v1 = UpstreamProtocolError("upstream directory is an ACME v1 directory (new-reg, no newNonce): "
                               "give the CA's ACME v2 directory URL")
    assert diagnose(v1, URL) == Diagnosis(True, str(v1))
    other = UpstreamProtocolError("upstream directory has no valid 'newNonce'")
    assert diagnose(other, URL) == Diagnosis(
        True, f"upstream directory has no valid 'newNonce': {ASK_DIRECTORY}")


def test_an_unresolved_host_is_named_and_asked_again():
    error = wrapped(DNSLookupError("no results for hostname lookup: ca.example.test"))
    assert diagnose(error, URL) == Diagnosis(
        False, "the host name ca.example.test does not resolve (yet): check its spelling in "
               "--upstream; retrying, since DNS may not be ready yet")
    # a URL without a host is named whole
    assert "the host name not-a-url does not resolve" in diagnose(error, "not-a-url").reason


def test_refused_connections_and_timeouts_say_what_happened():
    refused = wrapped(ConnectionRefusedError())
    assert diagnose(refused, URL) == Diagnosis(False, str(refused))
    timeout = UpstreamUnavailable(f"no answer from {URL} within 30s", url=URL)
    assert diagnose(timeout, URL) == Diagnosis(False, f"no answer from {URL} within 30s")


def test_an_error_of_no_known_kind_is_not_reachable_yet():
    """
    Anything else (a bug, an unexpected library error) is not a verdict on
    the URL: keep asking, saying what it was, or at least its class.
    """
    assert diagnose(RuntimeError("odd"), URL) == Diagnosis(False, "odd")
    assert diagnose(RuntimeError(), URL) == Diagnosis(False, "RuntimeError")


# --------------------------------------------------------------------------
# keep_asking
# --------------------------------------------------------------------------

DIRECTORY = Directory.from_json({"newNonce": "n", "newAccount": "a", "newOrder": "o"})


class ScriptedUpstream:
    """
    An upstream whose directory fetches raise the scripted exceptions in
    turn, then answer; it records the clock's time and ``refresh`` of each.
    """

    def __init__(self, clock: Clock, failures: List[BaseException]) -> None:
        self.clock = clock
        self.failures = list(failures)
        self.asked: List[tuple] = []

    async def directory(self, refresh: bool = False) -> Directory:
        self.asked.append((self.clock.seconds(), refresh))
        if self.failures:
            raise self.failures.pop(0)
        return DIRECTORY


def ask(upstream, clock, ca_bundle=None, **delays):
    outcome: List[object] = []
    running = defer.Deferred.fromCoroutine(keep_asking(
        upstream, clock, URL, ca_bundle, lambda: outcome.append("answered"), outcome.append, **delays))
    return running, outcome


def test_asks_after_a_second_then_doubling_up_to_a_minute():
    """
    The defaults: the first try after 1 s, then 2, 4, 8, 16, 32, 60, 60 s
    between tries; each try fetches the directory anew, and the first
    answer ends the watch.
    """
    assert (startup.FIRST_RETRY_DELAY, startup.MAX_RETRY_DELAY) == (1.0, 60.0)
    clock = Clock()
    upstream = ScriptedUpstream(clock, [UpstreamUnavailable("down")] * 8)
    running, outcome = ask(upstream, clock)
    clock.advance(0.5)
    assert upstream.asked == []
    clock.advance(0.5)
    for _ in range(400):
        clock.advance(1)
    assert [round(t) for t, _ in upstream.asked] == [1, 3, 7, 15, 31, 63, 123, 183, 243]
    assert all(refresh is True for _, refresh in upstream.asked)
    assert outcome == ["answered"]
    assert running.called


def test_given_delays_are_used():
    clock = Clock()
    upstream = ScriptedUpstream(clock, [UpstreamUnavailable("down")] * 3)
    running, outcome = ask(upstream, clock, first_delay=5.0, max_delay=12.0)
    for _ in range(60):
        clock.advance(1)
    assert [round(t) for t, _ in upstream.asked] == [5, 15, 27, 39]
    assert outcome == ["answered"]


def test_a_wrong_answer_ends_the_watch_with_its_diagnosis():
    """
    A web page (a protocol error) after an outage: ``wrong`` gets the
    diagnosis, ``answered`` is never called and nothing is asked again.
    """
    clock = Clock()
    web_page = UpstreamProtocolError("upstream answered 200 with a body that is not JSON")
    upstream = ScriptedUpstream(clock, [UpstreamUnavailable("down"), web_page])
    running, outcome = ask(upstream, clock)
    for _ in range(100):
        clock.advance(1)
    assert outcome == [Diagnosis(True, f"{web_page}: {ASK_DIRECTORY}")]
    assert len(upstream.asked) == 2
    assert running.called


def test_each_failed_try_is_logged_with_the_next_delay():
    clock = Clock()
    upstream = ScriptedUpstream(clock, [wrapped(DNSLookupError("no results"))])
    with capturedLogs() as events:
        ask(upstream, clock)
        clock.advance(1)
    warnings = [formatEvent(e) for e in events if e.get("log_level") == LogLevel.warn]
    assert warnings == [
        f"upstream directory {URL} still not reachable: the host name ca.example.test does not "
        f"resolve (yet): check its spelling in --upstream; retrying, since DNS may not be ready "
        f"yet; next try in 2s"]


def test_cancelling_stops_the_watch():
    clock = Clock()
    upstream = ScriptedUpstream(clock, [UpstreamUnavailable("down")] * 100)
    running, outcome = ask(upstream, clock)
    clock.advance(1)
    running.cancel()
    running.addErrback(lambda failure: failure.trap(defer.CancelledError))
    for _ in range(100):
        clock.advance(1)
    assert len(upstream.asked) == 1 and outcome == []


@pytest.mark.parametrize("error", [UpstreamUnavailable("x"), RuntimeError("y")])
def test_any_exception_of_a_try_is_diagnosed_not_raised(error):
    clock = Clock()
    upstream = ScriptedUpstream(clock, [error])
    running, outcome = ask(upstream, clock)
    clock.advance(1)
    clock.advance(2)
    assert outcome == ["answered"]
    assert running.called


def test_a_later_untrusted_certificate_names_the_bundle_given():
    """
    The watch diagnoses with the operator's ``--upstream-ca-bundle``: a
    CA that comes up with a certificate the bundle does not trust says so.
    """
    clock = Clock()
    upstream = ScriptedUpstream(clock, [UpstreamUnavailable("down"), wrapped(UNTRUSTED)])
    running, outcome = ask(upstream, clock, ca_bundle="/etc/gateway/ca.pem")
    for _ in range(10):
        clock.advance(1)
    assert outcome == [Diagnosis(True, "the CA's certificate is not trusted by --upstream-ca-bundle "
                                       "/etc/gateway/ca.pem: give the PEM of the root that issued it")]
