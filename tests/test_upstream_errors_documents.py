"""
The upstream CA's error bodies, read as typed exceptions
(`gateway.upstream.errors`): every member of a problem document reaches the
exception, a body of the wrong shape is tolerated, and what the exceptions
say reaches the v1 client's problem document and the operator's log word
for word.
"""

from __future__ import annotations

import pickle

import pytest

from gateway.translate.errors import UpstreamFailed
from gateway.upstream.errors import (
    V2_ERROR_PREFIX,
    PollTimeout,
    Subproblem,
    UpstreamProblem,
    UpstreamProtocolError,
    UpstreamUnavailable,
)
from gateway.v1.problems import problem_for

V2 = "urn:ietf:params:acme:error:"


def test_the_v2_prefix_is_the_acme_namespace():
    """
    The prefix the short codes are cut from is RFC 8555's namespace.
    """
    assert V2_ERROR_PREFIX == V2


@pytest.mark.parametrize("error_type, code", [
    (V2 + "rejectedIdentifier", "rejectedIdentifier"),
    (V2 + "badNonce", "badNonce"),
    ("urn:example:odd", "urn:example:odd"),
    ("about:blank", "about:blank"),
    # the prefix elsewhere than at the start is no ACME code
    ("x" + V2 + "caa", "x" + V2 + "caa"),
])
def test_short_codes(error_type, code):
    """
    A problem's and a subproblem's code is the ACME name after the
    namespace, or the whole type outside it.
    """
    assert UpstreamProblem(error_type, "", 400).code == code
    assert Subproblem(error_type, "").code == code


def test_every_member_of_a_problem_reaches_the_exception():
    """
    Type, detail, status, subproblems, Retry-After, URL and headers are kept
    as given; the headers are a copy the caller's dict cannot change later.
    """
    headers = {"link": '<https://ca.test/tos>;rel="terms-of-service"'}
    sub = Subproblem(V2 + "caa", "CAA forbids", {"type": "dns", "value": "a.test"})
    problem = UpstreamProblem(V2 + "rateLimited", "too many", 429, [sub], 30.0,
                              "https://ca.test/new-order", headers)
    headers["link"] = "changed"
    assert (problem.type, problem.detail, problem.status) == (V2 + "rateLimited", "too many", 429)
    assert problem.subproblems == (sub,)
    assert problem.retry_after == 30.0
    assert problem.url == "https://ca.test/new-order"
    assert problem.headers == {"link": '<https://ca.test/tos>;rel="terms-of-service"'}
    assert problem.args == (V2 + "rateLimited", "too many", 429)


def test_a_problem_without_optional_members():
    """
    Without subproblems, Retry-After, URL or headers the problem has empty
    ones (not None), so readers need no checks.
    """
    problem = UpstreamProblem("about:blank", "", 404)
    assert problem.subproblems == ()
    assert problem.retry_after is None
    assert problem.url == ""
    assert problem.headers == {}


def test_a_problem_survives_pickling_with_its_arguments():
    """
    The exception's arguments are the type, detail and status, so it can be
    rebuilt from them (a Failure copied between threads, pickled logs).
    """
    problem = pickle.loads(pickle.dumps(UpstreamProblem(V2 + "malformed", "bad", 400)))
    assert (problem.type, problem.detail, problem.status) == (V2 + "malformed", "bad", 400)


def test_a_problem_reads_as_status_code_detail_and_subproblems():
    """
    ``str`` (what the start-up diagnosis and the logs print) is the status,
    the short code and the detail, then each subproblem's code and detail.
    """
    problem = UpstreamProblem(V2 + "compound", "several", 403, [
        Subproblem(V2 + "caa", "CAA forbids"), Subproblem("urn:example:odd", "odd one")])
    assert str(problem) == f"403 compound: several; caa: CAA forbids; urn:example:odd: odd one"
    assert str(UpstreamProblem(V2 + "badNonce", "stale", 400)) == "400 badNonce: stale"


def test_from_a_full_document():
    """
    A well-formed document: every member, subproblems with their
    identifiers, and the Retry-After, URL and headers the response gave.
    """
    problem = UpstreamProblem.from_document(
        {"type": V2 + "compound", "detail": "two names refused", "subproblems": [
            {"type": V2 + "rejectedIdentifier", "detail": "blocked",
             "identifier": {"type": "dns", "value": "a.test"}},
            {"type": V2 + "caa", "detail": "CAA", "identifier": "b.test"},
        ]},
        403, retry_after=12.0, url="https://ca.test/new-order", headers={"location": "x"},
    )
    assert (problem.type, problem.detail, problem.status) == (V2 + "compound", "two names refused", 403)
    assert (problem.retry_after, problem.url, problem.headers) == (12.0, "https://ca.test/new-order",
                                                                   {"location": "x"})
    assert problem.subproblems == (
        Subproblem(V2 + "rejectedIdentifier", "blocked", {"type": "dns", "value": "a.test"}),
        # an identifier that is not an object is dropped, the subproblem kept
        Subproblem(V2 + "caa", "CAA", None),
    )
    assert isinstance(problem, UpstreamProblem)


