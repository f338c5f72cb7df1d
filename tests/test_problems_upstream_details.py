"""
What a v1 client is answered when the CA refused (MAPPING §3.4), word for
word: the CA's problem document (`UpstreamRefused`, as a flow raises it)
through `gateway.v1.problems.problem_for` and the v1 face's rendering.
The edges of the status range, types outside the ACME namespace, the
details built of Boulder's words and the CA's, subproblems without a
name or a detail, the CA's ``Retry-After`` and the terms-of-service ``Link``.
"""

from __future__ import annotations

import json

import pytest

from gateway.translate.errors import RefusedSubproblem, UpstreamRefused
from gateway.v1.face import problem_response
from gateway.v1.problems import problem_for
from tests.test_v1_face import FaceTestCase

V2 = "urn:ietf:params:acme:error:"


def answer_for(error: UpstreamRefused):
    """
    The v1 face's answer: status, problem document, headers.
    """
    response = problem_response(problem_for(error))
    return response.status, json.loads(response.body), dict(response.headers)


def refused(code: str, status: int, detail: str = "upstream says no", **kwargs) -> UpstreamRefused:
    error_type = code if ":" in code else V2 + code
    return UpstreamRefused(error_type, detail, status, **kwargs)


def document(code: str, detail: str, status: int) -> dict:
    return {"type": "urn:acme:error:" + code, "detail": detail, "status": status}


# -- the status range ----------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 501, 503])
def test_a_5xx_is_the_cas_failure_whatever_its_type(status):
    """
    A CA that fails with a type a client could act on (``malformed``) is
    still the CA's failure: 500 ``serverInternal``, never the CA's 5xx
    passed on as the client's mistake.
    """
    assert answer_for(refused("malformed", status, "database is locked")) == (
        500, document("serverInternal", f"The upstream CA failed: {status} malformed: database is locked",
                      500), {})


@pytest.mark.parametrize("status", [399, 302])
def test_a_status_below_400_is_the_cas_failure(status):
    assert answer_for(refused("malformed", status, "odd")) == (
        500, document("serverInternal", f"The upstream CA failed: {status} malformed: odd", 500), {})


def test_the_top_of_the_4xx_range_is_kept():
    assert answer_for(refused("malformed", 499, "odd")) == (499, document("malformed", "odd", 499), {})


def test_a_failure_without_detail_says_only_the_status_and_type():
    assert answer_for(refused("serverInternal", 500, "")) == (
        500, document("serverInternal", "The upstream CA failed: 500 serverInternal", 500), {})


# -- types outside the ACME namespace -----------------------------------------------------


def test_a_type_outside_the_acme_namespace_is_the_cas_failure():
    """
    A CA's own problem type means nothing to a v1 client: 500
    ``serverInternal`` naming it, never the type itself.
    """
    assert answer_for(refused("urn:example:ca:quota", 400, "quota")) == (
        500, document("serverInternal", "The upstream CA failed: 400 urn:example:ca:quota: quota", 500), {})


def test_a_bare_404_without_detail_says_not_found():
    """
    Pebble's bare 404 (``about:blank``, no detail) reads "Not found".
    """
    assert answer_for(refused("about:blank", 404, "")) == (404, document("malformed", "Not found", 404), {})


def test_a_bare_404_keeps_the_cas_detail():
    assert answer_for(refused("about:blank", 404, "no such order")) == (
        404, document("malformed", "no such order", 404), {})


# -- compound errors and subproblems ------------------------------------------------------


def test_a_compound_without_subproblems_keeps_status_and_detail():
    assert answer_for(refused("compound", 403, "several things went wrong")) == (
        403, document("malformed", "several things went wrong", 403), {})


def test_subproblems_without_a_top_level_detail_are_the_whole_detail():
    """
    No leading ``": "`` when the CA gave only the per-name reasons.
    """
    error = refused("compound", 400, "", subproblems=(
        RefusedSubproblem(V2 + "rejectedIdentifier", "blocked", {"type": "dns", "value": "a.example"}),
        RefusedSubproblem(V2 + "caa", "CAA forbids", {"type": "dns", "value": "b.example"}),
    ))
    assert answer_for(error) == (
        400, document("rejectedIdentifier", "a.example: blocked; b.example: CAA forbids", 400), {})


@pytest.mark.parametrize("identifier", [None, {"type": "dns"}, {"type": "dns", "value": ""},
                                        {"type": "ip", "value": 7}])
def test_a_subproblem_without_a_usable_name_gives_its_detail_alone(identifier):
    error = refused("rejectedIdentifier", 400, "Cannot issue", subproblems=(
        RefusedSubproblem(V2 + "rejectedIdentifier", "forbidden name", identifier),))
    assert answer_for(error)[1]["detail"] == "Cannot issue: forbidden name"


