"""
The upstream CA's objects as the gateway reads them
(`gateway.upstream.messages`), member by member: the directory (its
optional URLs, ``meta``, an ACME v1 directory given by mistake), challenges
and their errors, authorizations (wildcards), orders (profile, replaces,
malformed members), ARI windows, certificate chains, ``Retry-After`` in both
forms and ``Link`` headers; every shape the gateway cannot use is refused
with an `UpstreamProtocolError` whose words reach the operator and the v1
client.
"""

from __future__ import annotations

import email.utils

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from gateway.keys.jose import AccountKey
from gateway.translate.errors import UpstreamFailed
from gateway.upstream.errors import UpstreamProblem, UpstreamProtocolError
from gateway.upstream.messages import (
    Authorization,
    CertificateChain,
    Challenge,
    Directory,
    Order,
    RenewalInfo,
    UpstreamAccount,
    order_is_ready,
    parse_links,
    parse_retry_after,
    split_pem_chain,
)
from gateway.v1.problems import problem_for
from tests.support.certs import make_chain_pem

V2 = "urn:ietf:params:acme:error:"
NOW = 1_800_000_000.0


def refusal(call, *args) -> str:
    """The words of the protocol error ``call(*args)`` raises."""
    with pytest.raises(UpstreamProtocolError) as raised:
        call(*args)
    return str(raised.value)


# -- Retry-After ----------------------------------------------------------------

@pytest.mark.parametrize("value, seconds", [
    ("17", 17.0),
    (" 17 ", 17.0),
    ("0", 0.0),
    ("007", 7.0),
    (email.utils.formatdate(NOW + 90, usegmt=True), 90.0),
    (" " + email.utils.formatdate(NOW + 90, usegmt=True) + " ", 90.0),
    (email.utils.formatdate(NOW - 90, usegmt=True), 0.0),
    (email.utils.formatdate(NOW, usegmt=True), 0.0),
])
def test_retry_after_in_seconds_or_as_a_date(value, seconds):
    result = parse_retry_after(value, NOW)
    assert result == seconds and isinstance(result, float)


@pytest.mark.parametrize("value", [None, "", "soon", "-5", "1.5", "+5", "Mon, 32 Foo 2026", "\u00b2", "\u0663"])
def test_retry_after_that_is_neither_is_none(value):
    assert parse_retry_after(value, NOW) is None


# -- Link ---------------------------------------------------------------------

def test_links_by_relation():
    """
    One value with several entries, several values, quoted and bare
    ``rel``, ``rel`` among other parameters, several relations in one
    ``rel``, upper-case names, and entries without ``rel``.
    """
    links = parse_links([
        '<https://a/1>;rel="alternate", <https://a/2>; rel=alternate',
        '<https://a/dir>; title="x"; REL="up INDEX"',
        '<https://a/none>; title=y',
        '<https://a/3> ;  Rel = Alternate ,<https://a/4>;rel="alternate"',
    ])
    assert links == {
        "alternate": ["https://a/1", "https://a/2", "https://a/3", "https://a/4"],
        "index": ["https://a/dir"],
        "up": ["https://a/dir"],
    }


def test_links_stop_at_garbage_keeping_what_came_before():
    assert parse_links(['<https://a/1>;rel=next, garbage <https://a/2>;rel=next']) == {
        "next": ["https://a/1"]}
    assert parse_links(['<https://a/1>;rel=next, X <https://a/2>;rel=next']) == {
        "next": ["https://a/1"]}


def test_a_relation_that_is_a_uri_with_a_query():
    """
    An extension relation type is a URI, and may hold ``=``: only the
    first ``=`` separates the parameter's name from its value.
    """
    assert parse_links(['<https://a/1>; rel="https://ca.test/rels?kind=Chain"']) == {
        "https://ca.test/rels?kind=chain": ["https://a/1"]}
    assert parse_links(["no link here"]) == {}
    assert parse_links([]) == {}


def test_a_link_target_is_kept_as_spelled():
    assert parse_links(['<https://ca.test/cert/1/1?x=a,b;c>;rel="alternate"']) == {
        "alternate": ["https://ca.test/cert/1/1?x=a,b;c"]}


# -- certificate chains -------------------------------------------------------

def test_a_chain_splits_into_der_leaf_first():
    pem, ders = make_chain_pem()
    assert split_pem_chain(pem) == ders
    chain = CertificateChain("https://ca.test/cert/1", split_pem_chain(pem))
    assert (chain.leaf, chain.issuers, chain.alternates) == (ders[0], ders[1:], ())


