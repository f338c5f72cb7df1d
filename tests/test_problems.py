"""
Tests for `gateway.v1.problems`: v1 problem documents and the upstream (v2) to
v1 error mapping of MAPPING §3.4.
"""

from __future__ import annotations

import json

import pytest

from gateway.translate.errors import UpstreamFailed
from gateway.v1.problems import V1Problem, from_upstream, problem_for
from gateway.upstream.errors import Subproblem, UpstreamProblem, UpstreamUnavailable

V2 = "urn:ietf:params:acme:error:"


def upstream(code: str, status: int, detail: str = "upstream says no", **kwargs) -> UpstreamProblem:
    """
    An upstream problem as the upstream client would build it from a v2
    problem document.
    """
    error_type = code if code == "about:blank" else V2 + code
    return UpstreamProblem(error_type, detail, status, **kwargs)


CONSTRUCTORS = [
    (lambda: V1Problem.malformed("m"), "malformed", 400),
    (lambda: V1Problem.malformed("m", 411), "malformed", 411),
    (lambda: V1Problem.unauthorized("m"), "unauthorized", 403),
    (lambda: V1Problem.bad_nonce("m"), "badNonce", 400),
    (lambda: V1Problem.rate_limited("m"), "rateLimited", 429),
    (lambda: V1Problem.server_internal("m"), "serverInternal", 500),
    (lambda: V1Problem.invalid_email("m"), "invalidEmail", 400),
    (lambda: V1Problem.rejected_identifier("m"), "rejectedIdentifier", 400),
    (lambda: V1Problem.connection("m"), "connection", 400),
    (lambda: V1Problem.unknown_host("m"), "unknownHost", 400),
    (lambda: V1Problem.tls("m"), "tls", 400),
    (lambda: V1Problem.dns("m"), "dns", 400),
    (lambda: V1Problem.caa("m"), "caa", 403),
    (lambda: V1Problem.bad_public_key("m"), "badPublicKey", 400),
    (lambda: V1Problem.not_found("m"), "malformed", 404),
    (lambda: V1Problem.method_not_allowed(["GET", "HEAD"], "m"), "malformed", 405),
    (lambda: V1Problem.conflict("m"), "malformed", 409),
    (lambda: V1Problem.upstream_unavailable("m"), "serverInternal", 500),
    (lambda: V1Problem.upstream_unavailable("m", retry_after=30), "serverInternal", 503),
]


@pytest.mark.parametrize("make, code, status", CONSTRUCTORS)
def test_constructor_type_status_and_body(make, code, status):
    """
    Every constructor gives its v1 type and status, and the body is the v1
    problem document with ``status`` repeated in it.
    """
    problem = make()
    assert isinstance(problem, Exception)
    assert problem.code == code
    assert problem.status == status
    assert problem.type == "urn:acme:error:" + code
    body = json.loads(problem.body())
    assert body == {"type": problem.type, "detail": problem.detail, "status": status}
    assert problem.to_json() == body


def test_constructors_default_to_no_headers():
    """
    Plain problems carry no extra headers, and each has its own dict (a
    mutable default shared between instances would leak headers).
    """
    first = V1Problem.malformed("a")
    second = V1Problem.malformed("b")
    assert first.headers == {}
    first.headers["X"] = "1"
    assert second.headers == {}


def test_rate_limited_retry_after_rounds_up():
    """
    ``Retry-After`` is whole seconds, rounded up so clients never come back
    early; without a value there is no header, as Boulder v1 sent none.
    """
    assert V1Problem.rate_limited("slow down", retry_after=2.1).headers == {"Retry-After": "3"}
    assert V1Problem.rate_limited("slow down").headers == {}


def test_method_not_allowed_has_allow_header():
    """
    HTTP requires ``Allow`` on a 405.
    """
    problem = V1Problem.method_not_allowed(["POST"])
    assert problem.headers == {"Allow": "POST"}
    assert problem.detail == "Method not allowed"


def test_conflict_carries_location():
    """
    The 409 for a re-registration must point at the existing registration.
    """
    problem = V1Problem.conflict("Registration key is already in use", location="https://gw/acme/reg/7")
    assert problem.headers == {"Location": "https://gw/acme/reg/7"}


def test_upstream_unavailable_details():
    """
    The detail says the upstream failed, and only a known wait turns the 500
    into a 503 with ``Retry-After``.
    """
    plain = V1Problem.upstream_unavailable("connection refused")
    assert "upstream CA failed" in plain.detail and "connection refused" in plain.detail
    assert plain.headers == {}
    later = V1Problem.upstream_unavailable("maintenance", retry_after=120)
    assert later.headers == {"Retry-After": "120"}


