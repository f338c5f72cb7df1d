"""
What a v1 client is answered for each refusal the layers below the face
raise (`gateway.v1.problems.problem_for`), and the documents of the v1
problem constructors no other test reads back: the status, the
``urn:acme:error:`` type, the detail the client shows its user and the
headers (``Retry-After``, ``Location``), as the v1 face renders them.
"""

from __future__ import annotations

import json

import pytest

from gateway.translate.errors import (
    AccountMissing,
    AlreadyRevoked,
    Conflict,
    CSRRejected,
    ExternalAccountRequired,
    IdentifierRejected,
    InternalFailure,
    InvalidContact,
    Malformed,
    NotFound,
    RateLimited,
    Refused,
    Unauthorized,
    UpstreamRefused,
    ValidationFailed,
)
from gateway.v1.face import problem_response
from gateway.v1.problems import PROBLEM_CONTENT_TYPE, V1Problem, problem_for

V2 = "urn:ietf:params:acme:error:"


def answer(problem: V1Problem):
    """
    The v1 face's answer for ``problem``: status, problem document, headers.
    """
    response = problem_response(problem)
    assert response.content_type == PROBLEM_CONTENT_TYPE
    return response.status, json.loads(response.body), dict(response.headers)


def answer_for(error: BaseException):
    problem = problem_for(error)
    assert problem is not None
    return answer(problem)


def document(code: str, detail: str, status: int) -> dict:
    return {"type": "urn:acme:error:" + code, "detail": detail, "status": status}


# -- domain refusals ---------------------------------------------------------------

RENAMES = [
    (Malformed("bad field"), "malformed", 400),
    (IdentifierRejected("Policy forbids issuing for name"), "malformed", 400),
    (CSRRejected("Error unmarshaling certificate request"), "malformed", 400),
    (NotFound("No such authorization"), "malformed", 404),
    (Unauthorized("No registration exists matching provided key"), "unauthorized", 403),
    (ExternalAccountRequired("the CA needs an external account binding"), "unauthorized", 403),
    (AccountMissing("No account for this key"), "unauthorized", 403),
    (InvalidContact("contact method \"tel\" is not supported"), "invalidEmail", 400),
    (InternalFailure("could not provision the responder"), "serverInternal", 500),
]


@pytest.mark.parametrize("error, code, status", RENAMES, ids=lambda v: type(v).__name__)
def test_each_refusal_keeps_its_words(error, code, status):
    """
    A refusal becomes the v1 type Boulder used for it, with its detail as
    the client reads it, and no extra headers.
    """
    assert answer_for(error) == (status, document(code, error.detail, status), {})


def test_rate_limited_keeps_detail_and_retry_after():
    """
    The budget's refusal tells the client why and, rounded up, when to
    come back.
    """
    error = RateLimited("Too many pending authorizations", retry_after=59.2)
    assert answer_for(error) == (
        429, document("rateLimited", "Too many pending authorizations", 429), {"Retry-After": "60"})


def test_rate_limited_without_a_wait_has_no_retry_after():
    error = RateLimited("Too many certificates already issued")
    assert answer_for(error) == (
        429, document("rateLimited", "Too many certificates already issued", 429), {})


def test_conflict_points_at_what_exists():
    """
    A re-registration's 409 carries the existing registration's
    ``Location`` (clients fetch it from there).
    """
    error = Conflict("Registration key is already in use", location="https://gw/acme/reg/7")
    assert answer_for(error) == (
        409, document("malformed", "Registration key is already in use", 409),
        {"Location": "https://gw/acme/reg/7"})


def test_already_revoked_is_a_409_without_location():
    assert answer_for(AlreadyRevoked("Certificate already revoked")) == (
        409, document("malformed", "Certificate already revoked", 409), {})


def test_other_refusals_are_server_internal_with_their_detail():
    """
    A refusal of a kind the table does not name is still the gateway's
    own (500), and the client reads why.
    """
    assert answer_for(Refused("the gateway is shutting down")) == (
        500, document("serverInternal", "the gateway is shutting down", 500), {})