def test_a_subproblem_without_detail_gives_its_type():
    error = refused("compound", 403, "Error creating new order", subproblems=(
        RefusedSubproblem(V2 + "caa", "", {"type": "dns", "value": "a.example"}),))
    assert answer_for(error) == (403, document("caa", "Error creating new order: a.example: caa", 403), {})


# -- details in Boulder's words ---------------------------------------------------------


def test_user_action_required_with_the_cas_words():
    error = refused("userActionRequired", 403, "Terms of service have changed")
    assert answer_for(error)[1]["detail"] == (
        "Must agree to subscriber agreement before any further actions"
        " (upstream CA: Terms of service have changed)")


def test_user_action_required_without_detail():
    assert answer_for(refused("userActionRequired", 403, "")) == (
        403, document("unauthorized", "Must agree to subscriber agreement before any further actions", 403),
        {})


def test_order_not_ready_with_the_cas_words():
    """
    A finalize the CA is not ready for: Boulder v1's words for names
    without valid authorizations, then the CA's.
    """
    assert answer_for(refused("orderNotReady", 403, "Order's status (\"pending\") is not acceptable")) == (
        403,
        document("unauthorized", "authorizations for these names not found or expired"
                 " (upstream CA: Order's status (\"pending\") is not acceptable)", 403),
        {})


def test_order_not_ready_without_detail():
    assert answer_for(refused("orderNotReady", 403, "")) == (
        403, document("unauthorized", "authorizations for these names not found or expired", 403), {})


def test_a_bad_nonce_that_escaped_the_retries_is_the_gateways_failure():
    """
    The CA kept refusing the gateway's own nonce: nothing the client can
    fix, and the words say so (not the generic upstream failure).
    """
    assert answer_for(refused("badNonce", 400, "JWS has an invalid anti-replay nonce")) == (
        500,
        document("serverInternal", "The upstream CA failed: it kept rejecting the gateway's own nonce:"
                 " JWS has an invalid anti-replay nonce", 500),
        {})


def test_a_bad_revocation_reason_keeps_the_cas_words():
    assert answer_for(refused("badRevocationReason", 400, "reason 7 is not allowed")) == (
        400, document("malformed", "reason 7 is not allowed", 400), {})


# -- Retry-After ---------------------------------------------------------------------


@pytest.mark.parametrize("raw, header", [(" 60 ", {"Retry-After": "60"}), ("soon", {}),
                                         ("\u00b2", {}), ("", {})])
def test_rate_limited_reads_the_cas_retry_after_header(raw, header):
    """
    Without a parsed wait, the CA's header is read: ASCII digits only
    (``"²"`` is a digit to Python, but no number).
    """
    error = refused("rateLimited", 429, "slow down", headers={"retry-after": raw})
    assert answer_for(error) == (429, document("rateLimited", "slow down", 429), header)


def test_a_parsed_wait_wins_over_the_header():
    error = refused("rateLimited", 429, "slow down", retry_after=5, headers={"retry-after": "60"})
    assert answer_for(error)[2] == {"Retry-After": "5"}


class CARetryAfterTests(FaceTestCase):
    """
    A CA's ``Retry-After`` that is no number of seconds, through the
    upstream client and the v1 face.
    """

    def test_rate_limited_with_a_superscript_retry_after(self):
        """
        The client is told it was rate limited, in the CA's words, without a
        ``Retry-After`` (it was a 500 "the gateway failed" and a traceback).
        """
        self.register()
        self.ca.fail_next("/new-order", 429, {"type": "rateLimited", "detail": "too many new orders"},
                          {"Retry-After": "\u00b2"})
        reply = self.new_authz()
        self.assertProblem(reply, 429, "rateLimited", "too many new orders")
        self.assertIsNone(reply.header("retry-after"))


# -- the terms-of-service Link ------------------------------------------------------------


def test_terms_link_under_a_capitalised_header_name():
    """
    The ``Link`` of a problem whose headers kept HTTP's spelling reaches
    the client too.
    """
    error = refused("userActionRequired", 403, "", headers={
        "Link": '<https://ca/terms/v2>; rel="terms-of-service"'})
    assert answer_for(error)[2] == {"Link": '<https://ca/terms/v2>;rel="terms-of-service"'}


def test_terms_link_lower_case_name_wins():
    error = refused("userActionRequired", 403, "", headers={
        "link": '<https://ca/terms/new>;rel="terms-of-service"',
        "Link": '<https://ca/terms/old>;rel="terms-of-service"'})
    assert answer_for(error)[2] == {"Link": '<https://ca/terms/new>;rel="terms-of-service"'}


def test_terms_link_of_several_with_spaces_around_rel():
    error = refused("userActionRequired", 403, "", headers={
        "link": '<https://ca/dir>;rel="index", <https://ca/tos.pdf> ; rel = "terms-of-service"'})
    assert answer_for(error)[2] == {"Link": '<https://ca/tos.pdf>;rel="terms-of-service"'}