def test_problem_is_raisable_and_printable():
    """
    A problem is raised from deep in request handling and logged, so it must
    behave as an exception with a useful string.
    """
    with pytest.raises(V1Problem) as info:
        raise V1Problem.unauthorized("nope")
    assert "403" in str(info.value) and "nope" in str(info.value)


# -- from_upstream ------------------------------------------------------------

MAPPING_ROWS = [
    # (v2 code, upstream status, v1 code, v1 status)
    ("malformed", 400, "malformed", 400),
    ("malformed", 404, "malformed", 404),
    ("malformed", 405, "malformed", 405),
    ("malformed", 409, "malformed", 409),
    ("malformed", 415, "malformed", 415),
    ("unauthorized", 403, "unauthorized", 403),
    ("unauthorized", 401, "unauthorized", 403),
    ("accountDoesNotExist", 400, "unauthorized", 403),
    ("userActionRequired", 403, "unauthorized", 403),
    ("externalAccountRequired", 403, "unauthorized", 403),
    ("rateLimited", 429, "rateLimited", 429),
    ("rejectedIdentifier", 400, "rejectedIdentifier", 400),
    ("unsupportedIdentifier", 400, "malformed", 400),
    ("caa", 403, "caa", 403),
    ("dns", 400, "dns", 400),
    ("connection", 400, "connection", 400),
    ("tls", 400, "tls", 400),
    ("incorrectResponse", 403, "unauthorized", 403),
    ("badCSR", 400, "malformed", 400),
    ("badPublicKey", 400, "malformed", 400),
    ("badSignatureAlgorithm", 400, "malformed", 400),
    ("invalidContact", 400, "invalidEmail", 400),
    ("unsupportedContact", 400, "invalidEmail", 400),
    ("alreadyRevoked", 400, "malformed", 409),
    ("badRevocationReason", 400, "malformed", 400),
    ("orderNotReady", 403, "unauthorized", 403),
    ("serverInternal", 500, "serverInternal", 500),
    ("badNonce", 400, "serverInternal", 500),
    ("someFutureType", 400, "serverInternal", 500),
    ("about:blank", 404, "malformed", 404),
    ("about:blank", 400, "serverInternal", 500),
    ("about:blank", 502, "serverInternal", 500),
    ("malformed", 503, "serverInternal", 500),
]


@pytest.mark.parametrize("v2_code, status, v1_code, v1_status", MAPPING_ROWS)
def test_from_upstream_table(v2_code, status, v1_code, v1_status):
    """
    Each row of MAPPING §3.4 maps to its v1 type and status.
    """
    problem = from_upstream(upstream(v2_code, status))
    assert (problem.code, problem.status) == (v1_code, v1_status)
    assert problem.type.startswith("urn:acme:error:")


@pytest.mark.parametrize(
    "v2_code", ["malformed", "unauthorized", "rejectedIdentifier", "caa", "rateLimited", "dns"]
)
def test_from_upstream_keeps_detail(v2_code):
    """
    The upstream's explanation reaches the v1 client unchanged.
    """
    status = 429 if v2_code == "rateLimited" else 400
    problem = from_upstream(upstream(v2_code, status, detail="the real reason"))
    assert problem.detail == "the real reason"


def test_account_does_not_exist_uses_boulder_wording():
    """
    v1 clients saw exactly this for an unknown key.
    """
    problem = from_upstream(upstream("accountDoesNotExist", 400, detail="No account exists"))
    assert problem.detail == "No registration exists matching provided key"


def test_user_action_required_keeps_terms_link():
    """
    The terms-of-service link survives (re-rendered with a quoted rel), other
    links do not, and the detail says what v1 said.
    """
    link = '<https://ca/dir>;rel="index", <https://ca/terms.pdf>; rel=terms-of-service'
    problem = from_upstream(
        upstream("userActionRequired", 403, detail="agree to new terms", headers={"link": link})
    )
    assert problem.headers == {"Link": '<https://ca/terms.pdf>;rel="terms-of-service"'}
    assert problem.detail.startswith("Must agree to subscriber agreement")
    assert "agree to new terms" in problem.detail


def test_user_action_required_without_link():
    """
    No link upstream means no ``Link`` header, not a broken one.
    """
    problem = from_upstream(
        upstream("userActionRequired", 403, headers={"link": '<https://ca/dir>;rel="index"'})
    )
    assert problem.headers == {}