def test_from_a_document_of_a_subclass_builds_the_subclass():
    """
    ``from_document`` builds the class it is called on.
    """
    class Special(UpstreamProblem):
        pass

    assert type(Special.from_document({"type": V2 + "malformed"}, 400)) is Special


@pytest.mark.parametrize("document", [None, [], "text", 3, {}])
def test_a_body_that_is_no_document_is_about_blank(document):
    """
    A body that is not a JSON object, or an empty one, is a problem of
    type ``about:blank`` with no detail and no subproblems, the status kept.
    """
    problem = UpstreamProblem.from_document(document, 502)
    assert (problem.type, problem.detail, problem.status, problem.subproblems) == (
        "about:blank", "", 502, ())
    assert (problem.retry_after, problem.url, problem.headers) == (None, "", {})


@pytest.mark.parametrize("member, value", [
    ("type", 7), ("type", ""), ("type", None), ("type", ["x"]),
])
def test_an_ill_typed_type_is_about_blank(member, value):
    problem = UpstreamProblem.from_document({member: value, "detail": "kept"}, 400)
    assert (problem.type, problem.detail) == ("about:blank", "kept")


@pytest.mark.parametrize("value", [7, None, ["x"], {"a": 1}])
def test_an_ill_typed_detail_is_empty(value):
    problem = UpstreamProblem.from_document({"type": V2 + "malformed", "detail": value}, 400)
    assert (problem.type, problem.detail) == (V2 + "malformed", "")


def test_ill_formed_subproblems_are_skipped_or_mended():
    """
    Subproblems that are not objects are skipped; one without a type is
    ``about:blank``, one without a detail has an empty one; a
    ``subproblems`` that is not a list is ignored.
    """
    problem = UpstreamProblem.from_document({"type": V2 + "compound", "subproblems": [
        "text", 3, None, {}, {"type": "", "detail": None, "identifier": ["a.test"]},
        {"type": V2 + "caa", "detail": 5},
    ]}, 403)
    assert problem.subproblems == (
        Subproblem("about:blank", "", None),
        Subproblem("about:blank", "", None),
        Subproblem(V2 + "caa", "5", None),
    )
    for odd in ({"type": V2 + "caa"}, "caa", 3):
        assert UpstreamProblem.from_document({"type": V2 + "compound", "subproblems": odd},
                                             403).subproblems == ()


def test_an_unavailable_upstream_keeps_its_reason_retry_after_and_url():
    error = UpstreamUnavailable("cannot reach https://ca.test/dir: refused", 20.0, "https://ca.test/dir")
    assert str(error) == "cannot reach https://ca.test/dir: refused"
    assert (error.reason, error.retry_after, error.url) == (
        "cannot reach https://ca.test/dir: refused", 20.0, "https://ca.test/dir")
    assert error.args == ("cannot reach https://ca.test/dir: refused",)
    bare = UpstreamUnavailable("down")
    assert (bare.retry_after, bare.url) == (None, "")
    assert isinstance(UpstreamProtocolError("no Location"), UpstreamUnavailable)


def test_an_unavailable_upstream_reaches_the_client_with_its_retry_after():
    """
    What the client sees: a 503 serverInternal naming the reason, with the
    CA's Retry-After; without one, a 500.
    """
    problem = problem_for(UpstreamFailed.of(UpstreamUnavailable("upstream answered 503", 20.0)))
    assert (problem.code, problem.status, problem.detail) == (
        "serverInternal", 503, "The upstream CA failed: upstream answered 503")
    assert problem.headers.get("Retry-After") == "20"
    problem = problem_for(UpstreamFailed.of(UpstreamUnavailable("no answer")))
    assert (problem.status, problem.detail) == (500, "The upstream CA failed: no answer")


def test_a_poll_that_did_not_end_names_the_resource_and_its_status():
    """
    The client reads which resource stayed in which state.
    """
    error = PollTimeout("https://ca.test/authz/1", "pending")
    assert (error.url, error.last_status) == ("https://ca.test/authz/1", "pending")
    assert str(error) == "https://ca.test/authz/1 still 'pending' after polling"
    problem = problem_for(UpstreamFailed.of(error))
    assert problem.detail == "The upstream CA failed: https://ca.test/authz/1 still 'pending' after polling"
