"""
Property tests: every parser of the v1 face -- the JWS, the JSON payloads
of each endpoint, CSRs, identifiers and request URLs -- meets arbitrary
input with a 4xx v1 problem (or, for input that happens to be valid, an
answer), never with a 5xx or an exception the face had to catch.

`tests/test_v1_jws.py` fuzzes `gateway.v1.jws` on its own; here the same
kind of input goes through the whole face (routing, verification, payload
checks, the translation layer and the upstream `FakeCA`), and the pure
parsers are checked for totality.
"""

from __future__ import annotations

import json
from typing import Optional

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.translate.csr import parse_csr
from gateway.keys.jose import b64url
from gateway.translate.policy import DNSName, parse_dns_name, parse_v1_identifier
from gateway.translate.errors import Refused
from gateway.v1.problems import problem_for
from tests.security.harness import (
    KEY, NAME, OTHER, RSA_KEY, STRANGER, Harness, logged_failures, make_csr,
)
from tests.support.v1_client import Reply
from tests.support.v1_signing import sign_jws, to_body

SETTINGS = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)

_WORLD: Optional[Harness] = None


def world() -> Harness:
    """
    One gateway shared by the examples of this module: KEY registered with a
    pending authorization and a certificate, so that every endpoint has real
    ids to be fuzzed against.  (Examples may change it; every answer must
    still be free of 5xx.)
    """
    global _WORLD
    if _WORLD is None:
        harness = Harness.fresh()
        harness.register(KEY)
        certificate = harness.issue((NAME,), KEY)
        pending = harness.new_authz("pending.example.test", KEY)
        challenge = pending.json()["challenges"][0]
        harness.state = {
            "reg": harness.url("/acme/reg/1"),
            "authz": pending.header("location"),
            "challenge": challenge["uri"],
            "cert": certificate.header("location"),
            "cert_der": certificate.body,
            "issuer": certificate.links("up")[0],
        }
        _WORLD = harness
    return _WORLD


#: Every POST endpoint and the ``resource`` it expects.
ENDPOINTS = {
    "new-reg": "/acme/new-reg",
    "reg": "reg",
    "new-authz": "/acme/new-authz",
    "authz": "authz",
    "challenge": "challenge",
    "new-cert": "/acme/new-cert",
    "revoke-cert": "/acme/revoke-cert",
    "key-change": "/acme/key-change",
}


def url_of(harness: Harness, resource: str) -> str:
    path = ENDPOINTS[resource]
    return harness.state[path] if not path.startswith("/") else harness.url(path)


def no_5xx(reply: Optional[Reply], failures: list) -> None:
    """
    No 5xx, no caught exception, and every 4xx is a v1 problem document.
    """
    assert failures == [], failures
    if reply is None:
        return
    assert reply.status < 500, (reply.status, reply.body)
    if reply.status >= 400 and reply.body:
        assert reply.header("content-type") == "application/problem+json", reply.headers
        assert json.loads(reply.body)["type"].startswith("urn:acme:error:")


def send(harness: Harness, url: str, body: bytes) -> None:
    with logged_failures() as failures:
        reply = harness.post_body(url, body)
    no_5xx(reply, failures)


def signed(resource: str, payload, key=KEY) -> None:
    harness = world()
    with logged_failures() as failures:
        reply = harness.post(url_of(harness, resource), payload, key=key)
    no_5xx(reply, failures)


# -- JWS ----------------------------------------------------------------------------------

endpoint_names = st.sampled_from(sorted(ENDPOINTS))


@SETTINGS
@given(endpoint_names, st.binary(max_size=400))
def test_arbitrary_bodies(resource, body):
    """
    Arbitrary bytes POSTed to any endpoint.
    """
    harness = world()
    send(harness, url_of(harness, resource), body)


