"""
The adversarial corpus: hostile v1 requests, each with the v1 error it must
get.

Every case runs against a fresh in-memory gateway (`Harness`); a case that
needs an account or an authorization first sets it up before the snapshot
is taken.  Then the request must get its 4xx ``application/problem+json``
``urn:acme:error:*`` answer, and leave the store exactly as it was, the
upstream CA without a single further request, and the log without a
caught exception.  That is the issue's promise in executable form: nothing
a client that has not proved possession of a key sends can make the gateway
sign with that key, and nothing malformed costs an upstream call.

Decisions the corpus pins down:

* unknown payload fields are refused where they could change what the
  gateway does for an account (``new-reg`` and ``reg/<id>``); elsewhere they
  are ignored, as Boulder's JSON decoding ignored them
  (``test_unknown_fields_ignored_elsewhere``);
* absolute-form request targets are refused (no v1 client sends one; only
  proxies do);
* a CSR naming a name the account never asked to authorize is refused
  before any upstream order when the gateway has no means to validate it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any, Callable, Optional

import attrs
import josepy
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from gateway.keys.jose import AccountKey, b64url
from tests.security.harness import (
    KEY, NAME, OTHER, P384_KEY, RSA_KEY, STRANGER, Harness, assert_v1_problem, logged_failures,
    make_csr,
)
from tests.support.certs import make_chain
from tests.support.v1_client import Reply
from tests.support.v1_signing import sign_jws, sign_v1, to_body

NEW_REG = {"resource": "new-reg", "contact": ["mailto:admin@example.test"]}


@attrs.frozen
class Case:
    """
    One hostile request and the v1 answer it must get.

    :ivar send: sends the request on a `Harness` and returns the reply.
    :ivar setup: prepares the gateway (an account, an authorization) before
        the snapshot; its result is ``harness.state``.
    :ivar max_body: the face's body limit, when not the default.
    """

    name: str
    send: Callable[[Harness], Reply]
    status: int
    code: str
    detail: str = ""
    setup: Optional[Callable[[Harness], Any]] = None
    max_body: Optional[int] = None


# -- request builders --------------------------------------------------------------


def jws(h: Harness, key: AccountKey = KEY, payload: Any = NEW_REG, *, sign=None,
        header: Optional[dict] = None, nonce: Any = "fresh", **protected) -> dict:
    """
    A flattened JWS with ``key``'s ``alg`` and ``jwk`` protected unless
    overridden (a member set to ``None`` is left out), signed by ``sign``
    (``key.sign`` by default).
    """
    members = {"alg": key.algorithm.name, "jwk": key.public_jwk_json}
    if nonce is not None:
        members["nonce"] = h.nonce() if nonce == "fresh" else nonce
    members.update(protected)
    members = {k: v for k, v in members.items() if v is not None}
    return sign_jws(sign or key.sign, members, payload, header=header)


def post_jws(path: str = "/acme/new-reg", **kwargs) -> Callable[[Harness], Reply]:
    return lambda h: h.post_body(path, to_body(jws(h, **kwargs)))


def post_signed(path: str, payload: Any, key: AccountKey = KEY) -> Callable[[Harness], Reply]:
    return lambda h: h.post(path, payload, key=key)


def hmac_with(secret: bytes):
    return lambda data: hmac.new(secret, data, hashlib.sha256).digest()


def _public_bytes(key: AccountKey, encoding) -> bytes:
    return key.private_key.public_key().public_bytes(
        encoding, serialization.PublicFormat.SubjectPublicKeyInfo)


def _flip_signature(h: Harness) -> Reply:
    body = jws(h)
    signature = bytearray(josepy.b64.b64decode(body["signature"]))
    signature[len(signature) // 2] ^= 0x01
    body["signature"] = b64url(bytes(signature))
    return h.post_body("/acme/new-reg", to_body(body))


def _swap_payload(h: Harness) -> Reply:
    body = jws(h)
    body["payload"] = b64url(json.dumps({"resource": "new-reg", "contact": []}).encode())
    return h.post_body("/acme/new-reg", to_body(body))


def _compact(h: Harness) -> Reply:
    body = jws(h)
    return h.post_body("/acme/new-reg", f"{body['protected']}.{body['payload']}.{body['signature']}".encode())


def _two_signatures(h: Harness) -> Reply:
    nonce = h.nonce()
    first, second = jws(h, KEY, nonce=nonce), jws(h, OTHER, nonce=nonce)
    general = {"payload": first["payload"], "signatures": [
        {"protected": first["protected"], "signature": first["signature"]},
        {"protected": second["protected"], "signature": second["signature"]},
    ]}
    return h.post_body("/acme/new-reg", to_body(general))


def _general_mixed(h: Harness) -> Reply:
    body = jws(h)
    general = dict(body, signatures=[{"protected": body["protected"], "signature": body["signature"]}])
    return h.post_body("/acme/new-reg", to_body(general))


def _foreign_key_jws(private_key, alg: str):
    jwk = josepy.JWK.load(private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption(),
    )).public_key().to_json()
    algorithm = getattr(josepy, alg)

    def send(h: Harness) -> Reply:
        body = sign_jws(lambda data: algorithm.sign(private_key, data),
                        {"alg": alg, "jwk": jwk, "nonce": h.nonce()}, NEW_REG)
        return h.post_body("/acme/new-reg", to_body(body))

    return send


def _private_jwk(key: AccountKey) -> dict:
    return josepy.JWK.load(key.private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption(),
    )).to_json()


def _replay_setup(h: Harness) -> bytes:
    """
    A correctly signed request that passes verification (so its nonce is
    spent) and is then refused for an unknown field: nothing is written.
    """
    body = sign_v1(KEY, {"resource": "new-reg", "colour": "blue"}, h.nonce())
    assert h.post_body("/acme/new-reg", body).status == 400
    return body


def _expired_setup(h: Harness) -> str:
    nonce = h.nonce()
    h.gateway.clock.advance(h.gateway.nonces.lifetime + 1)
    return nonce


def _nested(levels: int) -> dict:
    value: Any = "deep"
    for _ in range(levels):
        value = [value]
    return {"resource": "new-reg", "x": value}


def _raw_payload(raw: bytes) -> Callable[[Harness], Reply]:
    return lambda h: h.post_body("/acme/new-reg", to_body(sign_jws(
        KEY.sign, {"alg": "ES256", "jwk": KEY.public_jwk_json, "nonce": h.nonce()}, raw)))


def _registered(h: Harness) -> str:
    return h.register(KEY)


def _authorized(h: Harness) -> dict:
    h.register(KEY)
    return h.authorize("ok.example.test")


def _pending_authorization(h: Harness) -> dict:
    h.register(KEY)
    reply = h.new_authz()
    return {"authz_url": reply.header("location"), "challenge": reply.json()["challenges"][0]}


def _bad_csr_signature() -> bytes:
    der = bytearray(make_csr([NAME]))
    der[-5] ^= 0x55  # inside the signature BIT STRING, the last element
    return bytes(der)


def _csr_with_unknown_signature_algorithm() -> bytes:
    """
    A CSR whose signature AlgorithmIdentifier names an OID that
    ``cryptography`` does not know (ecdsa-with-SHA256's first arc changed,
    1.2.840.10045.4.3.2 -> 1.3.840.10045.4.3.2): it made the gateway's CSR
    check raise instead of refusing (found by the property tests).
    """
    der = make_csr([NAME])
    oid = bytes.fromhex("06082a8648ce3d040302")
    assert der.count(oid) == 1
    return der.replace(oid, bytes.fromhex("06082b8648ce3d040302"))


def _foreign_certificate() -> str:
    leaf, _, _ = make_chain(("foreign.example.test",))
    return b64url(leaf.public_bytes(serialization.Encoding.DER))


def _raw(target: str, body: bytes = b"", method: str = "POST", host: Optional[str] = "gateway.test",
         headers: tuple = (), host_urls: bool = False, sign: bool = False) -> Callable[[Harness], Reply]:
    """
    A request written byte by byte over a fresh connection; ``sign`` makes the
    body a valid new-reg JWS.  ``host_urls`` serves it by a face without a
    base URL (links derived from ``Host``).
    """

    def send(h: Harness) -> Reply:
        payload = sign_v1(KEY, NEW_REG, h.nonce()) if sign else body
        lines = [f"{method} {target} HTTP/1.1"]
        if host is not None:
            lines.append(f"Host: {host}")
        lines += list(headers)
        if method == "POST" and not any(line.lower().startswith("transfer-encoding") for line in headers):
            lines.append(f"Content-Length: {len(payload)}")
        data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + payload
        face = h.face_deriving_urls_from_host() if host_urls else None
        return h.raw(data, face=face).reply

    return send


def _chunked_over_limit(h: Harness) -> Reply:
    chunk = b"x" * 8192
    data = (b"POST /acme/new-reg HTTP/1.1\r\nHost: gateway.test\r\nTransfer-Encoding: chunked\r\n\r\n"
            + (b"2000\r\n" + chunk + b"\r\n") * 9 + b"0\r\n\r\n")
    return h.raw(data).reply


def _large_signed(size: int) -> Callable[[Harness], Reply]:
    """
    A correctly signed new-reg padded to about ``size`` bytes.
    """
    return lambda h: h.post_body("/acme/new-reg", sign_v1(
        KEY, dict(NEW_REG, padding="x" * size), h.nonce()))


# -- the corpus ---------------------------------------------------------------------

CORPUS = [
    # Algorithms and keys.
    Case("alg-none", post_jws(alg="none", sign=lambda data: b""), 400, "malformed", "does not fit the key"),
    Case("hs256-public-key-pem-as-secret",
         post_jws(key=RSA_KEY, alg="HS256", sign=hmac_with(_public_bytes(RSA_KEY, serialization.Encoding.PEM))),
         400, "malformed", "does not fit the key"),
    Case("hs256-public-key-der-as-secret",
         post_jws(key=RSA_KEY, alg="HS256", sign=hmac_with(_public_bytes(RSA_KEY, serialization.Encoding.DER))),
         400, "malformed", "does not fit the key"),
    Case("hs256-public-jwk-as-secret",
         post_jws(key=KEY, alg="HS256", sign=hmac_with(json.dumps(KEY.public_jwk_json).encode())),
         400, "malformed", "does not fit the key"),
    Case("rs256-header-ec-key", post_jws(key=KEY, alg="RS256"), 400, "malformed", "expected 'ES256'"),
    Case("es256-header-rsa-key", post_jws(key=RSA_KEY, alg="ES256"), 400, "malformed", "expected 'RS256'"),
    Case("es384-header-p256-key", post_jws(key=KEY, alg="ES384"), 400, "malformed", "expected 'ES256'"),
    Case("es256-header-p384-key", post_jws(key=P384_KEY, alg="ES256"), 400, "malformed", "expected 'ES384'"),
    Case("alg-missing", post_jws(alg=None), 400, "malformed", "does not fit the key"),
    Case("rsa-1024-key", _foreign_key_jws(rsa.generate_private_key(65537, 1024), "RS256"),
         400, "malformed", "2048"),
    Case("p521-key", _foreign_key_jws(ec.generate_private_key(ec.SECP521R1()), "ES512"),
         400, "malformed", "P-256"),
    # Signatures.
    Case("bad-signature", _flip_signature, 400, "malformed", "JWS verification error"),
    Case("signature-by-another-key", post_jws(key=KEY, sign=OTHER.sign), 400, "malformed",
         "JWS verification error"),
    Case("payload-swapped-after-signing", _swap_payload, 400, "malformed", "JWS verification error"),
    Case("empty-signature", post_jws(sign=lambda data: b""), 400, "malformed", "JWS verification error"),
    # Headers.
    Case("jwk-differs-between-headers",
         post_jws(header={"alg": "ES256", "jwk": OTHER.public_jwk_json}), 400, "malformed",
         "'jwk' differs between the protected and unprotected headers"),
    Case("alg-differs-between-headers", post_jws(header={"alg": "ES384"}), 400, "malformed",
         "'alg' differs"),
    Case("jwk-with-ec-private-members", post_jws(jwk=_private_jwk(KEY)), 400, "malformed",
         "private key members: d"),
    Case("jwk-with-rsa-private-members", post_jws(key=RSA_KEY, jwk=_private_jwk(RSA_KEY)), 400,
         "malformed", "private key members: d, dp, dq, p, q, qi"),
    Case("jwk-symmetric-key", post_jws(jwk={"kty": "oct", "k": "c2VjcmV0"}), 400, "malformed",
         "not supported"),
    Case("kid-instead-of-jwk", post_jws(jwk=None, kid="https://gateway.test/acme/reg/1"), 400,
         "malformed", "kid is not supported"),
    Case("crit-header", post_jws(crit=["b64"], b64=False), 400, "malformed", "critical"),
    # Serializations.
    Case("compact-serialization", _compact, 400, "malformed", "compact serialization"),
    Case("general-two-signatures", _two_signatures, 400, "malformed", "Too many signatures"),
    Case("general-mixed-with-flattened", _general_mixed, 400, "malformed", "mixes"),
    # Nonces.
    Case("nonce-missing", post_jws(nonce=None), 400, "badNonce", "no anti-replay nonce"),
    Case("nonce-unknown", post_jws(nonce="bm90LWEtZ2F0ZXdheS1ub25jZQ"), 400, "badNonce",
         "invalid anti-replay nonce"),
    Case("nonce-replayed", lambda h: h.post_body("/acme/new-reg", h.state), 400, "badNonce",
         "invalid anti-replay nonce", setup=_replay_setup),
    Case("nonce-expired", lambda h: h.post_body("/acme/new-reg", to_body(jws(h, nonce=h.state))),
         400, "badNonce", "invalid anti-replay nonce", setup=_expired_setup),
    Case("nonce-not-a-string", post_jws(nonce=12345), 400, "badNonce", "invalid anti-replay nonce"),
    Case("nonce-only-unprotected",
         lambda h: h.post_body("/acme/new-reg", to_body(jws(h, nonce=None, header={"nonce": h.nonce()}))),
         400, "malformed", "nonce parameter included in unprotected header"),
    # resource.
    Case("resource-missing", post_signed("/acme/new-reg", {"contact": []}), 400, "malformed",
         "does not specify a resource"),
    Case("resource-other-endpoint", post_signed("/acme/new-reg", {"resource": "new-authz"}), 400,
         "malformed", "does not match the HTTP resource"),
    Case("resource-new-reg-at-new-cert", post_signed("/acme/new-cert", NEW_REG), 400, "malformed",
         "does not match the HTTP resource"),
    Case("resource-not-a-string", post_signed("/acme/new-reg", {"resource": ["new-reg"]}), 400,
         "malformed", "does not match the HTTP resource"),
    # Payloads.
    Case("payload-not-json", _raw_payload(b"resource=new-reg"), 400, "malformed", "did not parse as JSON"),
    Case("payload-not-utf8", _raw_payload(b'{"resource": "new-reg\xff"}'), 400, "malformed",
         "did not parse as JSON"),
    Case("payload-nan", _raw_payload(b'{"resource": "new-reg", "x": NaN}'), 400, "malformed",
         "did not parse as JSON"),
    Case("payload-not-an-object", post_signed("/acme/new-reg", ["resource", "new-reg"]), 400,
         "malformed", "must be a JSON object"),
    Case("payload-deeply-nested", post_signed("/acme/new-reg", _nested(40)), 400, "malformed",
         "did not parse as JSON"),
    Case("contact-not-a-list", post_signed("/acme/new-reg", {"resource": "new-reg", "contact": "mailto:a@b.test"}),
         400, "malformed", "contact must be a list of strings"),
    Case("contact-not-mailto", post_signed("/acme/new-reg", {"resource": "new-reg", "contact": ["tel:+15555550100"]}),
         400, "invalidEmail", "tel:+15555550100"),
    Case("agreement-not-a-string", post_signed("/acme/new-reg", {"resource": "new-reg", "agreement": 1}),
         400, "malformed", "agreement must be a string"),
    Case("new-reg-unknown-field", post_signed("/acme/new-reg", dict(NEW_REG, colour="blue")), 400,
         "malformed", "Unknown registration field(s): colour"),
    Case("reg-update-unknown-field",
         lambda h: h.post(h.state, {"resource": "reg", "contact": [], "admin": True}), 400, "malformed",
         "Unknown registration field(s): admin", setup=_registered),
    Case("reg-update-bad-status", lambda h: h.post(h.state, {"resource": "reg", "status": "revoked"}),
         400, "malformed", "status", setup=_registered),
    Case("reg-update-other-id", lambda h: h.post("/acme/reg/2", {"resource": "reg"}), 403,
         "unauthorized", "Request signing key did not match registration key", setup=_registered),
    Case("identifier-not-an-object", post_signed("/acme/new-authz", {"resource": "new-authz", "identifier": NAME}),
         400, "malformed", "expected an object"),
    Case("identifier-value-not-a-string",
         post_signed("/acme/new-authz", {"resource": "new-authz", "identifier": {"type": "dns", "value": 7}}),
         400, "malformed", "non-empty string"),
    Case("identifier-ip",
         post_signed("/acme/new-authz", {"resource": "new-authz",
                                         "identifier": {"type": "ip", "value": "192.0.2.1"}}),
         400, "malformed", "Invalid identifier type"),
    Case("identifier-bad-wildcard",
         post_signed("/acme/new-authz", {"resource": "new-authz",
                                         "identifier": {"type": "dns", "value": "a.*.example.test"}}),
         400, "malformed", "malformed wildcard label"),
    Case("csr-not-a-string", post_signed("/acme/new-cert", {"resource": "new-cert", "csr": 12}), 400,
         "malformed", "csr must be a base64url string"),
    Case("csr-not-base64url", post_signed("/acme/new-cert", {"resource": "new-cert", "csr": "a+b/c="}),
         400, "malformed", "csr is not base64url"),
    Case("authz-post-bad-status",
         lambda h: h.post(h.state["authz_url"], {"resource": "authz", "status": "valid"}), 400,
         "malformed", "Invalid status value", setup=_pending_authorization),
    Case("challenge-key-authorization-wrong-type",
         lambda h: h.post(h.state["challenge"]["uri"], {"resource": "challenge", "type": "http-01",
                                                        "keyAuthorization": {"token": 1}}),
         400, "malformed", "key authorization provided does not match", setup=_pending_authorization),
    Case("revoke-reason-not-a-number",
         post_signed("/acme/revoke-cert", {"resource": "revoke-cert", "certificate": _foreign_certificate(),
                                           "reason": "1"}),
         400, "malformed", "unsupported revocation reason"),
    Case("revoke-certificate-garbage",
         post_signed("/acme/revoke-cert", {"resource": "revoke-cert", "certificate": b64url(b"\x30\x03\x02\x01\x01")}),
         400, "malformed", "Unable to decode certificate"),
    # Bodies.
    Case("body-empty", lambda h: h.post_body("/acme/new-reg", b""), 400, "malformed", "No body on POST"),
    Case("body-not-utf8", lambda h: h.post_body("/acme/new-reg", b"\xff\xfe{}"), 400, "malformed",
         "Parse error"),
    Case("body-not-json", lambda h: h.post_body("/acme/new-reg", b"hello"), 400, "malformed", "Parse error"),
    Case("body-over-default-limit", _large_signed(64 * 1024), 413, "malformed", "too large"),
    Case("body-over-limit-content-length-only",
         lambda h: h.raw(b"POST /acme/new-reg HTTP/1.1\r\nHost: gateway.test\r\n"
                         b"Content-Length: 10000000\r\n\r\n").reply,
         413, "malformed", "too large"),
    Case("body-chunked-over-limit", _chunked_over_limit, 413, "malformed", "too large"),
    Case("body-over-configured-limit", _large_signed(4096), 413, "malformed", "the limit is 2048 bytes",
         max_body=2048),
    Case("body-over-configured-limit-raw", _raw("/acme/new-reg", body=b"x" * 2049), 413, "malformed",
         "the limit is 2048 bytes", max_body=2048),
    # CSRs.
    Case("csr-with-account-key",
         post_signed("/acme/new-cert", {"resource": "new-cert", "csr": b64url(make_csr([NAME], KEY.private_key))}),
         400, "malformed", "different than account key"),
    Case("csr-with-account-key-of-bound-account",
         lambda h: h.post("/acme/new-cert", {"resource": "new-cert",
                                             "csr": b64url(make_csr(["ok.example.test"], KEY.private_key))}),
         400, "malformed", "different than account key", setup=_authorized),
    Case("csr-bad-signature", post_signed("/acme/new-cert", {"resource": "new-cert", "csr": b64url(_bad_csr_signature())}),
         400, "malformed", "invalid signature on CSR"),
    Case("csr-unknown-signature-algorithm",
         post_signed("/acme/new-cert", {"resource": "new-cert", "csr": b64url(_csr_with_unknown_signature_algorithm())}),
         400, "malformed", "invalid signature on CSR"),
    Case("csr-garbage", post_signed("/acme/new-cert", {"resource": "new-cert", "csr": b64url(b"\x30\x00")}),
         400, "malformed", "Error parsing certificate request"),
    Case("csr-ip-address",
         post_signed("/acme/new-cert", {"resource": "new-cert",
                                        "csr": b64url(make_csr([NAME], ip_addresses=["192.0.2.1"]))}),
         400, "malformed", "identifiers other than DNS names"),
    Case("csr-names-not-authorized",
         post_signed("/acme/new-cert", {"resource": "new-cert",
                                        "csr": b64url(make_csr(["ok.example.test", "other.example.test"]))}),
         403, "unauthorized", "not found or expired: other.example.test.", setup=_authorized),
    Case("csr-name-never-authorized",
         post_signed("/acme/new-cert", {"resource": "new-cert", "csr": b64url(make_csr([NAME]))}),
         403, "unauthorized", f"not found or expired: {NAME}.", setup=_registered),
    Case("key-not-in-store",
         post_signed("/acme/new-authz", {"resource": "new-authz", "identifier": {"type": "dns", "value": NAME}},
                     key=STRANGER),
         403, "unauthorized", STRANGER.thumbprint),
    # URLs.
    Case("path-dot-dot", _raw("/acme/../acme/new-reg", sign=True), 404, "malformed", "Not found"),
    Case("path-dot-dot-read", _raw("/acme/authz/../../directory", method="GET"), 404, "malformed", "Not found"),
    Case("path-encoded-slash", _raw("/acme%2Fnew-reg", sign=True), 404, "malformed", "Not found"),
    Case("path-encoded-dot-dot", _raw("/acme/authz/..%2F..%2Fdirectory", method="GET"), 404, "malformed",
         "Not found"),
    Case("path-double-slash", _raw("//acme/new-reg", sign=True), 404, "malformed", "Not found"),
    Case("path-trailing-segment", _raw("/acme/new-reg/x", sign=True), 404, "malformed", "Not found"),
    Case("absolute-form-other-site", _raw("http://evil.example/acme/new-reg", sign=True), 404, "malformed",
         "Not found"),
    Case("absolute-form-own-site", _raw("http://gateway.test/acme/new-reg", sign=True), 404, "malformed",
         "Not found"),
    Case("host-with-path", _raw("/acme/new-reg", sign=True, host="evil.example/acme", host_urls=True),
         400, "malformed", "Invalid Host header"),
    Case("host-with-userinfo", _raw("/acme/new-reg", sign=True, host="gateway.test@evil.example",
                                    host_urls=True), 400, "malformed", "Invalid Host header"),
    Case("host-missing", _raw("/acme/new-reg", sign=True, host=None, host_urls=True), 400, "malformed",
         "Invalid Host header"),
    Case("method-not-allowed", _raw("/acme/new-reg", method="DELETE"), 405, "malformed", "Method not allowed"),
]


def test_corpus_size():
    """
    The issue asks for at least 40 cases, every one with a unique name.
    """
    assert len(CORPUS) >= 40
    assert len({case.name for case in CORPUS}) == len(CORPUS)


@pytest.mark.parametrize("case", CORPUS, ids=lambda case: case.name)
def test_hostile_request_refused(case: Case):
    """
    The request gets its 4xx v1 problem document, and the store, the
    upstream CA and the log are as they were before it.
    """
    harness = Harness.fresh(max_body=case.max_body)
    if case.setup is not None:
        harness.state = case.setup(harness)
    before = harness.snapshot()
    with logged_failures() as failures:
        reply = case.send(harness)
    assert_v1_problem(reply, case.status, case.code, case.detail)
    assert 400 <= reply.status < 500
    assert harness.snapshot() == before, "a refused request changed the store or called upstream"
    assert failures == []


def test_unknown_fields_ignored_elsewhere():
    """
    Outside registrations, unknown payload fields are ignored, as Boulder's
    JSON decoding ignored them: they cannot change what is done for the
    account, and refusing them would break clients that send extras.
    """
    harness = Harness.fresh()
    harness.register()
    reply = harness.post("/acme/new-authz", {"resource": "new-authz", "colour": "blue",
                                             "identifier": {"type": "dns", "value": NAME, "x": 1}})
    assert reply.status == 201, reply.body


def test_host_only_shapes_links_without_base_url():
    """
    Without ``--base-url``, a syntactically valid ``Host`` naming another site
    only changes the links in the answer to that same request; nothing is
    stored.  With a base URL (the in-memory gateway has one), the ``Host`` is
    not used at all.
    """
    harness = Harness.fresh()
    before = harness.snapshot()
    face = harness.face_deriving_urls_from_host()
    exchange = harness.raw(b"GET /directory HTTP/1.1\r\nHost: other.example\r\n\r\n", face=face)
    assert exchange.reply.status == 200
    assert exchange.reply.json()["new-reg"] == "http://other.example/acme/new-reg"
    exchange = harness.raw(b"GET /directory HTTP/1.1\r\nHost: other.example\r\n\r\n")
    assert exchange.reply.json()["new-reg"] == "http://gateway.test/acme/new-reg"
    after = harness.snapshot()
    assert after["store"] == before["store"]