def test_a_chain_that_does_not_parse_reaches_the_client_as_such():
    words = refusal(split_pem_chain, b"hello")
    assert words.startswith("certificate chain does not parse: ")
    problem = problem_for(UpstreamFailed.of(UpstreamProtocolError(words)))
    assert problem.detail.startswith("The upstream CA failed: certificate chain does not parse: ")
    pem, _ = make_chain_pem()
    broken = pem.replace(b"MII", b"MI!", 1)
    assert refusal(split_pem_chain, broken).startswith("certificate chain does not parse: ")


# -- directory ----------------------------------------------------------------

FULL_DIRECTORY = {
    "newNonce": "https://ca.test/nonce", "newAccount": "https://ca.test/acct",
    "newOrder": "https://ca.test/order", "revokeCert": "https://ca.test/revoke",
    "keyChange": "https://ca.test/key", "newAuthz": "https://ca.test/authz",
    "renewalInfo": "https://ca.test/ari",
    "meta": {"termsOfService": "https://ca.test/tos", "externalAccountRequired": True,
             "profiles": {"classic": "the default", "shortlived": "6 days"}},
}


def test_a_full_directory():
    directory = Directory.from_json(FULL_DIRECTORY)
    assert directory == Directory(
        new_nonce="https://ca.test/nonce", new_account="https://ca.test/acct",
        new_order="https://ca.test/order", revoke_cert="https://ca.test/revoke",
        key_change="https://ca.test/key", new_authz="https://ca.test/authz",
        meta=FULL_DIRECTORY["meta"], renewal_info="https://ca.test/ari")
    assert directory.terms_of_service == "https://ca.test/tos"
    assert directory.external_account_required is True
    assert directory.profiles == {"classic": "the default", "shortlived": "6 days"}


def test_a_minimal_directory_has_no_optional_urls_or_meta():
    directory = Directory.from_json({"newNonce": "n", "newAccount": "a", "newOrder": "o"})
    assert (directory.revoke_cert, directory.key_change, directory.new_authz,
            directory.renewal_info, directory.meta) == (None, None, None, None, {})
    assert directory.terms_of_service is None
    assert directory.profiles == {}
    assert directory.external_account_required is False


def test_ill_typed_optional_members_are_absent():
    directory = Directory.from_json({
        "newNonce": "n", "newAccount": "a", "newOrder": "o", "revokeCert": 1, "keyChange": None,
        "newAuthz": ["x"], "renewalInfo": {}, "meta": ["tos"]})
    assert (directory.revoke_cert, directory.key_change, directory.new_authz,
            directory.renewal_info, directory.meta) == (None, None, None, None, {})


@pytest.mark.parametrize("meta, tos, profiles, eab", [
    ({"termsOfService": 5, "profiles": ["a"], "externalAccountRequired": "true"}, None, {}, False),
    ({"profiles": {"a": 1, "b": None}}, None, {"a": "1", "b": "None"}, False),
    ({"externalAccountRequired": 1}, None, {}, False),
    ({"externalAccountRequired": False}, None, {}, False),
])
def test_ill_typed_meta(meta, tos, profiles, eab):
    """
    Only a string is terms of service, only an object lists profiles (its
    descriptions read as text), only ``true`` requires a binding.
    """
    directory = Directory.from_json({"newNonce": "n", "newAccount": "a", "newOrder": "o", "meta": meta})
    assert (directory.terms_of_service, directory.profiles, directory.external_account_required) == (
        tos, profiles, eab)


@pytest.mark.parametrize("document, words", [
    (None, "upstream directory is not a JSON object"),
    ([], "upstream directory is not a JSON object"),
    ({}, "upstream directory has no valid 'newNonce'"),
    ({"newNonce": 1, "newAccount": "a", "newOrder": "o"}, "upstream directory has no valid 'newNonce'"),
    ({"newNonce": "n", "newOrder": "o"}, "upstream directory has no valid 'newAccount'"),
    ({"newNonce": "n", "newAccount": "a"}, "upstream directory has no valid 'newOrder'"),
    ({"new-reg": "r"}, "upstream directory is an ACME v1 directory (new-reg, no newNonce): give "
                       "the CA's ACME v2 directory URL"),
])
def test_a_directory_the_gateway_cannot_use(document, words):
    assert refusal(Directory.from_json, document) == words