def test_rate_limited_keeps_retry_after():
    """
    The upstream's ``Retry-After`` is passed on.
    """
    problem = from_upstream(upstream("rateLimited", 429, retry_after=3600))
    assert problem.headers == {"Retry-After": "3600"}
    from_header = from_upstream(upstream("rateLimited", 429, headers={"retry-after": "60"}))
    assert from_header.headers == {"Retry-After": "60"}
    assert from_upstream(upstream("rateLimited", 429)).headers == {}


def test_already_revoked_detail():
    """
    Boulder v1's wording for a repeated revocation.
    """
    problem = from_upstream(upstream("alreadyRevoked", 400))
    assert problem.detail == "Certificate already revoked"


def test_bad_revocation_reason_fallback_detail():
    """
    Without an upstream detail, Boulder's own wording is used.
    """
    problem = from_upstream(upstream("badRevocationReason", 400, detail=""))
    assert problem.detail == "unsupported revocation reason code provided"


def test_compound_takes_first_subproblem_type_and_flattens():
    """
    A compound error becomes the first subproblem's v1 type at the top-level
    status, with every subproblem's identifier and detail in the detail.
    """
    error = upstream(
        "compound",
        400,
        detail="Error creating new order",
        subproblems=[
            Subproblem(V2 + "rejectedIdentifier", "blocked by policy", {"type": "dns", "value": "a.example"}),
            Subproblem(V2 + "caa", "CAA forbids", {"type": "dns", "value": "b.example"}),
        ],
    )
    problem = from_upstream(error)
    assert (problem.code, problem.status) == ("rejectedIdentifier", 400)
    assert problem.detail == (
        "Error creating new order: a.example: blocked by policy; b.example: CAA forbids"
    )


def test_compound_with_unmappable_or_no_subproblems_is_malformed():
    """
    A compound whose first subproblem has no v1 equivalent, or that has
    none, is ``malformed`` at the top-level status.
    """
    odd = upstream("compound", 403, subproblems=[Subproblem("urn:example:odd", "odd")])
    assert (from_upstream(odd).code, from_upstream(odd).status) == ("malformed", 403)
    empty = upstream("compound", 400)
    assert (from_upstream(empty).code, from_upstream(empty).status) == ("malformed", 400)


def test_compound_special_first_subproblem():
    """
    A first subproblem that the table maps specially keeps its v1 type.
    """
    error = upstream("compound", 429, subproblems=[Subproblem(V2 + "rateLimited", "too many")])
    assert from_upstream(error).code == "rateLimited"


def test_subproblems_flattened_for_simple_types():
    """
    Subproblems are flattened whatever the top-level type; one without an
    identifier contributes just its detail.
    """
    error = upstream(
        "rejectedIdentifier",
        400,
        detail="Cannot issue",
        subproblems=[Subproblem(V2 + "rejectedIdentifier", "no", None)],
    )
    assert from_upstream(error).detail == "Cannot issue: no"


def test_server_errors_say_upstream_failed():
    """
    A 5xx or an unknown type tells the client the upstream CA failed.
    """
    problem = from_upstream(upstream("serverInternal", 500, detail="db down"))
    assert "upstream CA failed" in problem.detail and "db down" in problem.detail


def test_bare_404_without_detail():
    """
    Pebble's bare 404 still gets a usable detail.
    """
    problem = from_upstream(UpstreamProblem("about:blank", "", 404))
    assert (problem.code, problem.status) == ("malformed", 404)
    assert problem.detail


def test_upstream_unavailable_maps_to_server_internal():
    """
    An unreachable upstream is a 500, or a 503 with ``Retry-After`` when it
    said when to come back.
    """
    down = problem_for(UpstreamFailed.of(UpstreamUnavailable("connection refused")))
    assert (down.code, down.status, down.headers) == ("serverInternal", 500, {})
    busy = problem_for(UpstreamFailed.of(UpstreamUnavailable("maintenance", retry_after=10)))
    assert (busy.status, busy.headers) == (503, {"Retry-After": "10"})


ALL_V2_CODES = sorted({row[0] for row in MAPPING_ROWS} | {"compound"})


@pytest.mark.parametrize("v2_code", ALL_V2_CODES)
@pytest.mark.parametrize("status", [400, 401, 403, 404, 405, 409, 415, 429, 500, 503])
def test_never_a_v2_type(v2_code, status):
    """
    Whatever the upstream sends, the v1 client never sees a v2 type, and the
    status is an error status.
    """
    error = upstream(v2_code, status, subproblems=[Subproblem(V2 + v2_code, "x")])
    problem = from_upstream(error)
    assert not problem.type.startswith("urn:ietf")
    assert problem.type.startswith("urn:acme:error:")
    assert 400 <= problem.status < 600
    assert not json.loads(problem.body())["type"].startswith("urn:ietf")