jwk_values = st.sampled_from([KEY, OTHER, RSA_KEY, STRANGER]).map(lambda k: k.public_jwk_json) | json_values
headers = st.fixed_dictionaries({}, optional={
    "alg": st.sampled_from(["RS256", "ES256", "ES384", "none", "HS256"]) | json_values,
    "jwk": jwk_values,
    "nonce": st.text(max_size=24) | json_values,
    "kid": json_values,
    "crit": json_values,
})


@SETTINGS
@given(endpoint_names, headers, st.one_of(json_values, st.binary(max_size=40)), st.binary(max_size=80),
       st.none() | headers)
def test_jws_shaped_bodies(resource, protected, payload, signature, unprotected):
    """
    Flattened JWSs with arbitrary headers, keys, payloads and signatures.
    """
    harness = world()
    jws = sign_jws(lambda data: signature, protected, payload if isinstance(payload, bytes) else
                   json.dumps(payload).encode(), header=unprotected)
    send(harness, url_of(harness, resource), to_body(jws))


# -- JSON payloads --------------------------------------------------------------------------

field_values = json_values | st.text(max_size=40)
payload_fields = st.fixed_dictionaries({}, optional={
    "contact": st.lists(st.text(max_size=30), max_size=3) | field_values,
    "agreement": field_values,
    "status": st.sampled_from(["valid", "deactivated", "revoked", ""]) | field_values,
    "identifier": st.fixed_dictionaries({"type": st.sampled_from(["dns", "ip"]) | field_values,
                                         "value": st.text(max_size=40) | field_values}) | field_values,
    "csr": st.text(max_size=40) | field_values,
    "certificate": st.text(max_size=40) | field_values,
    "reason": st.integers(-2, 12) | field_values,
    "type": st.sampled_from(["http-01", "dns-01", "tls-sni-01"]) | field_values,
    "keyAuthorization": st.text(max_size=40) | field_values,
    "protected": st.text(max_size=40) | field_values,
    "payload": st.text(max_size=40) | field_values,
    "signature": st.text(max_size=40) | field_values,
    "unknown": field_values,
})


@SETTINGS
@given(endpoint_names, payload_fields, st.sampled_from([KEY, OTHER, RSA_KEY, STRANGER]))
def test_signed_payloads(resource, fields, key):
    """
    Correctly signed requests, with a fresh nonce and the endpoint's
    ``resource``, whose other members have arbitrary types and values.
    """
    signed(resource, dict(fields, resource=resource), key)


@SETTINGS
@given(endpoint_names, json_values)
def test_signed_arbitrary_json(resource, payload):
    """
    Correctly signed requests whose payload is any JSON value at all.
    """
    signed(resource, payload)


# -- CSRs ----------------------------------------------------------------------------------

_CSR = make_csr([NAME, "b.example.test"])


def mutate(data: bytes, edits) -> bytes:
    body = bytearray(data)
    for position, action, value in edits:
        if not body:
            break
        position %= len(body)
        if action == "flip":
            body[position] ^= value or 1
        elif action == "cut":
            del body[position:position + 1 + value % 16]
        else:
            body[position:position] = bytes([value])
    return bytes(body)


csr_edits = st.lists(st.tuples(st.integers(0, 10_000), st.sampled_from(["flip", "cut", "insert"]),
                               st.integers(0, 255)), min_size=1, max_size=4)


@SETTINGS
@given(st.binary(max_size=300) | csr_edits.map(lambda edits: mutate(_CSR, edits)), st.booleans())
def test_csr_parser_total(der, allow_wildcard):
    """
    `parse_csr` on arbitrary and mutated DER returns names it checked, or a
    400 ``malformed``; nothing else escapes.
    """
    try:
        parsed = parse_csr(der, allow_wildcard=allow_wildcard)
    except Refused as refusal:
        problem = problem_for(refusal)
        assert (problem.status, problem.code) == (400, "malformed")
    else:
        assert parsed.names and all(isinstance(n, DNSName) for n in parsed.names)


