"""
Tests for `gateway.v1.jws`: verification of legacy ACME v1 JWS requests with
Boulder's rules and error types (MAPPING §1.1).
"""

from __future__ import annotations

import hashlib
import hmac
import json

import josepy
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock

from gateway.keys.jose import AccountKey, b64url
from gateway.store.sqlite import SQLiteStore
from gateway.v1.nonces import NonceIssuer
from gateway.v1.problems import V1Problem
from gateway.v1.jws import VerifiedRequest, verify_jws_signature, verify_v1_request
from tests.support.v1_signing import JWK_PLACEMENTS, sign_jws, sign_v1, to_body

NEW_REG = {"resource": "new-reg", "contact": ["mailto:admin@example.test"]}


@pytest.fixture(scope="module")
def rsa_key() -> AccountKey:
    """
    An RSA-2048 account key, the common case.
    """
    return AccountKey.from_private_key(rsa.generate_private_key(65537, 2048))


@pytest.fixture(scope="module")
def p256_key() -> AccountKey:
    """
    A P-256 account key (ES256).
    """
    return AccountKey.from_private_key(ec.generate_private_key(ec.SECP256R1()))


@pytest.fixture(scope="module")
def p384_key() -> AccountKey:
    """
    A P-384 account key (ES384).
    """
    return AccountKey.from_private_key(ec.generate_private_key(ec.SECP384R1()))


@pytest.fixture(params=["rsa", "p256", "p384"])
def any_key(request, rsa_key, p256_key, p384_key) -> AccountKey:
    """
    Each supported account key type in turn.
    """
    return {"rsa": rsa_key, "p256": p256_key, "p384": p384_key}[request.param]


@pytest.fixture
def clock() -> Clock:
    """
    A fake clock driving nonce expiry.
    """
    return Clock()


@pytest.fixture
def nonces(clock) -> NonceIssuer:
    """
    The gateway's nonce issuer.
    """
    return NonceIssuer(clock, SQLiteStore.inline(clock=clock), lifetime=60)


def fired(coroutine):
    """
    The result of a coroutine whose awaits have all fired already (an
    inline store's).
    """
    from twisted.internet.defer import Deferred

    outcome = []
    Deferred.fromCoroutine(coroutine).addBoth(outcome.append)
    (result,) = outcome
    return result


def rejected(body: bytes, nonces: NonceIssuer, resource="new-reg") -> V1Problem:
    """
    Verify ``body``, expecting (and returning) a v1 problem.
    """
    with pytest.raises(V1Problem) as info:
        verify_v1_request(body, resource, nonces)
    return info.value


def assert_malformed(problem: V1Problem, fragment: str = "") -> None:
    """
    The problem is a 400 ``malformed`` whose detail mentions ``fragment``.
    """
    assert (problem.status, problem.code) == (400, "malformed"), problem
    assert fragment in problem.detail


def protected_for(key: AccountKey, nonce: str, **members) -> dict:
    """
    A full protected header for ``key``, with members overridden.
    """
    header = {"alg": key.algorithm.name, "jwk": key.public_jwk_json, "nonce": nonce}
    header.update(members)
    return header


# -- accepted requests ------------------------------------------------------------


@pytest.mark.parametrize("jwk_in", JWK_PLACEMENTS)
def test_valid_request_every_placement(any_key, jwk_in, nonces):
    """
    ``alg``/``jwk`` in the protected header, only in the unprotected one, or
    in both: all are what real v1 clients sent, and all verify.
    """
    nonce = nonces.issue()
    body = sign_v1(any_key, NEW_REG, nonce, jwk_in=jwk_in)
    verified = verify_v1_request(body, "new-reg", nonces)
    assert isinstance(verified, VerifiedRequest)
    assert verified.thumbprint == any_key.thumbprint
    assert verified.jwk == any_key.jwk
    assert verified.algorithm == any_key.algorithm.name
    assert verified.payload == NEW_REG
    assert json.loads(verified.raw_payload) == NEW_REG
    assert verified.protected["nonce"] == nonce


