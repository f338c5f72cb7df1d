"""
The upstream client (`gateway.upstream.client`) at its edges, against a
scripted CA (``treq.testing.StubTreq``), a `task.Clock` and, for failures
no CA can produce on demand, a transport that fails as Twisted's does:
error statuses and bodies of every shape, the nonce pool's bounds, retries
of reads (their delays, Retry-After, what is never retried), a caller that
gives up, timeouts that leave no timer behind, account recovery, the
payload of every request, polling's deadline and its end on a dead
authorization, and what each exchange tells the metrics and the log.
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import hmac
import json
from typing import Any, Dict, List, Optional

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from twisted.internet import defer
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.logger import LogLevel, capturedLogs, formatEvent
from twisted.python.failure import Failure
from twisted.web import resource, server
from twisted.web._newclient import ResponseNeverReceived
from treq.testing import StubTreq

from gateway.keys.jose import AccountKey, b64url, b64url_decode
from gateway.upstream.client import (
    DEFAULT_USER_AGENT,
    JOSE_CONTENT_TYPE,
    PollPolicy,
    UpstreamClient,
    UpstreamResponse,
)
from gateway.upstream.errors import PollTimeout, UpstreamProblem, UpstreamProtocolError, UpstreamUnavailable
from gateway.upstream.messages import ExternalAccountKey, Order, UpstreamAccount
from gateway.upstream.transport import AgentTransport

BASE = "https://ca.test"
V2 = "urn:ietf:params:acme:error:"
KEY = AccountKey.from_private_key(ec.generate_private_key(ec.SECP256R1()))
OTHER_KEY = AccountKey.from_private_key(ec.generate_private_key(ec.SECP256R1()))
ACCOUNT = UpstreamAccount(key=KEY, url=BASE + "/acct/1")


def directory_document(**changes):
    document = {"newNonce": BASE + "/nonce", "newAccount": BASE + "/new-acct",
                "newOrder": BASE + "/new-order", "revokeCert": BASE + "/revoke",
                "keyChange": BASE + "/key-change", "renewalInfo": BASE + "/ari/"}
    document.update(changes)
    return {k: v for k, v in document.items() if v is not None}


class CA(resource.Resource):
    """
    A CA answering from per-path queues of scripted responses (the
    directory and newNonce have standing answers unless scripted), that
    records every request: method, path, headers and decoded JWS.
    """

    isLeaf = True

    def __init__(self, directory=None):
        super().__init__()
        self.directory = directory or directory_document()
        self.scripts: Dict[str, list] = {}
        self.requests: List[Dict[str, Any]] = []
        self.nonces = 0
        self.hang = set()

    def script(self, path, status=200, body=None, headers=None, nonce=True):
        self.scripts.setdefault(path, []).append((status, body, headers or {}, nonce))

    def render(self, request):
        path = request.path.decode()
        body = request.content.read()
        record = {"method": request.method.decode(), "path": path,
                  "headers": {k.decode().lower(): [v.decode() for v in vs]
                              for k, vs in request.requestHeaders.getAllRawHeaders()}}
        if body:
            jws = json.loads(body)
            record["jws"] = jws
            record["protected"] = json.loads(b64url_decode(jws["protected"]))
            record["payload"] = b64url_decode(jws["payload"])
        self.requests.append(record)
        if path in self.hang:
            return server.NOT_DONE_YET
        if path not in self.scripts or not self.scripts[path]:
            if path == "/directory":
                self.scripts.setdefault(path, []).append((200, self.directory, {}, False))
            elif path == "/nonce":
                self.scripts.setdefault(path, []).append((200, b"", {}, True))
        status, payload, headers, nonce = self.scripts[path].pop(0)
        request.setResponseCode(status)
        if nonce:
            self.nonces += 1
            request.setHeader("replay-nonce", f"nonce-{self.nonces}")
        for name, value in headers.items():
            for one in value if isinstance(value, list) else [value]:
                request.responseHeaders.addRawHeader(name, one)
        if isinstance(payload, (dict, list)):
            if not request.responseHeaders.hasHeader("content-type"):
                request.setHeader("content-type", "application/problem+json" if status >= 400
                                  else "application/json")
            return json.dumps(payload).encode()
        return payload or b""

    def posts(self, path=None):
        return [r for r in self.requests if r["method"] == "POST" and path in (None, r["path"])]

    def count(self, path, method=None):
        return sum(r["path"] == path and method in (None, r["method"]) for r in self.requests)


class Recorded:
    """A metrics sink: every exchange it is told of."""

    def __init__(self):
        self.exchanges = []

    def upstream_response(self, kind, status, seconds):
        self.exchanges.append((kind, status, seconds))


POLICY = PollPolicy(initial=1.0, factor=2.0, maximum=8.0, timeout=60.0)


def client_for(ca, clock=None, **kwargs):
    kwargs.setdefault("poll_policy", POLICY)
    return UpstreamClient(BASE + "/directory", StubTreq(ca), clock or Clock(), **kwargs)


def run(coroutine) -> defer.Deferred:
    return defer.Deferred.fromCoroutine(coroutine)


def value(deferred):
    """The result of a fired Deferred (re-raising its failure)."""
    results = []
    deferred.addBoth(results.append)
    assert results, "the Deferred has not fired"
    if isinstance(results[0], Failure):
        results[0].raiseException()
    return results[0]


def failure(deferred, kind):
    with pytest.raises(kind) as raised:
        value(deferred)
    return raised.value


ORDER = {"status": "pending", "identifiers": [{"type": "dns", "value": "a.test"}],
         "authorizations": [BASE + "/authz/1"], "finalize": BASE + "/finalize/1"}


def authz(status, name="a.test"):
    return {"status": status, "identifier": {"type": "dns", "value": name}, "challenges": []}


# -- responses ----------------------------------------------------------------

def test_a_response_reads_headers_by_any_case():
    response = UpstreamResponse(BASE, 200, {"location": ["a", "b"], "link": []}, b"")
    assert (response.header("Location"), response.location) == ("a", "a")
    assert response.header("link") is None
    assert response.header("retry-after") is None


def test_a_body_that_is_not_json_names_the_status_and_url():
    error = failure(run(_json(UpstreamResponse(BASE + "/order/1", 202, {}, b"<html>"))),
                    UpstreamProtocolError)
    assert str(error) == "upstream answered 202 with a body that is not JSON"
    assert error.url == BASE + "/order/1"


async def _json(response):
    return response.json()


# -- poll policy --------------------------------------------------------------

def test_the_default_poll_policy():
    """
    Half a second, growing by half each poll, never more than 10 s, two
    minutes in all.
    """
    policy = PollPolicy()
    assert (policy.initial, policy.factor, policy.maximum, policy.timeout) == (0.5, 1.5, 10.0, 120.0)
    delays = iter(policy.delays())
    assert [next(delays) for _ in range(9)] == [0.5, 0.75, 1.125, 1.6875, 2.53125, 3.796875,
                                                5.6953125, 8.54296875, 10.0]


# -- what every exchange sends and records ------------------------------------

def test_reads_send_the_user_agent_and_no_content_type():
    ca = CA()
    client = client_for(ca)
    value(run(client.directory()))
    ca.script("/order/x", 200, ORDER)
    value(run(client.signed_post(BASE + "/order/x", None, KEY, kid=ACCOUNT.url)))
    get, head, post = ca.requests
    assert get["method"] == "GET" and head["method"] == "HEAD"
    assert get["headers"]["user-agent"] == [DEFAULT_USER_AGENT]
    assert DEFAULT_USER_AGENT.startswith("acme-gateway/") and "(ACME v1-to-v2 gateway; Twisted/treq)" in DEFAULT_USER_AGENT
    assert "content-type" not in get["headers"] and "content-type" not in head["headers"]
    assert post["headers"]["content-type"] == [JOSE_CONTENT_TYPE]
    assert JOSE_CONTENT_TYPE == "application/jose+json"


def test_a_given_user_agent_is_sent():
    ca = CA()
    value(run(client_for(ca, user_agent="gw/1").directory()))
    assert ca.requests[0]["headers"]["user-agent"] == ["gw/1"]


def test_every_exchange_is_counted_timed_and_logged():
    ca = CA()
    clock = Clock()
    metrics = Recorded()
    client = client_for(ca, clock, metrics=metrics, read_retries=0)
    with capturedLogs() as events:
        value(run(client.directory()))
        ca.script("/order/1", 404, b"")
        failure(run(client.signed_post(BASE + "/order/1", None, KEY, kid=ACCOUNT.url, kind="order")),
                UpstreamProblem)
    assert metrics.exchanges == [("directory", 200, 0), ("newNonce", 200, 0), ("order", 404, 0)]
    assert client.request_counts == {"directory": 1, "newNonce": 1, "order": 1}
    lines = [formatEvent(e) for e in events if e.get("log_namespace", "").startswith("gateway.upstream")]
    assert lines == [f"upstream GET {BASE}/directory -> 200 (directory, 0.000s)",
                     f"upstream HEAD {BASE}/nonce -> 200 (newNonce, 0.000s)",
                     f"upstream POST {BASE}/order/1 -> 404 (order, 0.000s)"]


def test_a_timed_out_exchange_is_timed_and_logged_as_failed():
    ca = CA()
    clock = Clock()
    metrics = Recorded()
    client = client_for(ca, clock, metrics=metrics, read_retries=0, request_timeout=2.5)
    ca.hang.add("/directory")
    clock.advance(100)
    with capturedLogs() as events:
        pending = run(client.directory())
        clock.advance(2.4)
        assert not pending.called
        clock.advance(0.1)
    error = failure(pending, UpstreamUnavailable)
    assert str(error) == f"no answer from {BASE}/directory within 2.5s"
    assert error.url == BASE + "/directory"
    assert metrics.exchanges == [("directory", None, 2.5)]
    warnings = [formatEvent(e) for e in events if e.get("log_level") == LogLevel.warn]
    assert len(warnings) == 1
    assert warnings[0].startswith(f"upstream GET {BASE}/directory failed (directory, 2.500s): ")


def test_the_default_request_timeout_is_thirty_seconds():
    ca = CA()
    clock = Clock()
    client = client_for(ca, clock, read_retries=0)
    ca.hang.add("/directory")
    pending = run(client.directory())
    clock.advance(29.9)
    assert not pending.called
    clock.advance(0.1)
    assert str(failure(pending, UpstreamUnavailable)) == f"no answer from {BASE}/directory within 30s"


def test_an_answered_exchange_leaves_no_timer_behind():
    clock = Clock()
    client = client_for(CA(), clock)
    value(run(client.directory()))
    assert clock.getDelayedCalls() == []


# -- transport failures (a transport that fails as Twisted's agent does) ------

class FailingAgent:
    """
    A Twisted agent whose every request fails with ``error`` (or hangs, for
    ``error=None``), as Twisted's agent fails: connection refused, or
    ``ResponseNeverReceived`` wrapping the reasons.
    """

    def __init__(self, error: Optional[BaseException]):
        self.error = error
        self.requests = []

    def request(self, method, uri, headers=None, bodyProducer=None):
        self.requests.append((method, uri))
        if self.error is None:
            return defer.Deferred()
        return defer.fail(self.error)


def failing(error: Optional[BaseException]) -> AgentTransport:
    return AgentTransport(FailingAgent(error))


def test_a_refused_connection_is_unavailable_naming_the_url():
    http = failing(ConnectionRefusedError("nobody home"))
    client = UpstreamClient(BASE + "/directory", http, Clock(), read_retries=0)
    error = failure(run(client.directory()), UpstreamUnavailable)
    assert str(error) == f"cannot reach {BASE}/directory: Connection was refused by other side: nobody home."
    assert error.url == BASE + "/directory"
    assert http.agent.requests == [(b"GET", f"{BASE}/directory".encode())]


def test_a_failed_exchange_is_logged_with_its_reason():
    client = UpstreamClient(BASE + "/directory", failing(ConnectionRefusedError("nobody home")),
                            Clock(), read_retries=0)
    with capturedLogs() as events:
        failure(run(client.directory()), UpstreamUnavailable)
    assert [formatEvent(e) for e in events if e.get("log_level") == LogLevel.warn] == [
        f"upstream GET {BASE}/directory failed (directory, 0.000s): Connection was refused by "
        f"other side: nobody home."]


def test_twisteds_wrapped_reasons_are_named_each():
    # a reason is a Failure or, at times, the exception itself
    reasons = [Failure(ConnectionRefusedError("one")), ValueError("two")]
    client = UpstreamClient(BASE + "/directory", failing(ResponseNeverReceived(reasons)),
                            Clock(), read_retries=0)
    error = failure(run(client.directory()), UpstreamUnavailable)
    assert str(error) == (f"cannot reach {BASE}/directory: Connection was refused by other side: "
                          f"one.; two")


def test_an_error_without_words_is_named_by_its_class():
    client = UpstreamClient(BASE + "/directory", failing(ValueError()), Clock(), read_retries=0)
    assert str(failure(run(client.directory()), UpstreamUnavailable)) == (
        f"cannot reach {BASE}/directory: ValueError")


@pytest.mark.parametrize("cancelled", [
    defer.CancelledError(),
    ResponseNeverReceived([Failure(defer.CancelledError())]),
    ResponseNeverReceived([defer.CancelledError(), Failure(defer.CancelledError())]),
])
def test_a_cancelled_exchange_is_cancelled_not_an_outage(cancelled):
    """
    A caller that gave up (a readiness deadline, shutdown) is not an
    outage: the read is not retried and no `UpstreamUnavailable` is logged
    as the CA's fault.
    """
    http = failing(cancelled)
    clock = Clock()
    client = UpstreamClient(BASE + "/directory", http, clock)
    error = failure(run(client.directory()), defer.CancelledError)
    assert str(error) == f"GET {BASE}/directory cancelled"
    clock.advance(60)
    assert len(http.agent.requests) == 1


@pytest.mark.parametrize("reasons", [
    [Failure(defer.CancelledError()), Failure(ConnectionRefusedError())],
    [],
])
def test_a_failure_with_other_reasons_is_an_outage(reasons):
    client = UpstreamClient(BASE + "/directory", failing(ResponseNeverReceived(reasons)),
                            Clock(), read_retries=0)
    failure(run(client.directory()), UpstreamUnavailable)


def test_a_caller_cancelling_a_hanging_read_stops_it():
    http = failing(None)
    clock = Clock()
    client = UpstreamClient(BASE + "/directory", http, clock)
    pending = run(client.directory())
    pending.cancel()
    failure(pending, defer.CancelledError)
    clock.advance(120)
    assert len(http.agent.requests) == 1
    assert clock.getDelayedCalls() == []


# -- error statuses -----------------------------------------------------------

def problem_for_response(status, body, headers=None):
    ca = CA()
    ca.script("/order/1", status, body, headers)
    client = client_for(ca, read_retries=0)
    deferred = run(client.signed_post(BASE + "/order/1", None, KEY, kid=ACCOUNT.url))
    results = []
    deferred.addBoth(results.append)
    return results[0].value if isinstance(results[0], Failure) else results[0]


def test_a_problem_document_with_a_charset_and_any_case_is_read():
    problem = problem_for_response(403, json.dumps({"type": V2 + "unauthorized", "detail": "no"}).encode(),
                                   {"content-type": "Application/Problem+JSON; charset=utf-8"})
    assert (problem.code, problem.detail, problem.url) == ("unauthorized", "no", BASE + "/order/1")
    problem = problem_for_response(400, json.dumps({"type": V2 + "malformed"}).encode(),
                                   {"content-type": "application/json"})
    assert problem.code == "malformed"


def test_a_problem_keeps_its_headers_first_values_and_all_links():
    problem = problem_for_response(403, {"type": V2 + "userActionRequired", "detail": "agree"}, {
        "link": ['<https://ca.test/tos>;rel="terms-of-service"', '<https://ca.test/dir>;rel="index"'],
        "x-multi": ["one", "two"], "retry-after": "7"})
    assert problem.headers["link"] == ('<https://ca.test/tos>;rel="terms-of-service", '
                                       '<https://ca.test/dir>;rel="index"')
    assert problem.headers["x-multi"] == "one"
    assert problem.retry_after == 7.0


def test_a_problem_without_links_has_no_link_header():
    problem = problem_for_response(403, {"type": V2 + "unauthorized"})
    assert "link" not in problem.headers
    assert problem.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize("status, body, content_type", [
    (400, b"{not json", "application/problem+json"),
    (400, b'{"type": "urn:ietf:params:acme:error:malformed"}', "text/plain"),
    (400, b'["a list"]', "application/problem+json"),
    (404, b"", "application/problem+json"),
    (499, b"", None),
])
def test_a_4xx_without_a_usable_document_is_about_blank(status, body, content_type):
    problem = problem_for_response(status, body, {"content-type": content_type} if content_type else {})
    assert isinstance(problem, UpstreamProblem)
    assert (problem.type, problem.detail, problem.status, problem.url) == (
        "about:blank", "", status, BASE + "/order/1")
    if content_type:
        assert problem.headers["content-type"] == content_type


def test_a_5xx_without_a_document_is_unavailable_with_its_retry_after():
    error = problem_for_response(500, b"<html>oops</html>", {"content-type": "text/html",
                                                             "retry-after": "12"})
    assert type(error) is UpstreamUnavailable
    assert str(error) == "upstream answered 500 without a problem document"
    assert (error.retry_after, error.url) == (12.0, BASE + "/order/1")


@pytest.mark.parametrize("status, body", [
    (429, {"type": V2 + "rateLimited"}), (429, b""), (503, b"")])
def test_a_retry_after_date_is_read_against_the_clock(status, body):
    ca = CA()
    clock = Clock()
    clock.advance(1_800_000_000)
    ca.script("/order/1", status, body,
              {"retry-after": email.utils.formatdate(clock.seconds() + 90, usegmt=True)})
    deferred = run(client_for(ca, clock, read_retries=0).signed_post(
        BASE + "/order/1", None, KEY, kid=ACCOUNT.url))
    error = failure(deferred, (UpstreamProblem, UpstreamUnavailable))
    assert error.retry_after == 90.0


def test_a_5xx_with_a_document_is_a_problem():
    problem = problem_for_response(500, {"type": V2 + "serverInternal", "detail": "boom"})
    assert (type(problem), problem.status, problem.detail) == (UpstreamProblem, 500, "boom")


def test_3xx_is_not_an_error_and_is_not_followed():
    """
    A redirect is answered as it is: the CA's URLs are used exactly as
    given, and a signed request is never re-sent to another URL.
    """
    ca = CA()
    ca.script("/order/1", 302, b"", {"location": BASE + "/order/2"})
    response = value(run(client_for(ca).signed_post(BASE + "/order/1", None, KEY, kid=ACCOUNT.url)))
    assert (response.status, response.location) == (302, BASE + "/order/2")
    assert ca.count("/order/2") == 0


def test_a_redirected_directory_is_not_followed():
    ca = CA()
    ca.script("/directory", 301, b"moved", {"location": BASE + "/dir2", "content-type": "text/plain"})
    ca.script("/dir2", 200, directory_document())
    failure(run(client_for(ca).directory()), UpstreamProtocolError)
    assert ca.count("/dir2") == 0


# -- the directory and the nonce pool -----------------------------------------

def test_the_directory_is_fetched_again_when_asked():
    ca = CA()
    client = client_for(ca)
    first = value(run(client.directory()))
    ca.directory = directory_document(newOrder=BASE + "/new-order-2")
    assert value(run(client.directory())) is first
    assert value(run(client.directory(refresh=True))).new_order == BASE + "/new-order-2"
    assert value(run(client.directory())).new_order == BASE + "/new-order-2"
    assert ca.count("/directory") == 2


def test_a_directory_that_is_not_json():
    ca = CA()
    ca.script("/directory", 200, b"<html>", {"content-type": "text/html"})
    error = failure(run(client_for(ca).directory()), UpstreamProtocolError)
    assert str(error) == "upstream answered 200 with a body that is not JSON"


def test_the_nonce_pool_keeps_the_64_newest():
    """
    GETs bring nonces the pool keeps (newest first) up to 64; the 65th POST
    whose answers bring none needs a HEAD to newNonce.
    """
    ca = CA()
    client = client_for(ca)
    for _ in range(70):
        ca.script("/ari/x", 200, {"suggestedWindow": {"start": "2026-12-20T00:00:00Z",
                                                      "end": "2026-12-21T00:00:00Z"}})
        value(run(client.renewal_info("x")))
    for _ in range(65):
        ca.script("/order/1", 200, ORDER, nonce=False)
        value(run(client.signed_post(BASE + "/order/1", None, KEY, kid=ACCOUNT.url)))
    used = [p["protected"]["nonce"] for p in ca.posts()]
    assert used[:64] == [f"nonce-{n}" for n in range(70, 6, -1)]
    assert ca.count("/nonce") == 1
    assert used[64] == "nonce-71"


def test_an_empty_replay_nonce_is_not_pooled():
    ca = CA()
    client = client_for(ca)
    ca.script("/order/1", 200, ORDER, {"replay-nonce": ""}, nonce=False)
    ca.script("/order/1", 200, ORDER)
    for _ in range(2):
        value(run(client.signed_post(BASE + "/order/1", None, KEY, kid=ACCOUNT.url)))
    assert ca.count("/nonce") == 2


def test_new_nonce_without_a_replay_nonce_is_a_protocol_error_not_retried():
    ca = CA()
    ca.script("/nonce", 200, b"", nonce=False)
    clock = Clock()
    client = client_for(ca, clock)
    error = failure(run(client.post_as_get(ACCOUNT, BASE + "/order/1")), UpstreamProtocolError)
    assert str(error) == "upstream newNonce answered without a Replay-Nonce"
    assert error.url == BASE + "/nonce"
    clock.advance(60)
    assert ca.count("/nonce") == 1


def test_new_nonce_refused_is_a_problem_and_its_nonce_unused():
    """
    A newNonce that answers 400 (with a nonce) raises a problem of that
    status; the request it was for is not sent.
    """
    ca = CA()
    ca.script("/nonce", 400, {"type": V2 + "malformed", "detail": "no HEAD"})
    problem = failure(run(client_for(ca).new_order(ACCOUNT, ["a.test"])), UpstreamProblem)
    assert (problem.status, problem.url) == (400, BASE + "/nonce")
    assert ca.posts() == []


def test_new_nonce_in_an_outage_is_retried_for_reads():
    ca = CA()
    ca.script("/nonce", 503, b"", {"retry-after": "3"}, nonce=False)
    ca.script("/order/1", 200, ORDER)
    clock = Clock()
    client = client_for(ca, clock)
    pending = run(client.get_order(ACCOUNT, BASE + "/order/1"))
    clock.advance(2.9)
    assert ca.count("/nonce") == 1
    clock.advance(0.1)
    assert value(pending).status == "pending"
    assert ca.count("/nonce") == 2


# -- retries of reads ---------------------------------------------------------

class Extreme:
    """Jitter at one end of its range."""

    def __init__(self, end):
        self.end = end
        self.asked = []

    def uniform(self, low, high):
        self.asked.append((low, high))
        return low if self.end == "low" else high


@pytest.mark.parametrize("end, times", [("low", [0.125, 0.375]), ("high", [0.375, 1.125])])
def test_read_retries_default_to_two_with_quarter_second_doubling_jitter(end, times):
    """
    Defaults: two retries, the first after 0.25 s x (0.5 to 1.5), the next
    after twice as long; then the failure is raised.
    """
    ca = CA()
    for _ in range(3):
        ca.script("/directory", 502, b"down", {"content-type": "text/plain"})
    clock = Clock()
    client = UpstreamClient(BASE + "/directory", StubTreq(ca), clock)
    client._random = Extreme(end)
    pending = run(client.directory())
    seen = []
    for _ in range(64):
        before = ca.count("/directory")
        clock.advance(0.0625)  # exact in binary: the times add up exactly
        if ca.count("/directory") != before:
            seen.append(clock.seconds())
    assert seen == times
    error = failure(pending, UpstreamUnavailable)
    assert str(error) == "upstream answered 502 without a problem document"


def test_read_retries_wait_at_least_the_retry_after_up_to_the_poll_maximum():
    ca = CA()
    ca.script("/directory", 503, b"", {"retry-after": "5"})
    ca.script("/directory", 503, b"", {"retry-after": "100"})
    clock = Clock()
    client = client_for(ca, clock)
    client._random = Extreme("high")
    with capturedLogs() as events:
        pending = run(client.directory())
        clock.advance(4.9)
        assert ca.count("/directory") == 1
        clock.advance(0.1)
        assert ca.count("/directory") == 2
        clock.advance(7.9)
        assert ca.count("/directory") == 2
        clock.advance(0.1)
    assert value(pending).new_order == BASE + "/new-order"
    retries = [formatEvent(e) for e in events if "retry" in e.get("log_format", "")]
    assert retries == ["upstream read failed (upstream answered 503 without a problem document); "
                       "retry 1 in 5.00s",
                       "upstream read failed (upstream answered 503 without a problem document); "
                       "retry 2 in 8.00s"]


def test_a_short_retry_after_does_not_shorten_the_backoff():
    ca = CA()
    ca.script("/directory", 503, b"", {"retry-after": "0"})
    clock = Clock()
    client = client_for(ca, clock)
    client._random = Extreme("high")
    pending = run(client.directory())
    clock.advance(0.374)
    assert ca.count("/directory") == 1
    clock.advance(0.001)
    assert value(pending).new_nonce == BASE + "/nonce"


def test_problems_and_protocol_errors_are_not_retried():
    for status, body in ((404, b""), (429, {"type": V2 + "rateLimited"})):
        ca = CA()
        ca.script("/order/1", status, body)
        clock = Clock()
        failure(run(client_for(ca, clock).get_order(ACCOUNT, BASE + "/order/1")), UpstreamProblem)
        clock.advance(60)
        assert len(ca.posts()) == 1


# -- signed requests ----------------------------------------------------------

def test_bad_nonce_is_retried_five_times_by_default():
    ca = CA()
    for _ in range(6):
        ca.script("/order/1", 400, {"type": V2 + "badNonce"})
    client = client_for(ca)
    with capturedLogs() as events:
        failure(run(client.signed_post(BASE + "/order/1", {}, KEY, kid=ACCOUNT.url)), UpstreamProblem)
    assert len(ca.posts()) == 6
    assert [formatEvent(e) for e in events if "nonce" in e.get("log_format", "")] == [
        f"upstream rejected nonce for {BASE}/order/1; retry {n}" for n in range(1, 6)]


def test_the_jws_signs_the_nonce_and_the_exact_url():
    ca = CA()
    ca.script("/order/1", 200, ORDER)
    value(run(client_for(ca).signed_post(BASE + "/order/1?x=1", {"a": 1}, KEY, kid=ACCOUNT.url)))
    post = ca.posts()[0]
    assert post["protected"] == {"alg": "ES256", "nonce": "nonce-1", "url": BASE + "/order/1?x=1",
                                 "kid": ACCOUNT.url}
    assert json.loads(post["payload"]) == {"a": 1}
    jws = post["jws"]
    assert KEY.algorithm.verify(KEY.private_key.public_key(),
                                f"{jws['protected']}.{jws['payload']}".encode(),
                                b64url_decode(jws["signature"]))


def recovering_client(ca, urls):
    calls = []

    async def recover(upstream, key, stale):
        calls.append((key, stale))
        return urls.pop(0)

    return client_for(ca, account_recovery=recover), calls


def test_account_recovery_happens_once_per_request():
    ca = CA()
    for _ in range(2):
        ca.script("/order/1", 400, {"type": V2 + "accountDoesNotExist"})
    client, calls = recovering_client(ca, [BASE + "/acct/2", BASE + "/acct/3"])
    problem = failure(run(client.get_order(ACCOUNT, BASE + "/order/1")), UpstreamProblem)
    assert problem.code == "accountDoesNotExist"
    assert calls == [(KEY, ACCOUNT.url)]
    assert [p["protected"]["kid"] for p in ca.posts()] == [ACCOUNT.url, BASE + "/acct/2"]


def test_no_recovery_for_a_jwk_request_or_other_problems():
    ca = CA()
    ca.script("/new-acct", 400, {"type": V2 + "accountDoesNotExist"})
    ca.script("/order/1", 403, {"type": V2 + "unauthorized"})
    client, calls = recovering_client(ca, [BASE + "/acct/2"])
    assert value(run(client.find_account(KEY))) is None
    failure(run(client.get_order(ACCOUNT, BASE + "/order/1")), UpstreamProblem)
    assert calls == []


def test_without_recovery_a_forgotten_account_is_the_problem():
    ca = CA()
    ca.script("/order/1", 400, {"type": V2 + "accountDoesNotExist"})
    problem = failure(run(client_for(ca).get_order(ACCOUNT, BASE + "/order/1")), UpstreamProblem)
    assert problem.code == "accountDoesNotExist"


# -- accounts -----------------------------------------------------------------

def test_find_account_raises_other_problems():
    ca = CA()
    ca.script("/new-acct", 400, {"type": V2 + "malformed"})
    assert failure(run(client_for(ca).find_account(KEY)), UpstreamProblem).code == "malformed"


def test_find_account_reads_the_account():
    ca = CA()
    ca.script("/new-acct", 200, {"status": "deactivated", "contact": ["mailto:a@b.test"]},
              {"location": ACCOUNT.url})
    client = client_for(ca)
    account = value(run(client.find_account(KEY)))
    assert (account.url, account.status, account.contact, account.key) == (
        ACCOUNT.url, "deactivated", ("mailto:a@b.test",), KEY)
    # the whole document is kept (account recovery reads its "orders")
    assert account.body == {"status": "deactivated", "contact": ["mailto:a@b.test"]}
    assert client.request_counts["newAccount"] == 1


def test_new_account_without_contact_or_agreement():
    ca = CA()
    ca.script("/new-acct", 201, b"", {"location": ACCOUNT.url})
    client = client_for(ca)
    account = value(run(client.new_account(KEY, terms_of_service_agreed=0)))
    assert json.loads(ca.posts()[0]["payload"]) == {"termsOfServiceAgreed": False}
    assert (account.key, account.url) == (KEY, ACCOUNT.url)
    assert client.request_counts == {"directory": 1, "newNonce": 1, "newAccount": 1}
    # an empty body (Boulder 2018) is a valid account without contacts
    assert (account.status, account.contact, account.body) == ("valid", (), {})


@pytest.mark.parametrize("body", [b"not json", b"[1]", b'{"status": 5, "contact": "mailto:x"}'])
def test_an_account_body_of_the_wrong_shape_is_ignored(body):
    ca = CA()
    ca.script("/new-acct", 201, body, {"location": ACCOUNT.url, "content-type": "application/json"})
    account = value(run(client_for(ca).new_account(KEY)))
    assert (account.status, account.contact) == ("valid", ())


def test_new_account_with_an_external_account_binding():
    ca = CA()
    ca.script("/new-acct", 201, {"status": "valid"}, {"location": ACCOUNT.url})
    hmac_key = b"secret-hmac-key"
    value(run(client_for(ca).new_account(KEY, binding=ExternalAccountKey("kid-7", hmac_key))))
    payload = json.loads(ca.posts()[0]["payload"])
    binding = payload["externalAccountBinding"]
    assert json.loads(b64url_decode(binding["protected"])) == {
        "alg": "HS256", "kid": "kid-7", "url": BASE + "/new-acct"}
    assert json.loads(b64url_decode(binding["payload"])) == KEY.public_jwk_json
    mac = hmac.new(hmac_key, f"{binding['protected']}.{binding['payload']}".encode(), hashlib.sha256)
    assert binding["signature"] == b64url(mac.digest())
    assert payload["termsOfServiceAgreed"] is True


def test_new_account_without_a_location_is_a_protocol_error():
    ca = CA()
    ca.script("/new-acct", 201, {"status": "valid"})
    error = failure(run(client_for(ca).new_account(KEY)), UpstreamProtocolError)
    assert str(error) == "newAccount answered without a Location"
    assert error.url == BASE + "/new-acct"


def test_reading_updating_and_deactivating_an_account():
    ca = CA()
    ca.script("/acct/1", 200, {"status": "valid", "contact": ["mailto:new@b.test"],
                               "orders": BASE + "/acct/1/orders"})
    ca.script("/acct/1", 200, {"contact": ["mailto:x@b.test"]})
    ca.script("/acct/1", 200, {"status": "deactivated"})
    ca.script("/acct/1", 200, b"")
    client = client_for(ca)
    old = UpstreamAccount(key=KEY, url=ACCOUNT.url, status="valid", contact=("mailto:old@b.test",))
    read = value(run(client.read_account(old)))
    assert (read.status, read.contact) == ("valid", ("mailto:new@b.test",))
    assert read.body["orders"] == BASE + "/acct/1/orders"
    updated = value(run(client.update_account(old, ["mailto:x@b.test"])))
    assert (updated.status, updated.contact) == ("valid", ("mailto:x@b.test",))
    gone = value(run(client.deactivate_account(old)))
    assert (gone.status, gone.contact) == ("deactivated", ("mailto:old@b.test",))
    unchanged = value(run(client.read_account(gone)))
    assert (unchanged.status, unchanged.contact, unchanged.body) == (
        "deactivated", ("mailto:old@b.test",), {})
    payloads = [p["payload"] for p in ca.posts()]
    assert payloads[0] == b"" and payloads[3] == b""
    assert json.loads(payloads[1]) == {"contact": ["mailto:x@b.test"]}
    assert json.loads(payloads[2]) == {"status": "deactivated"}
    assert all(p["protected"]["kid"] == ACCOUNT.url for p in ca.posts())
    assert client.request_counts["account"] == 4


def test_a_key_change_needs_the_directorys_key_change():
    ca = CA(directory_document(keyChange=None))
    error = failure(run(client_for(ca).change_key(ACCOUNT, OTHER_KEY)), UpstreamProtocolError)
    assert str(error) == "the upstream directory offers no keyChange"
    assert ca.posts() == []


def test_a_refused_key_change_keeps_the_old_key():
    ca = CA()
    ca.script("/key-change", 409, {"type": V2 + "malformed", "detail": "key in use"})
    client = client_for(ca)
    failure(run(client.change_key(ACCOUNT, OTHER_KEY)), UpstreamProblem)
    assert client.request_counts["keyChange"] == 1
    assert ca.posts()[0]["protected"]["kid"] == ACCOUNT.url


# -- orders, authorizations, challenges ---------------------------------------

def test_a_new_order_with_profile_and_replaces():
    ca = CA()
    ca.script("/new-order", 201, dict(ORDER, profile="shortlived"), {"location": BASE + "/order/1"})
    order = value(run(client_for(ca).new_order(ACCOUNT, ["a.test", "*.b.test"], replaces="aYhba.AQ",
                                                profile="shortlived")))
    assert json.loads(ca.posts()[0]["payload"]) == {
        "identifiers": [{"type": "dns", "value": "a.test"}, {"type": "dns", "value": "*.b.test"}],
        "replaces": "aYhba.AQ", "profile": "shortlived"}
    assert (order.url, order.profile) == (BASE + "/order/1", "shortlived")


def test_a_new_order_without_a_location_is_a_protocol_error():
    ca = CA()
    ca.script("/new-order", 201, ORDER)
    client = client_for(ca)
    error = failure(run(client.new_order(ACCOUNT, ["a.test"])), UpstreamProtocolError)
    assert (str(error), error.url) == ("newOrder answered without a Location", BASE + "/new-order")
    assert json.loads(ca.posts()[0]["payload"]) == {"identifiers": [{"type": "dns", "value": "a.test"}]}
    assert client.request_counts["newOrder"] == 1


def test_renewal_info_is_an_unsigned_get_with_its_retry_after():
    ca = CA(directory_document(renewalInfo=BASE + "/ari///"))
    window = {"suggestedWindow": {"start": "2026-12-20T00:00:00Z", "end": "2026-12-21T00:00:00Z"}}
    ca.script("/ari/aYhba.AQ", 502, b"")
    ca.script("/ari/aYhba.AQ", 200, window, {"retry-after": "21600"})
    clock = Clock()
    client = client_for(ca, clock)
    client._random = Extreme("high")
    pending = run(client.renewal_info("aYhba.AQ"))
    clock.advance(1)
    info = value(pending)
    assert (info.start, info.retry_after) == ("2026-12-20T00:00:00Z", 21600.0)
    assert [r["method"] for r in ca.requests if r["path"] == "/ari/aYhba.AQ"] == ["GET", "GET"]
    assert client.request_counts["renewalInfo"] == 2


def test_renewal_info_url_is_kept_as_spelled_and_its_date_read():
    """
    The certID follows the CA's renewalInfo URL less its trailing slashes
    only; a Retry-After date is read against the clock.
    """
    ca = CA(directory_document(renewalInfo=BASE + "/ARI-INDEX/"))
    clock = Clock()
    clock.advance(1_800_000_000)
    date = email.utils.formatdate(clock.seconds() + 3600, usegmt=True)
    window = {"suggestedWindow": {"start": "2026-12-20T00:00:00Z", "end": "2026-12-21T00:00:00Z"}}
    ca.script("/ARI-INDEX/cert-X", 200, window, {"retry-after": date})
    info = value(run(client_for(ca, clock).renewal_info("cert-X")))
    assert info.retry_after == 3600.0


def test_renewal_info_needs_the_directorys_renewal_info():
    ca = CA(directory_document(renewalInfo=None))
    error = failure(run(client_for(ca).renewal_info("x")), UpstreamProtocolError)
    assert str(error) == "the upstream directory offers no renewalInfo"


def test_renewal_info_refused_is_the_problem():
    ca = CA()
    ca.script("/ari/x", 404, {"type": V2 + "malformed", "detail": "unknown cert"})
    assert failure(run(client_for(ca).renewal_info("x")), UpstreamProblem).detail == "unknown cert"


def test_reads_of_orders_and_authorizations_give_the_retry_after():
    ca = CA()
    ca.script("/order/1", 200, ORDER, {"retry-after": "4"})
    ca.script("/authz/1", 200, authz("pending"), {"retry-after": "6"})
    ca.script("/authz/1", 200, authz("valid"))
    client = client_for(ca)
    order, after = value(run(client.read_order(ACCOUNT, BASE + "/order/1")))
    assert (order.url, after) == (BASE + "/order/1", 4.0)
    authorization, after = value(run(client.read_authorization(ACCOUNT, BASE + "/authz/1")))
    assert (authorization.url, authorization.status, after) == (BASE + "/authz/1", "pending", 6.0)
    assert value(run(client.read_authorization(ACCOUNT, BASE + "/authz/1")))[1] is None
    assert client.request_counts == {"directory": 1, "newNonce": 1, "order": 1, "authorization": 2}


def test_deactivating_an_authorization():
    ca = CA()
    ca.script("/authz/1", 200, authz("deactivated"))
    client = client_for(ca)
    authorization = value(run(client.deactivate_authorization(ACCOUNT, BASE + "/authz/1")))
    assert (authorization.url, authorization.status) == (BASE + "/authz/1", "deactivated")
    assert json.loads(ca.posts()[0]["payload"]) == {"status": "deactivated"}
    assert ca.posts()[0]["protected"]["kid"] == ACCOUNT.url
    assert client.request_counts["authorization"] == 1


def test_challenges_are_counted_as_such():
    ca = CA()
    challenge = {"url": BASE + "/chall/1", "type": "http-01", "status": "pending", "token": "t"}
    ca.script("/chall/1", 200, challenge)
    ca.script("/chall/1", 200, challenge)
    client = client_for(ca)
    value(run(client.answer_challenge(ACCOUNT, BASE + "/chall/1")))
    value(run(client.get_challenge(ACCOUNT, BASE + "/chall/1")))
    assert client.request_counts["challenge"] == 2
    assert [p["protected"]["kid"] for p in ca.posts()] == [ACCOUNT.url] * 2


# -- polling ------------------------------------------------------------------

def post_times(ca, clock, path, steps=200, step=0.5):
    times = []
    for _ in range(steps):
        before = ca.count(path)
        clock.advance(step)
        if ca.count(path) != before:
            times.append(clock.seconds())
    return times


def test_poll_authorization_clamps_retry_after_and_ends_at_the_deadline():
    """
    A Retry-After over the policy's maximum waits the maximum, a negative
    one (a date in the past) none; the poll that would start after the
    deadline is not made.
    """
    ca = CA()
    ca.script("/authz/1", 200, authz("pending"), {"retry-after": "100"})
    ca.script("/authz/1", 200, authz("pending"), {"retry-after": "Thu, 01 Jan 1970 00:00:00 GMT"})
    for _ in range(30):
        ca.script("/authz/1", 200, authz("pending"), {"retry-after": "8"})
    clock = Clock()
    pending = run(client_for(ca, clock).poll_authorization(ACCOUNT, BASE + "/authz/1"))
    clock.advance(0)
    times = post_times(ca, clock, "/authz/1")
    # 0, 8 (clamped), 8 again (past date: no wait), then every 8 s up to
    # 56; 64 is past the deadline
    assert times == [8.0, 16.0, 24.0, 32.0, 40.0, 48.0, 56.0]
    assert ca.count("/authz/1") == 9
    error = failure(pending, PollTimeout)
    assert (error.url, error.last_status) == (BASE + "/authz/1", "pending")


def test_a_poll_due_exactly_at_the_deadline_is_made():
    ca = CA()
    for _ in range(2):
        ca.script("/authz/1", 200, authz("pending"), {"retry-after": "5"})
    ca.script("/authz/1", 200, authz("valid"))
    clock = Clock()
    client = client_for(ca, clock, poll_policy=PollPolicy(initial=1, factor=2, maximum=8, timeout=10))
    pending = run(client.poll_authorization(ACCOUNT, BASE + "/authz/1"))
    clock.advance(5)
    clock.advance(5)
    assert value(pending).status == "valid"


def test_poll_order_returns_a_pending_order_whose_authorizations_are_valid():
    ca = CA()
    ca.script("/order/1", 200, dict(ORDER, authorizations=[BASE + "/authz/1", BASE + "/authz/2"]))
    ca.script("/authz/1", 200, authz("valid"))
    ca.script("/authz/2", 200, authz("valid", "b.test"))
    order = value(run(client_for(ca).poll_order(ACCOUNT, BASE + "/order/1")))
    assert order.status == "pending"


def test_poll_order_ends_on_a_dead_authorization():
    for dead in ("invalid", "deactivated", "expired", "revoked"):
        ca = CA()
        ca.script("/order/1", 200, dict(ORDER, authorizations=[BASE + "/authz/1", BASE + "/authz/2"]))
        ca.script("/authz/1", 200, authz("pending"))
        ca.script("/authz/2", 200, authz(dead, "b.test"))
        order = value(run(client_for(ca).poll_order(ACCOUNT, BASE + "/order/1")))
        assert order.status == "pending"
        assert ca.count("/order/1") == 1


def test_poll_order_waits_while_authorizations_are_pending():
    ca = CA()
    ca.script("/order/1", 200, ORDER, {"retry-after": "3"})
    ca.script("/authz/1", 200, authz("pending"))
    ca.script("/order/1", 200, dict(ORDER, status="ready"))
    clock = Clock()
    pending = run(client_for(ca, clock).poll_order(ACCOUNT, BASE + "/order/1"))
    clock.advance(2.9)
    assert not pending.called
    clock.advance(0.1)
    assert value(pending).status == "ready"


def test_poll_order_for_valid_does_not_read_authorizations():
    """
    Waiting for issuance (``until`` valid or invalid), a pending order is
    polled without reading its authorizations, with the backoff.
    """
    ca = CA()
    ca.script("/order/1", 200, dict(ORDER, status="processing"))
    ca.script("/order/1", 200, ORDER)
    ca.script("/order/1", 200, dict(ORDER, status="valid", certificate=BASE + "/cert/1"))
    clock = Clock()
    pending = run(client_for(ca, clock).poll_order(ACCOUNT, BASE + "/order/1",
                                                   until=("valid", "invalid")))
    assert post_times(ca, clock, "/order/1", steps=10) == [1.0, 3.0]
    assert value(pending).status == "valid"
    assert ca.count("/authz/1") == 0


def test_poll_order_returns_a_final_order_whatever_it_waits_for():
    ca = CA()
    ca.script("/order/1", 200, dict(ORDER, status="invalid"))
    order = value(run(client_for(ca).poll_order(ACCOUNT, BASE + "/order/1", until=("ready",))))
    assert order.status == "invalid"


def test_poll_order_reads_retry_after_dates_and_polls_at_the_deadline():
    """
    A Retry-After date is read against the clock; a poll due exactly at
    the deadline is made, and counted as an order read.
    """
    ca = CA()
    clock = Clock()
    clock.advance(1_800_000_000)
    date = email.utils.formatdate(clock.seconds() + 6, usegmt=True)
    ca.script("/order/1", 200, dict(ORDER, status="processing"), {"retry-after": date})
    ca.script("/order/1", 200, dict(ORDER, status="processing"), {"retry-after": "4"})
    ca.script("/order/1", 200, dict(ORDER, status="valid"))
    client = client_for(ca, clock, poll_policy=PollPolicy(initial=1, factor=2, maximum=8, timeout=10))
    pending = run(client.poll_order(ACCOUNT, BASE + "/order/1"))
    clock.advance(5.9)
    assert ca.count("/order/1") == 1
    clock.advance(0.1)
    assert ca.count("/order/1") == 2
    clock.advance(4)
    assert value(pending).status == "valid"
    assert client.request_counts["order"] == 3


def test_poll_order_times_out_naming_the_status():
    ca = CA()
    for _ in range(20):
        ca.script("/order/1", 200, dict(ORDER, status="processing"), {"retry-after": "8"})
    clock = Clock()
    pending = run(client_for(ca, clock).poll_order(ACCOUNT, BASE + "/order/1"))
    post_times(ca, clock, "/order/1")
    error = failure(pending, PollTimeout)
    assert (error.url, error.last_status) == (BASE + "/order/1", "processing")
    assert ca.count("/order/1") == 8


def test_finalize_posts_the_csr_and_follows_the_order():
    ca = CA()
    ca.script("/finalize/1", 200, dict(ORDER, status="processing"), {"retry-after": "2"})
    ca.script("/order/1", 200, dict(ORDER, status="valid", certificate=BASE + "/cert/1"))
    clock = Clock()
    client = client_for(ca, clock)
    order = Order.from_json(BASE + "/order/1", ORDER)
    pending = run(client.finalize(ACCOUNT, order, b"\x30\x03csr"))
    assert json.loads(ca.posts()[0]["payload"]) == {"csr": base64.urlsafe_b64encode(
        b"\x30\x03csr").decode().rstrip("=")}
    clock.advance(1)
    finalized = value(pending)
    assert (finalized.url, finalized.status) == (BASE + "/order/1", "valid")
    assert client.request_counts["finalize"] == 1
    assert ca.posts()[0]["protected"]["kid"] == ACCOUNT.url


def test_finalize_waits_past_an_order_still_ready():
    """
    A CA slow to move a finalized order on may still show it ``ready``:
    finalize waits for ``valid`` (the certificate), not ``ready``.
    """
    ca = CA()
    ca.script("/finalize/1", 200, dict(ORDER, status="processing"))
    ca.script("/order/1", 200, dict(ORDER, status="ready"))
    ca.script("/order/1", 200, dict(ORDER, status="valid", certificate=BASE + "/cert/1"))
    clock = Clock()
    order = Order.from_json(BASE + "/order/1", ORDER)
    pending = run(client_for(ca, clock).finalize(ACCOUNT, order, b"csr"))
    clock.advance(1)
    assert value(pending).certificate == BASE + "/cert/1"


def test_finalize_answered_valid_is_not_polled():
    for status in ("valid", "invalid"):
        ca = CA()
        ca.script("/finalize/1", 200, dict(ORDER, status=status))
        order = Order.from_json(BASE + "/order/1", ORDER)
        done = value(run(client_for(ca).finalize(ACCOUNT, order, b"csr")))
        assert done.status == status and done.url == BASE + "/order/1"
        assert ca.count("/order/1") == 0


def test_submit_finalize_gives_the_retry_after():
    ca = CA()
    ca.script("/finalize/1", 200, dict(ORDER, status="processing"), {"retry-after": "9"})
    order = Order.from_json(BASE + "/order/1", ORDER)
    finalized, after = value(run(client_for(ca).submit_finalize(ACCOUNT, order, b"csr")))
    assert (finalized.status, after) == ("processing", 9.0)


# -- certificates -------------------------------------------------------------

def test_download_counts_and_lists_no_alternates_without_links():
    from tests.support.certs import make_chain_pem

    pem, ders = make_chain_pem()
    ca = CA()
    ca.script("/cert/1", 200, pem, {"content-type": "application/pem-certificate-chain"})
    client = client_for(ca)
    chain = value(run(client.download_certificate(ACCOUNT, BASE + "/cert/1")))
    assert (chain.url, chain.certificates, chain.alternates) == (BASE + "/cert/1", ders, ())
    assert client.request_counts["certificate"] == 1


def test_revocation_by_account_without_a_reason():
    ca = CA()
    ca.script("/revoke", 200, b"")
    client = client_for(ca)
    value(run(client.revoke_certificate(b"\x30\x00", account=ACCOUNT)))
    post = ca.posts()[0]
    assert post["protected"]["kid"] == ACCOUNT.url and "jwk" not in post["protected"]
    assert json.loads(post["payload"]) == {"certificate": "MAA"}
    assert client.request_counts["revokeCert"] == 1


def test_revocation_by_certificate_key_is_counted():
    ca = CA()
    ca.script("/revoke", 200, b"")
    client = client_for(ca)
    value(run(client.revoke_certificate(b"\x30\x00", certificate_key=OTHER_KEY)))
    assert client.request_counts["revokeCert"] == 1
    assert ca.posts()[0]["protected"]["jwk"] == OTHER_KEY.public_jwk_json


def test_revocation_refused_is_the_problem():
    ca = CA()
    ca.script("/revoke", 400, {"type": V2 + "alreadyRevoked"})
    problem = failure(run(client_for(ca).revoke_certificate(b"\x30\x00", 0, account=ACCOUNT)),
                      UpstreamProblem)
    assert problem.code == "alreadyRevoked"
    assert json.loads(ca.posts()[0]["payload"]) == {"certificate": "MAA", "reason": 0}


@pytest.mark.parametrize("signers", [{}, {"account": ACCOUNT, "certificate_key": OTHER_KEY}])
def test_revocation_needs_exactly_one_signer(signers):
    ca = CA()
    error = failure(run(client_for(ca).revoke_certificate(b"\x30\x00", **signers)), ValueError)
    assert str(error) == "revoke with exactly one of account or certificate_key"
    assert ca.requests == []


def test_revocation_needs_the_directorys_revoke_cert():
    ca = CA(directory_document(revokeCert=None))
    error = failure(run(client_for(ca).revoke_certificate(b"\x30\x00", account=ACCOUNT)),
                    UpstreamProtocolError)
    assert str(error) == "the upstream directory offers no revokeCert"


# -- crash points -------------------------------------------------------------

class Crashed(Exception):
    pass


@pytest.mark.parametrize("point", ["after-new-order", "after-finalize"])
def test_the_crash_points_come_right_after_the_cas_answer(point, monkeypatch):
    """
    ``ACME_GATEWAY_CRASH_AT=after-new-order`` (``after-finalize``) ends the
    process once the CA has answered newOrder (finalize), before the
    gateway reads the answer: the e2e crash tests rely on these names.
    """
    import os

    from gateway import crashpoints

    def exit_now(status):
        raise Crashed(status)

    monkeypatch.setattr(crashpoints, "_armed", point)
    monkeypatch.setattr(os, "_exit", exit_now)
    monkeypatch.setattr(os, "write", lambda fd, data: len(data))
    ca = CA()
    ca.script("/new-order", 201, ORDER, {"location": BASE + "/order/1"})
    ca.script("/finalize/1", 200, dict(ORDER, status="valid"))
    client = client_for(ca)
    order = Order.from_json(BASE + "/order/1", ORDER)
    new_order = run(client.new_order(ACCOUNT, ["a.test"]))
    finalized = run(client.submit_finalize(ACCOUNT, order, b"csr"))
    crashed, answered = (new_order, finalized) if point == "after-new-order" else (finalized, new_order)
    assert failure(crashed, Crashed).args == (crashpoints.CRASH_STATUS,)
    assert value(answered)
    assert [p["path"] for p in ca.posts()] == ["/new-order", "/finalize/1"]