@SETTINGS
@given(csr_edits)
def test_new_cert_with_mutated_csr(edits):
    """
    new-cert with a mutated CSR, through the whole face.
    """
    signed("new-cert", {"resource": "new-cert", "csr": b64url(mutate(_CSR, edits))})


# -- identifiers ------------------------------------------------------------------------------

name_text = st.text(max_size=80) | st.from_regex(r"\A(\*\.)?([a-zA-Z0-9-]{0,12}\.){0,4}[a-z0-9-]{0,8}\.?\Z")


@SETTINGS
@given(name_text, st.booleans())
def test_dns_name_parser_total(raw, allow_wildcard):
    """
    `parse_dns_name` returns a lower-case A-label name of valid labels, or a
    400 ``malformed``.
    """
    try:
        name = parse_dns_name(raw, allow_wildcard=allow_wildcard)
    except Refused as refusal:
        problem = problem_for(refusal)
        assert (problem.status, problem.code) == (400, "malformed")
    else:
        assert name.value.isascii() and name.value == name.value.lower()
        assert len(name.value) <= 253 and "*" not in name.value
        assert all(0 < len(label) <= 63 for label in name.value.split("."))
        assert allow_wildcard or not name.wildcard


@SETTINGS
@given(json_values | st.fixed_dictionaries({"type": json_values, "value": name_text | json_values}))
def test_v1_identifier_parser_total(identifier):
    """
    `parse_v1_identifier` on any JSON value.
    """
    try:
        parse_v1_identifier(identifier, allow_wildcard=True)
    except Refused as refusal:
        problem = problem_for(refusal)
        assert (problem.status, problem.code) == (400, "malformed")


@SETTINGS
@given(name_text)
def test_new_authz_arbitrary_names(raw):
    """
    new-authz for arbitrary names, through the whole face.
    """
    signed("new-authz", {"resource": "new-authz", "identifier": {"type": "dns", "value": raw}})


# -- URLs ------------------------------------------------------------------------------------

segment = (st.sampled_from(["acme", "new-reg", "reg", "authz", "challenge", "cert", "issuer-cert",
                            "new-authz", "new-cert", "revoke-cert", "key-change", "directory", "terms",
                            "..", ".", "", "%2F", "%2e%2e", "1", "A" * 22, "%00", "%ff"])
           | st.text(st.characters(min_codepoint=33, max_codepoint=126, exclude_characters="#"),
                     max_size=12))
targets = (st.lists(segment, max_size=5).map(lambda parts: "/" + "/".join(parts))
           | st.sampled_from(["*", "http://evil.example/acme/new-reg", "//evil.example/directory"])
           | st.builds(lambda path, query: path + "?" + query,
                       st.lists(segment, max_size=3).map(lambda parts: "/" + "/".join(parts)),
                       st.text(st.characters(min_codepoint=33, max_codepoint=126), max_size=12)))
host_values = st.none() | st.sampled_from(["gateway.test", "evil.example", "[::1]:4000", "a b", ""]) \
    | st.text(st.characters(min_codepoint=32, max_codepoint=255, exclude_characters="\r\n"), max_size=30)


@SETTINGS
@given(st.sampled_from(["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "get"]), targets, host_values,
       st.booleans())
def test_arbitrary_request_targets(method, target, host, derive_from_host):
    """
    Any method, request target and ``Host`` (with and without a base URL)
    over a raw connection: the answer, if the HTTP parser let the request
    through at all, is never a 5xx.
    """
    harness = world()
    lines = [f"{method} {target} HTTP/1.1"]
    if host is not None:
        lines.append(f"Host: {host}")
    body = b""
    if method == "POST":
        body = b"{}"
        lines.append(f"Content-Length: {len(body)}")
    data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
    face = harness.face_deriving_urls_from_host() if derive_from_host else None
    with logged_failures() as failures:
        exchange = harness.raw(data, face=face)
    no_5xx(exchange.reply, failures)