def test_url_header_ignored(rsa_key, nonces):
    """
    v1 had no ``url`` check; a stray one must not matter.
    """
    body = sign_v1(
        rsa_key, NEW_REG, nonces.issue(), extra_protected={"url": "https://elsewhere/x"}
    )
    assert verify_v1_request(body, "new-reg", nonces).payload == NEW_REG


def test_resource_tuple(rsa_key, nonces):
    """
    An endpoint may accept several ``resource`` values.
    """
    body = sign_v1(rsa_key, {"resource": "reg"}, nonces.issue())
    verified = verify_v1_request(body, ("new-reg", "reg"), nonces)
    assert verified.payload == {"resource": "reg"}


def test_general_serialization_with_one_signature(p256_key, nonces):
    """
    go-jose, and so Boulder, took a general JWS with a single signature.
    """
    flat = json.loads(sign_v1(p256_key, NEW_REG, nonces.issue()))
    general = {
        "payload": flat["payload"],
        "signatures": [{"protected": flat["protected"], "signature": flat["signature"]}],
    }
    assert verify_v1_request(to_body(general), "new-reg", nonces).payload == NEW_REG


def test_jwk_with_matching_alg_member(p384_key, nonces):
    """
    A JWK that names its own (right) algorithm is fine.
    """
    jwk = dict(p384_key.public_jwk_json, alg="ES384", use="sig")
    jws = sign_jws(p384_key.sign, protected_for(p384_key, nonces.issue(), jwk=jwk), NEW_REG)
    verified = verify_v1_request(to_body(jws), "new-reg", nonces)
    assert verified.thumbprint == p384_key.thumbprint


def test_verify_jws_signature_alone(rsa_key):
    """
    The inner key-change JWS has no nonce and no ``resource``; the signature
    check alone accepts it, with extra top-level members present.
    """
    inner = {"account": "https://gw/acme/reg/1", "newKey": rsa_key.public_jwk_json}
    jws = sign_jws(rsa_key.sign, {"alg": "RS256", "jwk": rsa_key.public_jwk_json}, inner)
    jws["resource"] = "key-change"
    jwk, protected, payload = verify_jws_signature(jws)
    assert jwk == rsa_key.jwk
    assert protected["alg"] == "RS256"
    assert json.loads(payload) == inner


def test_verify_jws_signature_rejects_bad_signature(rsa_key, p256_key):
    """
    The signature check alone still refuses a JWS signed by another key.
    """
    jws = sign_jws(p256_key.sign, {"alg": "RS256", "jwk": rsa_key.public_jwk_json}, {})
    with pytest.raises(V1Problem) as info:
        verify_jws_signature(jws)
    assert_malformed(info.value, "JWS verification error")


# -- algorithm ------------------------------------------------------------------------


def test_alg_none(rsa_key, nonces):
    """
    ``alg: none`` with an empty signature is refused.
    """
    jws = sign_jws(lambda data: b"", protected_for(rsa_key, nonces.issue(), alg="none"), NEW_REG)
    assert_malformed(rejected(to_body(jws), nonces), "algorithm")


@pytest.mark.parametrize("secret_form", ["pem", "der", "jwk"])
def test_hs256_with_public_key_as_secret(rsa_key, nonces, secret_form):
    """
    The classic confusion attack: HMAC keyed with the public key's bytes.
    """
    public = rsa_key.private_key.public_key()
    secret = {
        "pem": public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        "der": public.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        "jwk": json.dumps(rsa_key.public_jwk_json).encode(),
    }[secret_form]
    jws = sign_jws(
        lambda data: hmac.new(secret, data, hashlib.sha256).digest(),
        protected_for(rsa_key, nonces.issue(), alg="HS256"),
        NEW_REG,
    )
    assert_malformed(rejected(to_body(jws), nonces), "algorithm")


def test_rs256_header_with_ec_key(p256_key, nonces):
    """
    An RS256 header over an EC key does not fit.
    """
    jws = sign_jws(p256_key.sign, protected_for(p256_key, nonces.issue(), alg="RS256"), NEW_REG)
    assert_malformed(rejected(to_body(jws), nonces), "ES256")


def test_es256_header_with_rsa_key(rsa_key, nonces):
    """
    An ES256 header over an RSA key does not fit.
    """
    jws = sign_jws(rsa_key.sign, protected_for(rsa_key, nonces.issue(), alg="ES256"), NEW_REG)
    assert_malformed(rejected(to_body(jws), nonces), "RS256")


