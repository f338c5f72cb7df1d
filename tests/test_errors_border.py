"""
`gateway.translate.errors`, the border upstream failures cross: a flow
turns the CA's problem document into `UpstreamRefused` (type, detail,
status, subproblems, Retry-After and headers kept, the original chained)
and every other upstream error into `UpstreamFailed` (with the 503's
Retry-After); the short ACME code of a v2 type; and the words of a failed
revalidation, which the client reads.
"""

from __future__ import annotations

import pytest
from twisted.internet import defer

from gateway.translate.errors import (
    AlreadyRevoked,
    Conflict,
    RateLimited,
    RefusedSubproblem,
    UpstreamFailed,
    UpstreamRefused,
    ValidationFailed,
    flow,
    short_code,
)
from gateway.upstream.errors import (
    PollTimeout,
    Subproblem,
    UpstreamProblem,
    UpstreamProtocolError,
    UpstreamUnavailable,
)


def raised_by_flow(error):
    @flow
    async def failing(*args, **kwargs):
        failing.called_with = (args, kwargs)
        raise error

    failure = []
    defer.ensureDeferred(failing(1, two=2)).addErrback(failure.append)
    assert failing.called_with == ((1,), {"two": 2})
    return failure[0].value


def test_a_flow_returns_what_it_returned():
    @flow
    async def works(value):
        return value * 2

    results = []
    defer.ensureDeferred(works(21)).addCallback(results.append)
    assert results == [42]
    assert works.__name__ == "works"


def test_the_cas_problem_crosses_as_data():
    problem = UpstreamProblem(
        "urn:ietf:params:acme:error:rejectedIdentifier", "one name refused", 400,
        subproblems=[Subproblem("urn:ietf:params:acme:error:caa", "CAA forbids",
                                {"type": "dns", "value": "a.test"}),
                     Subproblem("about:blank", "other")],
        retry_after=30.0, url="https://ca.test/new-order",
        headers={"link": '<https://ca.test/dir>;rel="index"', "retry-after": "30"})
    refused = raised_by_flow(problem)
    assert type(refused) is UpstreamRefused
    assert refused.__cause__ is problem
    assert (refused.type, refused.detail, refused.status) == (
        "urn:ietf:params:acme:error:rejectedIdentifier", "one name refused", 400)
    assert refused.code == "rejectedIdentifier"
    assert refused.retry_after == 30.0
    assert refused.headers == {"link": '<https://ca.test/dir>;rel="index"', "retry-after": "30"}
    assert refused.subproblems == (
        RefusedSubproblem("urn:ietf:params:acme:error:caa", "CAA forbids",
                          {"type": "dns", "value": "a.test"}),
        RefusedSubproblem("about:blank", "other", None))
    assert [s.code for s in refused.subproblems] == ["caa", "about:blank"]
    assert str(refused) == "400 rejectedIdentifier: one name refused"


def test_a_refusal_without_headers_has_none():
    refused = UpstreamRefused("about:blank", "", 404)
    assert refused.headers == {}
    assert refused.subproblems == ()
    assert refused.retry_after is None
    assert str(refused) == "404 about:blank: "


@pytest.mark.parametrize("error, reason, retry_after", [
    (UpstreamUnavailable("connection refused", retry_after=120.0), "connection refused", 120.0),
    (UpstreamProtocolError("no Location header"), "no Location header", None),
    (PollTimeout("https://ca.test/authz/1", "pending"),
     "https://ca.test/authz/1 still 'pending' after polling", None),
])
def test_other_upstream_errors_cross_as_failures(error, reason, retry_after):
    failed = raised_by_flow(error)
    assert type(failed) is UpstreamFailed
    assert failed.__cause__ is error
    assert (failed.reason, failed.detail, str(failed), failed.retry_after) == (
        reason, reason, reason, retry_after)


def test_other_exceptions_pass_untouched():
    error = KeyError("a bug")
    assert raised_by_flow(error) is error


@pytest.mark.parametrize("error_type, code", [
    ("urn:ietf:params:acme:error:rateLimited", "rateLimited"),
    ("urn:ietf:params:acme:error:", ""),
    ("about:blank", "about:blank"),
    ("urn:acme:error:malformed", "urn:acme:error:malformed"),
    ("xurn:ietf:params:acme:error:rateLimited", "xurn:ietf:params:acme:error:rateLimited"),
])
def test_short_code(error_type, code):
    assert short_code(error_type) == code


def test_a_failed_revalidation_says_why():
    by_ca = UpstreamRefused("urn:ietf:params:acme:error:unauthorized", "wrong token", 403)
    failed = ValidationFailed("a.test", "http-01", "invalid", by_ca)
    assert failed.detail == "Revalidation of a.test by http-01 failed: wrong token"
    assert (failed.name, failed.challenge_type, failed.status, failed.error) == (
        "a.test", "http-01", "invalid", by_ca)
    silent = ValidationFailed("*.a.test", "dns-01", "deactivated")
    assert str(silent) == "Revalidation of *.a.test by dns-01 failed: the authorization is deactivated"
    assert silent.error is None


def test_refusals_keep_what_the_face_renders():
    conflict = AlreadyRevoked("revoked already", location="https://gw.test/acme/cert/01")
    assert isinstance(conflict, Conflict)
    assert (str(conflict), conflict.location) == ("revoked already", "https://gw.test/acme/cert/01")
    assert Conflict("in use").location is None
    limited = RateLimited("spent", retry_after=60.0)
    assert (limited.detail, limited.retry_after) == ("spent", 60.0)
    assert RateLimited("spent").retry_after is None