def test_a_directory_with_both_v1_and_v2_urls_is_a_v2_directory():
    document = dict(FULL_DIRECTORY, **{"new-reg": "https://ca.test/acme/new-reg"})
    assert Directory.from_json(document).new_account == "https://ca.test/acct"


# -- challenges and authorizations --------------------------------------------

CHALLENGE = {"url": "https://ca.test/chall/1", "type": "http-01", "status": "pending", "token": "tok"}


def test_a_challenge_with_every_member():
    challenge = Challenge.from_json(dict(
        CHALLENGE, status="invalid", validated="2026-12-03T06:00:00Z",
        validationRecord=[{"url": "http://a.test/"}],
        error={"type": V2 + "unauthorized", "detail": "wrong token", "status": 401}))
    assert (challenge.url, challenge.type, challenge.status, challenge.token) == (
        "https://ca.test/chall/1", "http-01", "invalid", "tok")
    assert challenge.validated == "2026-12-03T06:00:00Z"
    assert challenge.validation_record == [{"url": "http://a.test/"}]
    assert (challenge.error.type, challenge.error.detail, challenge.error.status) == (
        V2 + "unauthorized", "wrong token", 401)


def test_a_challenge_error_without_a_status_is_a_403():
    challenge = Challenge.from_json(dict(CHALLENGE, error={"type": V2 + "dns", "detail": "NXDOMAIN"}))
    assert challenge.error.status == 403
    assert isinstance(challenge.error, UpstreamProblem)


def test_a_challenge_without_optional_members():
    challenge = Challenge.from_json(dict(CHALLENGE, token=5, error="bad", validated=1,
                                         validationRecord={}))
    assert (challenge.token, challenge.error, challenge.validated, challenge.validation_record) == (
        None, None, None, None)
    bare = Challenge.from_json({"url": "u", "type": "dns-01", "status": "valid"})
    assert (bare.token, bare.error, bare.validated, bare.validation_record) == (None, None, None, None)


def test_challenges_differing_only_in_their_error_are_equal():
    """
    A challenge's error is not part of its identity (a CA re-words it).
    """
    first = Challenge.from_json(dict(CHALLENGE, error={"detail": "one"}))
    second = Challenge.from_json(dict(CHALLENGE, error={"detail": "two"}))
    assert first == second


@pytest.mark.parametrize("document, words", [
    (None, "upstream challenge is not a JSON object"),
    ({"type": "http-01", "status": "pending"}, "upstream challenge has no valid 'url'"),
    ({"url": "u", "status": "pending"}, "upstream challenge has no valid 'type'"),
    ({"url": "u", "type": "http-01"}, "upstream challenge has no valid 'status'"),
])
def test_a_challenge_the_gateway_cannot_use(document, words):
    assert refusal(Challenge.from_json, document) == words


def authorization_document(**changes):
    document = {"identifier": {"type": "dns", "value": "example.test"}, "status": "pending",
                "expires": "2026-12-10T00:00:00Z",
                "challenges": [dict(CHALLENGE, type="dns-01", url="https://ca.test/chall/2"), CHALLENGE]}
    document.update(changes)
    return document


def test_an_authorization_with_every_member():
    authorization = Authorization.from_json("https://ca.test/authz/1", authorization_document())
    assert (authorization.url, authorization.identifier_type, authorization.identifier,
            authorization.status, authorization.expires, authorization.wildcard) == (
        "https://ca.test/authz/1", "dns", "example.test", "pending", "2026-12-10T00:00:00Z", False)
    assert authorization.name == "example.test"
    assert [c.type for c in authorization.challenges] == ["dns-01", "http-01"]
    assert authorization.challenge("http-01").url == "https://ca.test/chall/1"
    assert authorization.challenge("dns-01").url == "https://ca.test/chall/2"
    assert authorization.challenge("tls-alpn-01") is None


def test_a_wildcard_authorization_names_the_wildcard():
    authorization = Authorization.from_json("u", authorization_document(wildcard=True))
    assert (authorization.identifier, authorization.wildcard, authorization.name) == (
        "example.test", True, "*.example.test")
    for odd in ("true", 1, None):
        assert Authorization.from_json("u", authorization_document(wildcard=odd)).wildcard is False


def test_an_authorization_without_a_string_expiry_has_none():
    assert Authorization.from_json("u", authorization_document(expires=5)).expires is None