def test_es384_with_p256_key(p256_key, nonces):
    """
    The EC algorithm must match the curve, not just the key type.
    """
    jws = sign_jws(p256_key.sign, protected_for(p256_key, nonces.issue(), alg="ES384"), NEW_REG)
    assert_malformed(rejected(to_body(jws), nonces), "ES256")


def test_alg_missing(rsa_key, nonces):
    """
    No ``alg`` anywhere is refused.
    """
    header = protected_for(rsa_key, nonces.issue())
    del header["alg"]
    jws = sign_jws(rsa_key.sign, header, NEW_REG)
    assert_malformed(rejected(to_body(jws), nonces))


def test_jwk_alg_member_disagrees(rsa_key, nonces):
    """
    A JWK claiming another algorithm than the one used is refused.
    """
    jwk = dict(rsa_key.public_jwk_json, alg="RS512")
    jws = sign_jws(rsa_key.sign, protected_for(rsa_key, nonces.issue(), jwk=jwk), NEW_REG)
    assert_malformed(rejected(to_body(jws), nonces), "JWK algorithm")


# -- signature -------------------------------------------------------------------------


def test_bad_signature(any_key, nonces):
    """
    A signature with a flipped bit fails verification.
    """
    jws = json.loads(sign_v1(any_key, NEW_REG, nonces.issue()))
    signature = bytearray(josepy.b64.b64decode(jws["signature"]))
    signature[len(signature) // 2] ^= 1
    jws["signature"] = b64url(bytes(signature))
    assert_malformed(rejected(to_body(jws), nonces), "JWS verification error")


def test_signature_by_other_key(rsa_key, nonces):
    """
    A valid signature by another key than the ``jwk`` fails.
    """
    other = AccountKey.from_private_key(rsa.generate_private_key(65537, 2048))
    jws = sign_jws(other.sign, protected_for(rsa_key, nonces.issue()), NEW_REG)
    assert_malformed(rejected(to_body(jws), nonces), "JWS verification error")


def test_payload_changed_after_signing(rsa_key, nonces):
    """
    The signature covers the payload.
    """
    jws = json.loads(sign_v1(rsa_key, NEW_REG, nonces.issue()))
    jws["payload"] = b64url(json.dumps({"resource": "new-reg", "contact": []}).encode())
    assert_malformed(rejected(to_body(jws), nonces), "JWS verification error")


def test_der_ecdsa_signature_refused(p256_key, nonces):
    """
    ES signatures are raw ``r||s``; a DER-encoded ECDSA signature fails.
    """
    jws = sign_jws(
        lambda data: p256_key.private_key.sign(data, ec.ECDSA(hashes.SHA256())),
        protected_for(p256_key, nonces.issue()),
        NEW_REG,
    )
    assert_malformed(rejected(to_body(jws), nonces), "JWS verification error")


def test_failed_signature_does_not_burn_nonce(rsa_key, nonces):
    """
    The nonce is checked after the signature, so a forged request cannot use
    up a client's nonce.
    """
    nonce = nonces.issue()
    jws = json.loads(sign_v1(rsa_key, NEW_REG, nonce))
    jws["signature"] = b64url(b"\0" * 256)
    rejected(to_body(jws), nonces)
    assert verify_v1_request(sign_v1(rsa_key, NEW_REG, nonce), "new-reg", nonces)


# -- headers and keys ----------------------------------------------------------------


def test_conflicting_jwk_in_both_headers(rsa_key, nonces):
    """
    Different keys in the protected and unprotected headers are ambiguous.
    """
    other = AccountKey.from_private_key(rsa.generate_private_key(65537, 2048))
    jws = sign_jws(
        rsa_key.sign,
        protected_for(rsa_key, nonces.issue()),
        NEW_REG,
        header={"jwk": other.public_jwk_json},
    )
    assert_malformed(rejected(to_body(jws), nonces), "'jwk'")


def test_conflicting_alg_in_both_headers(rsa_key, nonces):
    """
    Different ``alg`` values in the two headers are refused too.
    """
    jws = sign_jws(
        rsa_key.sign, protected_for(rsa_key, nonces.issue()), NEW_REG, header={"alg": "RS512"}
    )
    assert_malformed(rejected(to_body(jws), nonces), "'alg'")


def test_no_jwk(rsa_key, nonces):
    """
    A ``jwk`` is required.
    """
    jws = sign_jws(rsa_key.sign, {"alg": "RS256", "nonce": nonces.issue()}, NEW_REG)
    assert_malformed(rejected(to_body(jws), nonces), "No JWK in JWS header")


def test_kid_not_supported(rsa_key, nonces):
    """
    v1 never had ``kid``: a v2-style request is refused.
    """
    jws = sign_jws(
        rsa_key.sign,
        {"alg": "RS256", "kid": "https://gw/acme/reg/1", "nonce": nonces.issue()},
        NEW_REG,
    )
    problem = rejected(to_body(jws), nonces)
    assert_malformed(problem, "No JWK in JWS header")
    assert "kid" in problem.detail


@pytest.mark.parametrize("key_fixture", ["rsa_key", "p256_key"])
def test_jwk_with_private_members(request, key_fixture, nonces):
    """
    A JWK carrying the private key is refused (and never loaded).
    """
    key = request.getfixturevalue(key_fixture)
    private_jwk = josepy.JWK.load(
        key.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    ).to_json()
    assert "d" in private_jwk
    jws = sign_jws(key.sign, protected_for(key, nonces.issue(), jwk=private_jwk), NEW_REG)
    assert_malformed(rejected(to_body(jws), nonces), "private")


def test_oct_jwk(rsa_key, nonces):
    """
    A symmetric key is not an account key.
    """
    jwk = {"kty": "oct", "k": b64url(b"secret")}
    jws = sign_jws(
        lambda data: hmac.new(b"secret", data, hashlib.sha256).digest(),
        {"alg": "HS256", "jwk": jwk, "nonce": nonces.issue()},
        NEW_REG,
    )
    assert_malformed(rejected(to_body(jws), nonces), "oct")


def test_garbage_jwk(rsa_key, nonces):
    """
    A JWK that does not parse is refused as malformed.
    """
    jwk = {"kty": "RSA", "n": "AA", "e": "AQAB"}
    jws = sign_jws(rsa_key.sign, protected_for(rsa_key, nonces.issue(), jwk=jwk), NEW_REG)
    assert_malformed(rejected(to_body(jws), nonces), "JWK")


def test_rsa_1024_refused(nonces):
    """
    RSA keys below 2048 bits are refused even with a valid signature.
    """
    private = rsa.generate_private_key(65537, 1024)
    jwk = josepy.JWKRSA(key=private.public_key()).to_json()
    jws = sign_jws(
        lambda data: josepy.RS256.sign(private, data),
        {"alg": "RS256", "jwk": jwk, "nonce": nonces.issue()},
        NEW_REG,
    )
    assert_malformed(rejected(to_body(jws), nonces), "2048")


def test_p521_refused(nonces):
    """
    P-521 is not an ACME key the upstream CAs accept.
    """
    private = ec.generate_private_key(ec.SECP521R1())
    jwk = josepy.JWKEC(key=private.public_key()).to_json()
    jws = sign_jws(
        lambda data: josepy.ES512.sign(private, data),
        {"alg": "ES512", "jwk": jwk, "nonce": nonces.issue()},
        NEW_REG,
    )
    assert_malformed(rejected(to_body(jws), nonces), "P-256")


def test_crit_header_refused(rsa_key, nonces):
    """
    Critical extensions the gateway does not understand must not be ignored.
    """
    jws = sign_jws(
        rsa_key.sign, protected_for(rsa_key, nonces.issue(), crit=["b64"], b64=False), NEW_REG
    )
    assert_malformed(rejected(to_body(jws), nonces), "critical")


# -- serialization -------------------------------------------------------------------


def test_compact_serialization(rsa_key, nonces):
    """
    The compact form is refused; v1 took flattened JSON only.
    """
    jws = json.loads(sign_v1(rsa_key, NEW_REG, nonces.issue()))
    compact = f"{jws['protected']}.{jws['payload']}.{jws['signature']}".encode()
    assert_malformed(rejected(compact, nonces), "compact")


def test_several_signatures(rsa_key, p256_key, nonces):
    """
    A general JWS with two signatures is refused, even if both are valid.
    """
    nonce = nonces.issue()
    first = sign_jws(rsa_key.sign, protected_for(rsa_key, nonce), NEW_REG)
    second = sign_jws(p256_key.sign, protected_for(p256_key, nonce), NEW_REG)
    general = {
        "payload": first["payload"],
        "signatures": [
            {"protected": first["protected"], "signature": first["signature"]},
            {"protected": second["protected"], "signature": second["signature"]},
        ],
    }
    assert_malformed(rejected(to_body(general), nonces), "Too many signatures")


@pytest.mark.parametrize(
    "body",
    [b"", b"not json", b"{", b"\xff\xfe{}", b'{"protected": NaN}', b"[" * 100_000 + b"]" * 100_000],
)
def test_body_not_json(body, nonces):
    """
    A body that is not JSON (or too deep to parse safely) is malformed.
    """
    assert_malformed(rejected(body, nonces), "Parse error reading JWS")


@pytest.mark.parametrize("body", [b"[]", b'"jws"', b"42", b"null"])
def test_body_not_object(body, nonces):
    """
    A JSON body that is not an object is malformed.
    """
    assert_malformed(rejected(body, nonces), "Parse error reading JWS")


@pytest.mark.parametrize("member", ["protected", "payload", "signature"])
def test_missing_or_bad_member(rsa_key, nonces, member):
    """
    Each of ``protected``, ``payload`` and ``signature`` must be present and
    base64url.
    """
    jws = json.loads(sign_v1(rsa_key, NEW_REG, nonces.issue()))
    del jws[member]
    assert_malformed(rejected(to_body(jws), nonces), member)
    jws[member] = "not*base64"
    assert_malformed(rejected(to_body(jws), nonces), member)


def test_unprotected_header_not_object(rsa_key, nonces):
    """
    The unprotected header must be a JSON object.
    """
    jws = json.loads(sign_v1(rsa_key, NEW_REG, nonces.issue()))
    jws["header"] = ["alg"]
    assert_malformed(rejected(to_body(jws), nonces), "unprotected header")


# -- nonce ---------------------------------------------------------------------------


@pytest.mark.parametrize("jwk_in", JWK_PLACEMENTS)
def test_missing_nonce(rsa_key, nonces, jwk_in):
    """
    No nonce is ``badNonce``, with Boulder's wording.
    """
    problem = rejected(sign_v1(rsa_key, NEW_REG, None, jwk_in=jwk_in), nonces)
    assert (problem.status, problem.code) == (400, "badNonce")
    assert problem.detail == "JWS has no anti-replay nonce"


def test_unknown_nonce(rsa_key, nonces):
    """
    A nonce the gateway never issued is ``badNonce``.
    """
    problem = rejected(sign_v1(rsa_key, NEW_REG, "bm90LWlzc3VlZA"), nonces)
    assert (problem.status, problem.code) == (400, "badNonce")
    assert problem.detail == "JWS has an invalid anti-replay nonce: bm90LWlzc3VlZA"


def test_verified_nonce_is_left_to_redeem(rsa_key, nonces):
    """
    Verification checks the nonce (authentic, unexpired) and hands it over
    to be redeemed; a replayed request is refused by that redemption (at the
    store, `tests/test_nonces.py`, and through the face, `test_v1_face.py`).
    """
    nonce = nonces.issue()
    body = sign_v1(rsa_key, NEW_REG, nonce)
    assert verify_v1_request(body, "new-reg", nonces).nonce == nonce
    assert fired(nonces.redeem(nonce)) is True
    assert fired(nonces.redeem(nonce)) is False


def test_expired_nonce(rsa_key, nonces, clock):
    """
    A nonce past its lifetime is ``badNonce``.
    """
    body = sign_v1(rsa_key, NEW_REG, nonces.issue())
    clock.advance(61)
    problem = rejected(body, nonces)
    assert (problem.status, problem.code) == (400, "badNonce")


def test_non_string_nonce(rsa_key, nonces):
    """
    A nonce that is not a string is invalid, not a crash.
    """
    jws = sign_jws(rsa_key.sign, protected_for(rsa_key, 12345), NEW_REG)
    problem = rejected(to_body(jws), nonces)
    assert (problem.status, problem.code) == (400, "badNonce")


def test_nonce_in_unprotected_header(rsa_key, nonces):
    """
    An unsigned nonce is refused outright, as go-jose did.
    """
    jws = sign_jws(
        rsa_key.sign,
        {"alg": "RS256", "jwk": rsa_key.public_jwk_json},
        NEW_REG,
        header={"nonce": nonces.issue()},
    )
    assert_malformed(rejected(to_body(jws), nonces), "nonce")


# -- payload and resource -----------------------------------------------------------------


def test_resource_missing(rsa_key, nonces):
    """
    Every v1 payload must name its resource.
    """
    problem = rejected(sign_v1(rsa_key, {"contact": []}, nonces.issue()), nonces)
    assert_malformed(problem)
    assert problem.detail == "Request payload does not specify a resource"


def test_resource_other_endpoint(rsa_key, nonces):
    """
    A payload for another endpoint is refused with Boulder's wording.
    """
    problem = rejected(sign_v1(rsa_key, {"resource": "new-cert"}, nonces.issue()), nonces)
    assert_malformed(problem)
    assert problem.detail == (
        "JWS resource payload does not match the HTTP resource: new-cert != new-reg"
    )


def test_resource_not_string(rsa_key, nonces):
    """
    A non-string resource matches nothing.
    """
    problem = rejected(sign_v1(rsa_key, {"resource": ["new-reg"]}, nonces.issue()), nonces)
    assert_malformed(problem, "does not match")


@pytest.mark.parametrize(
    "raw", [b"", b"not json", b"\xff\xfe", b'{"resource": "new-reg", "x": NaN}']
)
def test_payload_not_json(rsa_key, nonces, raw):
    """
    A payload that is not UTF-8 JSON is malformed.
    """
    jws = sign_jws(rsa_key.sign, protected_for(rsa_key, nonces.issue()), raw)
    assert_malformed(rejected(to_body(jws), nonces), "JSON")


@pytest.mark.parametrize("raw", [b"[]", b'"new-reg"', b"42", b"null", b'["resource", "new-reg"]'])
def test_payload_not_object(rsa_key, nonces, raw):
    """
    A JSON payload that is not an object is malformed.
    """
    jws = sign_jws(rsa_key.sign, protected_for(rsa_key, nonces.issue()), raw)
    assert_malformed(rejected(to_body(jws), nonces), "object")


def test_payload_deeply_nested(rsa_key, nonces):
    """
    A payload nested 100 000 deep is refused cleanly, not with a
    RecursionError.
    """
    raw = b'{"resource": "new-reg", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    jws = sign_jws(rsa_key.sign, protected_for(rsa_key, nonces.issue()), raw)
    assert_malformed(rejected(to_body(jws), nonces), "JSON")


def test_payload_depth_limit(rsa_key, nonces):
    """
    Nesting up to ``max_depth`` is accepted and one more level is not;
    brackets inside strings do not count.
    """

    def nested(levels: int) -> dict:
        value: object = "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["
        for _ in range(levels - 1):  # the object itself is one level
            value = [value]
        return {"resource": "new-reg", "x": value}

    body = sign_v1(rsa_key, nested(32), nonces.issue())
    assert verify_v1_request(body, "new-reg", nonces, max_depth=32)
    body = sign_v1(rsa_key, nested(33), nonces.issue())
    assert_malformed(rejected(body, nonces), "JSON")


# -- nothing but V1Problem, ever -----------------------------------------------------------

_FUZZ_CLOCK = Clock()
_FUZZ_NONCES = NonceIssuer(_FUZZ_CLOCK, SQLiteStore.inline(clock=_FUZZ_CLOCK))
_FUZZ_KEY = AccountKey.from_private_key(ec.generate_private_key(ec.SECP256R1()))

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)
jwk_values = (
    st.just(_FUZZ_KEY.public_jwk_json)
    | st.builds(lambda alg: dict(_FUZZ_KEY.public_jwk_json, alg=alg), json_values)
    | st.builds(
        dict,
        kty=st.sampled_from(["RSA", "EC", "oct", "OKP"]) | json_values,
        n=st.text(max_size=12) | json_values,
        e=st.text(max_size=6) | json_values,
        crv=st.sampled_from(["P-256", "P-384", "P-521"]) | json_values,
        x=st.text(max_size=50),
        y=st.text(max_size=50),
    )
    | json_values
)
header_members = st.fixed_dictionaries(
    {},
    optional={
        "alg": st.sampled_from(["RS256", "ES256", "ES384", "none", "HS256", ""]) | json_values,
        "jwk": jwk_values,
        "nonce": st.text(max_size=30) | json_values,
        "kid": json_values,
        "url": json_values,
        "crit": json_values,
    },
) | st.dictionaries(st.text(max_size=5), json_values, max_size=4)


