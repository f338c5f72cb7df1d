"""
``/readyz?upstream=1`` gives up after its 4 s, and SIGTERM's cousin —
cancellation — ends an upstream read at once (issue 18 item 8).

Against a CA that accepts connections and never answers, ``/readyz`` took
65 s: its 4 s deadline cancelled the directory fetch, the upstream client
turned the cancellation into a "cannot reach" failure, and its read-retry
loop retried that, each attempt waiting out ``--request-timeout``.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric import ec
from twisted.internet import defer

from gateway.keys.jose import AccountKey
from gateway.operations.admin import CHECK_TIMEOUT
from gateway.process.testing import build_test_gateway

KEY = AccountKey.from_private_key(ec.generate_private_key(ec.SECP256R1()))


def hanging_gateway():
    gateway = build_test_gateway([KEY])
    for _ in range(20):
        gateway.ca.hang_next("directory")
    gateway.ca.counts.clear()
    return gateway


def test_upstream_check_gives_up_at_its_deadline():
    gateway = hanging_gateway()
    results = []
    checking = defer.Deferred.fromCoroutine(gateway.gateway.readiness.check_upstream())
    checking.addBoth(results.append)
    gateway.clock.advance(CHECK_TIMEOUT - 0.5)
    assert results == []
    gateway.clock.advance(0.5)
    (result,) = results
    assert not result.ok and f"no answer within {CHECK_TIMEOUT:g}s" in result.detail, result
    # The fetch it abandoned is not retried behind its back.
    gateway.clock.advance(120)
    assert gateway.ca.counts["directory"] == 1


def test_readyz_page_answers_503_within_the_deadline():
    gateway = hanging_gateway()
    page = gateway.gateway.admin.resource()
    from treq.testing import StubTreq

    admin = StubTreq(page)
    replies = []
    admin.get("http://127.0.0.1/readyz?upstream=1").addBoth(replies.append)
    gateway.clock.advance(CHECK_TIMEOUT)
    admin.flush()
    (response,) = replies
    assert response.code == 503
    body = []
    response.content().addBoth(body.append)
    admin.flush()
    text = body[0].decode()
    assert f"upstream: FAILED: directory {gateway.ca.directory_url} did not answer: " \
           f"no answer within {CHECK_TIMEOUT:g}s" in text, text
    assert gateway.ca.counts["directory"] == 1


def test_cancelled_read_is_not_retried():
    """
    An upstream read cancelled by its caller ends with ``CancelledError``
    at once: the retry loop does not take the cancellation for an outage.
    """
    gateway = hanging_gateway()
    results = []
    fetching = defer.Deferred.fromCoroutine(gateway.upstream.directory(refresh=True))
    fetching.addBoth(results.append)
    fetching.cancel()
    assert len(results) == 1 and results[0].check(defer.CancelledError), results
    gateway.clock.advance(300)
    assert gateway.ca.counts["directory"] == 1