@pytest.mark.parametrize("changes, words", [
    ({"identifier": "example.test"}, "upstream authorization has no valid 'identifier'"),
    ({"identifier": {"type": "dns"}}, "upstream authorization has a malformed identifier"),
    ({"identifier": {"value": "a.test"}}, "upstream authorization has a malformed identifier"),
    ({"identifier": {"type": 1, "value": "a.test"}}, "upstream authorization has a malformed identifier"),
    ({"challenges": {}}, "upstream authorization has no valid 'challenges'"),
    ({"status": None}, "upstream authorization has no valid 'status'"),
    ({"challenges": [{"url": "u"}]}, "upstream challenge has no valid 'type'"),
])
def test_an_authorization_the_gateway_cannot_use(changes, words):
    assert refusal(Authorization.from_json, "u", authorization_document(**changes)) == words


def test_an_authorization_that_is_not_an_object():
    assert refusal(Authorization.from_json, "u", []) == "upstream authorization is not a JSON object"


# -- orders -------------------------------------------------------------------

def order_document(**changes):
    document = {"status": "pending", "expires": "2026-12-10T00:00:00Z",
                "identifiers": [{"type": "dns", "value": "b.test"}, {"type": "dns", "value": "a.test"}],
                "authorizations": ["https://ca.test/authz/b", "https://ca.test/authz/a"],
                "finalize": "https://ca.test/finalize/1"}
    document.update(changes)
    return document


def test_an_order_with_every_member():
    order = Order.from_json("https://ca.test/order/1", order_document(
        status="valid", certificate="https://ca.test/cert/1", profile="shortlived", replaces="aYhba.AQ",
        error={"type": V2 + "caa", "detail": "CAA"}))
    assert (order.url, order.status, order.finalize, order.certificate, order.expires) == (
        "https://ca.test/order/1", "valid", "https://ca.test/finalize/1", "https://ca.test/cert/1",
        "2026-12-10T00:00:00Z")
    # names sorted; authorizations in the CA's order
    assert order.identifiers == ("a.test", "b.test")
    assert order.authorizations == ("https://ca.test/authz/b", "https://ca.test/authz/a")
    assert (order.profile, order.replaces) == ("shortlived", "aYhba.AQ")
    assert (order.error.type, order.error.status) == (V2 + "caa", 403)


def test_an_order_error_keeps_its_status():
    order = Order.from_json("u", order_document(error={"type": V2 + "serverInternal", "status": 500}))
    assert order.error.status == 500


def test_an_order_without_optional_members():
    order = Order.from_json("u", order_document(certificate=1, expires=None, error="x", profile="",
                                                replaces=""))
    assert (order.certificate, order.expires, order.error, order.profile, order.replaces) == (
        None, None, None, None, None)
    order = Order.from_json("u", order_document(profile=3, replaces=["x"], expires=1_800_000_000))
    assert (order.profile, order.replaces, order.expires) == (None, None, None)


def test_orders_differing_only_in_their_error_are_equal():
    assert Order.from_json("u", order_document(error={"detail": "a"})) == Order.from_json(
        "u", order_document(error={"detail": "b"}))


@pytest.mark.parametrize("changes, words", [
    ({"identifiers": "a.test"}, "upstream order has no valid 'identifiers'"),
    ({"identifiers": ["a.test"]}, "upstream order has a malformed identifier"),
    ({"identifiers": [{"type": "dns", "value": 1}]}, "upstream order has a malformed identifier"),
    ({"identifiers": [{"type": "dns"}]}, "upstream order has a malformed identifier"),
    ({"authorizations": None}, "upstream order has no valid 'authorizations'"),
    ({"authorizations": ["https://ca.test/authz/a", 3]}, "upstream order has malformed authorizations"),
    ({"status": 1}, "upstream order has no valid 'status'"),
    ({"finalize": None}, "upstream order has no valid 'finalize'"),
])
def test_an_order_the_gateway_cannot_use(changes, words):
    assert refusal(Order.from_json, "u", order_document(**changes)) == words


def test_an_order_that_is_not_an_object():
    assert refusal(Order.from_json, "u", "order") == "upstream order is not a JSON object"


# -- readiness ----------------------------------------------------------------

def authorization(status):
    return Authorization.from_json("u", authorization_document(status=status))