def b64_of(values) -> st.SearchStrategy:
    """
    base64url of a JSON encoding of ``values``, or arbitrary text.
    """
    return values.map(lambda value: b64url(json.dumps(value).encode())) | st.text(max_size=30)


jws_members = {
    "protected": b64_of(header_members),
    "payload": b64_of(json_values) | b64_of(st.just({"resource": "new-reg"})),
    "signature": st.binary(max_size=100).map(b64url) | json_values,
}
flattened_jws = st.fixed_dictionaries(
    jws_members, optional={"header": header_members | json_values}
) | st.fixed_dictionaries(
    {},
    optional=dict(
        jws_members, header=header_members | json_values, signatures=st.lists(json_values, max_size=2)
    ),
)


def assert_only_v1_problem(body: bytes) -> None:
    """
    ``body`` is refused with a 4xx v1 problem, and nothing else escapes.
    """
    try:
        verify_v1_request(body, "new-reg", _FUZZ_NONCES)
    except V1Problem as problem:
        assert 400 <= problem.status < 500
        assert problem.type.startswith("urn:acme:error:")
    else:  # pragma: no cover - a random body never carries a valid signature
        raise AssertionError("an arbitrary body verified")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_arbitrary_bytes(body):
    """
    Arbitrary bytes only ever give a 4xx V1Problem.
    """
    assert_only_v1_problem(body)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_fuzz_arbitrary_json(value):
    """
    Arbitrary JSON documents only ever give a 4xx V1Problem.
    """
    assert_only_v1_problem(json.dumps(value).encode())


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(flattened_jws)
def test_fuzz_jws_shaped(jws):
    """
    Objects shaped like a JWS, with arbitrary headers, keys and members, only
    ever give a 4xx V1Problem.
    """
    assert_only_v1_problem(json.dumps(jws).encode())