def test_a_bug_is_left_to_the_face():
    """
    Anything else is a bug: the face logs it and answers on its own.
    """
    assert problem_for(KeyError("x")) is None


def test_a_v1_problem_is_answered_as_it_is():
    problem = V1Problem.bad_nonce("JWS has an invalid anti-replay nonce")
    assert problem_for(problem) is problem


# -- revalidation ------------------------------------------------------------------


def test_revalidation_without_the_cas_reason_is_unauthorized():
    """
    The gateway answered a challenge itself and the authorization ended
    without an error: 403 ``unauthorized``, naming the name and challenge.
    """
    error = ValidationFailed("a.example", "http-01", "invalid")
    assert answer_for(error) == (
        403,
        document("unauthorized", "Revalidation of a.example by http-01 failed: the authorization is invalid",
                 403),
        {})


def test_revalidation_with_the_cas_reason_takes_its_v1_type():
    """
    The CA's reason decides the v1 type and status (a v1 ``connection``
    error, as Boulder's VA reported it), and the detail says which name
    and challenge failed, then the CA's words.
    """
    reason = UpstreamRefused(V2 + "connection", "127.0.0.1: Connection refused", 400)
    error = ValidationFailed("b.example", "dns-01", "invalid", reason)
    assert answer_for(error) == (
        400,
        document("connection",
                 "Revalidation of b.example by dns-01 failed: 127.0.0.1: Connection refused", 400),
        {})


def test_revalidation_keeps_the_reasons_status_and_headers():
    """
    A CA that rate-limited the validation: the 429 and its
    ``Retry-After`` reach the client with the revalidation's words.
    """
    reason = UpstreamRefused(V2 + "rateLimited", "too many failed validations", 429, retry_after=30)
    error = ValidationFailed("c.example", "http-01", "invalid", reason)
    assert answer_for(error) == (
        429,
        document("rateLimited", "Revalidation of c.example by http-01 failed: too many failed validations",
                 429),
        {"Retry-After": "30"})


def test_revalidation_never_shows_a_v2_type():
    reason = UpstreamRefused(V2 + "incorrectResponse", "key authorization mismatch", 403)
    status, body, _ = answer_for(ValidationFailed("d.example", "http-01", "invalid", reason))
    assert (status, body["type"]) == (403, "urn:acme:error:unauthorized")


# -- the constructors' documents -----------------------------------------------------

CONSTRUCTORS = [
    (V1Problem.bad_nonce, "badNonce", 400),
    (V1Problem.invalid_email, "invalidEmail", 400),
    (V1Problem.rejected_identifier, "rejectedIdentifier", 400),
    (V1Problem.connection, "connection", 400),
    (V1Problem.unknown_host, "unknownHost", 400),
    (V1Problem.tls, "tls", 400),
    (V1Problem.dns, "dns", 400),
    (V1Problem.caa, "caa", 403),
    (V1Problem.bad_public_key, "badPublicKey", 400),
]


@pytest.mark.parametrize("make, code, status", CONSTRUCTORS, ids=lambda v: getattr(v, "__name__", v))
def test_constructor_document_carries_the_detail(make, code, status):
    """
    Each constructor's document says what went wrong in the words given.
    """
    detail = f"{code} problem for a.example"
    assert answer(make(detail)) == (status, document(code, detail, status), {})


@pytest.mark.parametrize("seconds, header", [(0, "0"), (-5, "0"), (0.2, "1"), (1, "1")])
def test_retry_after_is_never_negative_nor_later_than_needed(seconds, header):
    """
    A wait already over (the CA's date in the past) is ``Retry-After: 0``:
    come back now, not in a second; any fraction rounds up.
    """
    assert answer(V1Problem.rate_limited("slow down", retry_after=seconds))[2] == {"Retry-After": header}
    assert answer(V1Problem.upstream_unavailable("busy", retry_after=seconds))[2] == {
        "Retry-After": header}