@pytest.mark.parametrize("order_status, statuses, ready", [
    ("ready", [], True),
    ("ready", ["pending"], True),
    ("pending", ["valid", "valid"], True),
    ("pending", ["valid", "pending"], False),
    ("pending", ["invalid"], False),
    ("pending", [], False),
    ("processing", ["valid"], False),
    ("valid", ["valid"], False),
    ("invalid", ["valid"], False),
])
def test_an_order_is_ready(order_status, statuses, ready):
    order = Order.from_json("u", order_document(status=order_status))
    assert order_is_ready(order, [authorization(s) for s in statuses]) is ready


# -- ARI ----------------------------------------------------------------------

def test_a_renewal_window():
    info = RenewalInfo.from_json({
        "suggestedWindow": {"start": "2026-12-20T00:00:00Z", "end": "2026-12-22T12:30:00.5+01:00"},
        "explanationURL": "https://ca.test/why"}, 3600.0)
    assert info == RenewalInfo("2026-12-20T00:00:00Z", "2026-12-22T12:30:00.5+01:00",
                               "https://ca.test/why", 3600.0)
    bare = RenewalInfo.from_json({"suggestedWindow": {"start": "2026-12-20t00:00:00z",
                                                      "end": "2026-12-21T00:00:00-05:00"},
                                  "explanationURL": 5})
    assert (bare.explanation_url, bare.retry_after) == (None, None)


@pytest.mark.parametrize("document, words", [
    ([], "renewalInfo is not a JSON object"),
    ({}, "renewalInfo has no valid 'suggestedWindow'"),
    ({"suggestedWindow": {"end": "2026-12-20T00:00:00Z"}}, "renewalInfo suggestedWindow has no valid 'start'"),
    ({"suggestedWindow": {"start": "2026-12-20T00:00:00Z"}}, "renewalInfo suggestedWindow has no valid 'end'"),
    ({"suggestedWindow": {"start": "2026-12-20", "end": "2026-12-21T00:00:00Z"}},
     "renewalInfo suggestedWindow is not two RFC 3339 timestamps"),
    ({"suggestedWindow": {"start": "2026-12-20T00:00:00Z", "end": "2026-12-21T00:00:00"}},
     "renewalInfo suggestedWindow is not two RFC 3339 timestamps"),
    ({"suggestedWindow": {"start": "2026-12-20T00:00:00Z", "end": "2026-12-21T00:00:00Z trailing"}},
     "renewalInfo suggestedWindow is not two RFC 3339 timestamps"),
    ({"suggestedWindow": {"start": "x2026-12-20T00:00:00Z", "end": "2026-12-21T00:00:00Z"}},
     "renewalInfo suggestedWindow is not two RFC 3339 timestamps"),
])
def test_a_renewal_window_the_gateway_cannot_use(document, words):
    assert refusal(RenewalInfo.from_json, document) == words


# -- accounts -----------------------------------------------------------------

def test_an_upstream_account_is_named_by_its_keys_thumbprint():
    key = AccountKey.from_private_key(ec.generate_private_key(ec.SECP256R1()))
    account = UpstreamAccount(key=key, url="https://ca.test/acct/1")
    assert account.thumbprint == key.thumbprint
    assert (account.status, account.contact, account.body) == ("valid", (), {})


def test_secrets_and_certificates_stay_out_of_logs():
    """
    The ``repr`` a log line or a traceback shows holds no HMAC key, no
    account key or document, and no certificate bytes.
    """
    from gateway.upstream.messages import ExternalAccountKey

    binding = ExternalAccountKey("kid-1", b"super-secret-hmac")
    assert "super-secret" not in repr(binding) and "kid-1" in repr(binding)
    pem, ders = make_chain_pem()
    chain = CertificateChain("https://ca.test/cert/1", ders)
    assert repr(chain) == "CertificateChain(url='https://ca.test/cert/1', alternates=())"
    key = AccountKey.from_private_key(ec.generate_private_key(ec.SECP256R1()))
    account = UpstreamAccount(key=key, url="https://ca.test/acct/1", body={"secret": "x"})
    assert repr(account) == ("UpstreamAccount(url='https://ca.test/acct/1', status=<Status.VALID: "
                             "'valid'>, contact=())")


def test_accounts_are_equal_whatever_document_the_ca_sent():
    key = AccountKey.from_private_key(ec.generate_private_key(ec.SECP256R1()))
    assert UpstreamAccount(key=key, url="u", body={"a": 1}) == UpstreamAccount(key=key, url="u")