@settings(max_examples=300, deadline=None)
@given(json_values, st.sampled_from(JWK_PLACEMENTS))
def test_fuzz_signed_arbitrary_payload(payload, jwk_in):
    """
    Correctly signed requests with a fresh nonce and an arbitrary JSON
    payload pass only when they name the resource, and otherwise give a 4xx
    V1Problem.
    """
    body = sign_v1(_FUZZ_KEY, payload, _FUZZ_NONCES.issue(), jwk_in=jwk_in)
    try:
        verified = verify_v1_request(body, "new-reg", _FUZZ_NONCES)
    except V1Problem as problem:
        assert (problem.status, problem.code) == (400, "malformed")
    else:
        assert verified.payload == payload
        assert payload["resource"] == "new-reg"


_VALID_BODY = sign_v1(_FUZZ_KEY, NEW_REG, "fuzz-nonce-never-issued", jwk_in="both")


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_fuzz_mutated_valid_request(data):
    """
    A real request with bytes flipped, cut or inserted only ever gives a 4xx
    V1Problem.
    """
    body = bytearray(_VALID_BODY)
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(0, len(body) - 1))
        action = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        if action == "flip":
            body[position] ^= data.draw(st.integers(1, 255))
        elif action == "cut":
            del body[position:position + data.draw(st.integers(1, 20))]
        else:
            body[position:position] = data.draw(st.binary(min_size=1, max_size=5))
        if not body:
            break
    assert_only_v1_problem(bytes(body))
