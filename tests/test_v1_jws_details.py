"""
`gateway.v1.jws` at its edges (issue 21): the RSA size cap at 4096 bits, a
protected header that is JSON but not an object, nesting that is wide but
shallow or made of objects only, the bounded parser's own rules, and the
exact detail of every refusal (v1 clients show it to their users; Boulder's
words where it had them).
"""

from __future__ import annotations

import json

import josepy
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from twisted.internet.task import Clock
from twisted.trial import unittest

from gateway.keys.jose import AccountKey, b64url
from gateway.v1.jws import (
    MAX_RSA_BITS, _describe, _nesting_depth, decode_json_payload, loads_bounded, verify_jws_signature,
    verify_v1_request,
)
from gateway.store.sqlite import SQLiteStore
from gateway.v1.nonces import NonceIssuer
from gateway.v1.problems import V1Problem
from tests.support.v1_signing import sign_jws, sign_v1, to_body

NEW_REG = {"resource": "new-reg"}
KEY = AccountKey.from_private_key(ec.generate_private_key(ec.SECP256R1()))
PARSE = "Parse error reading JWS"


@pytest.fixture
def nonces():
    clock = Clock()
    return NonceIssuer(clock, SQLiteStore.inline(clock=clock))


def detail(body: bytes, nonces, resource="new-reg", code="malformed") -> str:
    with pytest.raises(V1Problem) as raised:
        verify_v1_request(body, resource, nonces)
    assert (raised.value.status, raised.value.code) == (400, code)
    return raised.value.detail


def header(issued, **members):
    protected = {"alg": "ES256", "jwk": KEY.public_jwk_json, "nonce": issued}
    protected.update(members)
    return {k: v for k, v in protected.items() if v is not None}


def signed(nonces, payload=NEW_REG, sign=None, unprotected=None, **members) -> bytes:
    return to_body(sign_jws(sign or KEY.sign, header(nonces.issue(), **members), payload, unprotected))


# --------------------------------------------------------------------------
# Bounded JSON
# --------------------------------------------------------------------------

def nested_objects(levels: int) -> str:
    return '{"a":' * (levels - 1) + "{}" + "}" * (levels - 1)


def test_pure_object_nesting_is_bounded_too():
    assert loads_bounded(nested_objects(32), 32)
    with pytest.raises(ValueError, match="^JSON nested deeper than 32 levels$"):
        loads_bounded(nested_objects(33), 32)


def test_wide_shallow_json_passes_the_depth_limit():
    """More brackets than the limit, none deep: the count is only a pre-check."""
    wide = "[" + ",".join(["[]"] * 200) + "]"
    assert loads_bounded(wide, 2) == [[]] * 200
    objects = "[" + ",".join(['{"a":{}}'] * 40) + "]"
    assert len(loads_bounded(objects, 3)) == 40
    with pytest.raises(ValueError):
        loads_bounded(objects, 2)


def test_exactly_the_limit_in_brackets():
    """max_depth brackets in all: the deep scan is skipped, and that is right."""
    assert loads_bounded("[" * 4 + "]" * 4, 4) == [[[[]]]]
    with pytest.raises(ValueError, match="deeper than 3"):
        loads_bounded("[" * 4 + "]" * 4, 3)


@pytest.mark.parametrize("text, depth", [
    ("", 0), ("1", 0), ("[", 1), ("]", 1), ("[]", 1), ("[][]", 1), ("[[]]", 2), ("[{}]", 2),
    ('["[[[[", {"a": "}}}"}]', 2), ('["\\"[[[["]', 1), ('"[[[[', 0), ("[[]][[[]]]", 3),
    ('{"a": [1, {"b": [2]}]}', 4),
])
def test_nesting_depth_outside_strings(text, depth):
    assert _nesting_depth(text) == depth


def test_brackets_in_strings_do_not_count():
    text = json.dumps(["[" * 50, "{" * 50])
    assert loads_bounded(text, 1) == ["[" * 50, "{" * 50]


def test_the_recursive_parser_never_overflows():
    """With the bound lifted, Python's own recursion limit is still a ValueError."""
    text = "[" * 100_000 + "]" * 100_000
    with pytest.raises(ValueError, match="^JSON nested too deeply$"):
        loads_bounded(text, max_depth=10**9)


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_non_json_constants_are_refused(constant):
    with pytest.raises(ValueError, match=f"^{constant} is not JSON$"):
        loads_bounded(f"[{constant}]")


def test_bytes_must_be_utf8():
    assert loads_bounded('{"a": "é"}'.encode("utf-8")) == {"a": "é"}
    with pytest.raises(ValueError):
        loads_bounded(b'{"a": "\xff"}')


def test_payload_decoding_in_words():
    assert decode_json_payload(b'{"resource": "x"}') == {"resource": "x"}
    for raw, words in [(b"[1]", "Request payload must be a JSON object"),
                       (b"nope", "Request payload did not parse as JSON"),
                       (b"\xff", "Request payload did not parse as JSON"),
                       (nested_objects(5).encode(), "Request payload did not parse as JSON")]:
        with pytest.raises(V1Problem) as raised:
            decode_json_payload(raw, max_depth=4)
        assert raised.value.detail == words


def test_describe_echoes_short_values_and_cuts_long_ones():
    assert _describe("RS256") == "RS256"
    assert _describe(7) == "7"
    assert _describe(None) == "null"
    assert _describe("x" * 100) == "x" * 100
    assert _describe("x" * 101) == "x" * 100 + "..."
    assert _describe(["y" * 200]) == json.dumps(["y" * 200])[:100] + "..."


# --------------------------------------------------------------------------
# The body and the JWS structure
# --------------------------------------------------------------------------

def test_body_refusals_in_words(nonces):
    assert detail(b"\xff\xfe", nonces) == f"{PARSE}: body is not UTF-8 text"
    assert detail(b"a.b.c", nonces) == (
        f"{PARSE}: the compact serialization is not supported; send the flattened JSON serialization")
    assert detail(b"  eyJ.eyJ.sig  ", nonces).startswith(f"{PARSE}: the compact serialization")
    assert detail(b"{", nonces) == f"{PARSE}: body is not JSON"
    assert detail(b"[]", nonces) == f"{PARSE}: body is not a JSON object"


def test_structure_refusals_in_words(nonces):
    good = json.loads(signed(nonces))
    assert detail(to_body({k: v for k, v in good.items() if k != "protected"}), nonces) == (
        f"{PARSE}: missing or non-string 'protected'")
    assert detail(to_body(dict(good, payload=5)), nonces) == f"{PARSE}: missing or non-string 'payload'"
    assert detail(to_body(dict(good, signature="%%")), nonces) == f"{PARSE}: 'signature' is not base64url"
    assert detail(to_body({"signatures": []}), nonces) == f"{PARSE}: empty or invalid 'signatures'"
    assert detail(to_body({"signatures": {}}), nonces) == f"{PARSE}: empty or invalid 'signatures'"
    assert detail(to_body({"signatures": [good, good]}), nonces) == "Too many signatures in POST body"
    for member in ("signature", "protected", "header"):
        mixed = {"payload": good["payload"], "signatures": [good], member: good.get(member, {})}
        assert detail(to_body(mixed), nonces) == (
            f"{PARSE}: mixes the general and flattened serializations")
    assert detail(to_body({"payload": good["payload"], "signatures": ["x"]}), nonces) == (
        f"{PARSE}: invalid 'signatures' entry")


def test_the_general_serialization_keeps_only_the_jws_members(nonces):
    good = json.loads(signed(nonces))
    entry = {"protected": good["protected"], "signature": good["signature"], "extra": 1}
    verified = verify_v1_request(to_body({"payload": good["payload"], "signatures": [entry]}),
                                 "new-reg", nonces)
    assert verified.payload == NEW_REG


def test_verify_jws_signature_takes_only_a_json_object():
    with pytest.raises(V1Problem) as raised:
        verify_jws_signature(["not", "a", "jws"])  # type: ignore[arg-type]
    assert raised.value.detail == f"{PARSE}: the JWS must be a JSON object"


# --------------------------------------------------------------------------
# Headers
# --------------------------------------------------------------------------

def raw_protected(nonces, protected_bytes: bytes) -> bytes:
    payload = b64url(json.dumps(NEW_REG).encode())
    protected = b64url(protected_bytes)
    signature = b64url(KEY.sign(f"{protected}.{payload}".encode()))
    return to_body({"protected": protected, "payload": payload, "signature": signature})


@pytest.mark.parametrize("protected, words", [
    (b"[]", "protected header is not a JSON object"),
    (b"\"jwk\"", "protected header is not a JSON object"),
    (b"{", "protected header is not JSON"),
    (b"\xff", "protected header is not JSON"),
    (nested_objects(40).encode(), "protected header is not JSON"),
])
def test_a_protected_header_must_be_a_json_object(nonces, protected, words):
    assert detail(raw_protected(nonces, protected), nonces) == f"{PARSE}: {words}"


def test_header_refusals_in_words(nonces):
    assert detail(to_body(dict(json.loads(signed(nonces)), header=[])), nonces) == (
        f"{PARSE}: unprotected header is not a JSON object")
    assert detail(signed(nonces, unprotected={"nonce": "x"}), nonces) == (
        f"{PARSE}: nonce parameter included in unprotected header")
    assert detail(signed(nonces, crit=["b64"]), nonces) == (
        f"{PARSE}: critical header extensions are not supported")
    assert detail(signed(nonces, unprotected={"crit": ["b64"]}), nonces) == (
        f"{PARSE}: critical header extensions are not supported")
    assert detail(signed(nonces, jwk=None), nonces) == "No JWK in JWS header"
    assert detail(signed(nonces, jwk=None, kid="https://ca/acct/1"), nonces) == (
        "No JWK in JWS header (kid is not supported by the ACME v1 API)")
    assert detail(signed(nonces, unprotected={"alg": "RS256"}), nonces) == (
        "JWS header parameter 'alg' differs between the protected and unprotected headers")


def test_a_member_in_both_headers_with_the_same_value_is_fine(nonces):
    body = signed(nonces, unprotected={"alg": "ES256", "jwk": KEY.public_jwk_json, "extra": 1})
    assert verify_v1_request(body, "new-reg", nonces).protected["alg"] == "ES256"


def test_alg_and_jwk_from_the_unprotected_header(nonces):
    """certbot before 0.14: only the nonce protected."""
    body = to_body(sign_jws(KEY.sign, {"nonce": nonces.issue()}, NEW_REG,
                            {"alg": "ES256", "jwk": KEY.public_jwk_json}))
    verified = verify_v1_request(body, "new-reg", nonces)
    assert (verified.algorithm, verified.thumbprint) == ("ES256", KEY.thumbprint)


# --------------------------------------------------------------------------
# Keys and algorithms
# --------------------------------------------------------------------------

def rsa_body(nonces, private) -> bytes:
    jwk = josepy.JWKRSA(key=private.public_key()).to_json()
    return to_body(sign_jws(lambda data: josepy.RS256.sign(private, data),
                            {"alg": "RS256", "jwk": jwk, "nonce": nonces.issue()}, NEW_REG))


def test_rsa_keys_up_to_4096_bits_are_taken_and_larger_are_not(nonces):
    assert MAX_RSA_BITS == 4096
    verified = verify_v1_request(rsa_body(nonces, rsa.generate_private_key(65537, 4096)), "new-reg", nonces)
    assert verified.algorithm == "RS256"
    assert detail(rsa_body(nonces, rsa.generate_private_key(65537, 4104)), nonces) == (
        "RSA key of 4104 bits is too large; at most 4096 are allowed")


def test_key_refusals_in_words(nonces):
    assert detail(signed(nonces, jwk="key"), nonces) == "JWK in JWS header is not a JSON object"
    assert detail(signed(nonces, jwk={"kty": "OKP", "crv": "Ed25519", "x": "AA"}), nonces) == (
        "JWK key type OKP is not supported (RSA or EC only)")
    assert detail(signed(nonces, jwk={"n": "AA"}), nonces) == (
        "JWK key type null is not supported (RSA or EC only)")
    leaked = dict(KEY.public_jwk_json, d="AA", p="AA", q="AA")
    assert detail(signed(nonces, jwk=leaked), nonces) == (
        "JWK in JWS header contains private key members: d, p, q")
    assert detail(signed(nonces, jwk={"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"}), nonces) == (
        "JWK in JWS header is invalid")
    small = rsa.generate_private_key(65537, 1024)
    assert detail(rsa_body(nonces, small), nonces).startswith("Unacceptable JWK in JWS header: ")


def test_algorithm_refusals_in_words(nonces):
    assert detail(signed(nonces, alg="RS256"), nonces) == (
        "JWS signature algorithm RS256 does not fit the key; expected 'ES256'")
    assert detail(signed(nonces, alg=None), nonces) == (
        "JWS signature algorithm null does not fit the key; expected 'ES256'")
    assert detail(signed(nonces, alg="A" * 150), nonces) == (
        "JWS signature algorithm " + "A" * 100 + "... does not fit the key; expected 'ES256'")
    jwk = dict(KEY.public_jwk_json, alg="ES384")
    assert detail(signed(nonces, jwk=jwk), nonces) == (
        "JWK algorithm ES384 does not fit the key; expected 'ES256'")
    assert verify_v1_request(signed(nonces, jwk=dict(KEY.public_jwk_json, alg="ES256")), "new-reg", nonces)
    assert detail(signed(nonces, sign=lambda data: b"\x00" * 64), nonces) == "JWS verification error"
    assert detail(signed(nonces, sign=lambda data: b"\x00"), nonces) == "JWS verification error"


# --------------------------------------------------------------------------
# Nonce and resource
# --------------------------------------------------------------------------

def test_nonce_refusals_in_words(nonces):
    assert detail(signed(nonces, nonce=""), nonces, code="badNonce") == "JWS has no anti-replay nonce"
    body = to_body(sign_jws(KEY.sign, {"alg": "ES256", "jwk": KEY.public_jwk_json}, NEW_REG))
    assert detail(body, nonces, code="badNonce") == "JWS has no anti-replay nonce"
    body = to_body(sign_jws(KEY.sign, header("forged"), NEW_REG))
    assert detail(body, nonces, code="badNonce") == "JWS has an invalid anti-replay nonce: forged"


def test_resource_refusals_in_words(nonces):
    assert detail(signed(nonces, payload={}), nonces) == "Request payload does not specify a resource"
    assert detail(signed(nonces, payload={"resource": ""}), nonces) == (
        "Request payload does not specify a resource")
    assert detail(signed(nonces, payload={"resource": "new-authz"}), nonces) == (
        "JWS resource payload does not match the HTTP resource: new-authz != new-reg")
    assert detail(signed(nonces, payload={"resource": ["new-reg"]}), nonces,
                  resource=("reg", "new-reg")) == (
        'JWS resource payload does not match the HTTP resource: ["new-reg"] != reg or new-reg')
    assert detail(signed(nonces, payload=[1]), nonces) == "Request payload must be a JSON object"


def test_a_verified_request_carries_what_was_signed(nonces):
    payload = {"resource": "reg", "contact": ["mailto:a@example.test"]}
    body = signed(nonces, payload=payload)
    raw = json.loads(body)["payload"]
    verified = verify_v1_request(body, ("new-reg", "reg"), nonces)
    assert verified.payload == payload
    assert b64url(verified.raw_payload) == raw
    assert verified.thumbprint == KEY.thumbprint
    assert verified.algorithm == "ES256"
    assert verified.protected["jwk"] == KEY.public_jwk_json
    assert verified.jwk.thumbprint() is not None


def test_the_general_serialization_keeps_the_unprotected_header_of_its_signature(nonces):
    """certbot < 0.14's layout (alg and jwk unprotected) in the general form."""
    flat = sign_jws(KEY.sign, {"nonce": nonces.issue()}, NEW_REG,
                    {"alg": "ES256", "jwk": KEY.public_jwk_json})
    general = {"payload": flat["payload"], "signatures": [
        {"protected": flat["protected"], "header": flat["header"], "signature": flat["signature"]}]}
    verified = verify_v1_request(to_body(general), "new-reg", nonces)
    assert verified.thumbprint == KEY.thumbprint


def test_a_verifier_that_raises_is_a_failed_signature(nonces, monkeypatch):
    """
    The fault path of "cryptography may raise rather than return False":
    whatever the algorithm raises, the request is refused, never accepted.
    """
    def raising(key, msg, sig):
        raise ValueError("odd input")

    monkeypatch.setattr(josepy.ES256, "verify", raising)
    assert detail(signed(nonces), nonces) == "JWS verification error"


def test_a_body_that_is_not_bytes_is_refused(nonces):
    with pytest.raises(V1Problem) as raised:
        verify_v1_request(signed(nonces).decode(), "new-reg", nonces)  # type: ignore[arg-type]
    assert raised.value.detail == f"{PARSE}: body is not UTF-8 text"


def test_the_depth_limit_applies_to_body_header_and_payload(nonces):
    deep = {"x": [[1]]}  # three levels inside an object
    flat = json.loads(signed(nonces))
    assert detail_at(to_body(dict(flat, header={})), nonces, 1) == f"{PARSE}: body is not JSON"
    assert detail_at(signed(nonces, x=[[1]]), nonces, 2) == f"{PARSE}: protected header is not JSON"
    assert detail_at(signed(nonces, payload=dict(NEW_REG, **deep)), nonces, 2) == (
        "Request payload did not parse as JSON")
    assert verify_v1_request(signed(nonces, payload=dict(NEW_REG, **deep)), "new-reg", nonces, max_depth=3)


def detail_at(body: bytes, nonces, max_depth: int) -> str:
    with pytest.raises(V1Problem) as raised:
        verify_v1_request(body, "new-reg", nonces, max_depth=max_depth)
    return raised.value.detail


class AccountKeysNotHashedPerRequest(unittest.SynchronousTestCase):
    """
    A verified request's thumbprint comes with its parsed key
    (`gateway.v1.jws._Key`): the JWK is not hashed per request to look the
    thumbprint up (josepy hashes a key through its public numbers).
    """

    def test_no_key_hash_per_request(self):
        import josepy
        from cryptography.hazmat.primitives.asymmetric import ec, rsa
        from twisted.internet.task import Clock

        from gateway.keys.jose import AccountKey
        from gateway.v1.jws import verify_v1_request
        from gateway.v1.nonces import NonceIssuer
        from tests.support.v1_signing import sign_v1

        clock = Clock()
        clock.advance(1733220000)
        nonces = NonceIssuer(clock, used=None)
        keys = [AccountKey.from_private_key(ec.generate_private_key(ec.SECP256R1())),
                AccountKey.from_private_key(rsa.generate_private_key(65537, 2048))]
        hashed = []
        for comparable in (josepy.util.ComparableECKey, josepy.util.ComparableRSAKey):
            original = comparable.__hash__

            def counting(key, original=original):
                hashed.append(key)
                return original(key)

            self.patch(comparable, "__hash__", counting)
        bodies = [sign_v1(key, {"resource": "new-authz"}, nonces.issue())
                  for _ in range(10) for key in keys]
        verify_v1_request(bodies[0], "new-authz", nonces)
        verify_v1_request(bodies[1], "new-authz", nonces)
        del hashed[:]
        for index, body in enumerate(bodies):
            verified = verify_v1_request(body, "new-authz", nonces)
            self.assertEqual(verified.thumbprint, keys[index % 2].thumbprint)
            self.assertEqual(verified.jwk, keys[index % 2].jwk)
        self.assertEqual(hashed, [])


class AccountKeysParsedOnce(unittest.SynchronousTestCase):
    """
    The JWK a client signs every request with is parsed, and its thumbprint
    computed, once (`gateway.v1.jws._parse_jwk`), not per POST.
    """

    def setUp(self):
        import josepy

        self.parsed, self.hashed = [], []
        from_json, thumbprint = josepy.JWK.from_json, josepy.JWK.thumbprint
        self.patch(josepy.JWK, "from_json", classmethod(
            lambda cls, value: (self.parsed.append(value), from_json.__func__(cls, value))[1]))
        self.patch(josepy.JWK, "thumbprint",
                   lambda jwk, *a, **kw: (self.hashed.append(jwk), thumbprint(jwk, *a, **kw))[1])

    def verify(self, key, nonces):
        from gateway.v1.jws import verify_v1_request
        from tests.support.v1_signing import sign_v1

        body = sign_v1(key, {"resource": "new-authz"}, nonces.issue())
        return verify_v1_request(body, "new-authz", nonces)

    def test_one_parse_and_one_thumbprint_per_key(self):
        from cryptography.hazmat.primitives.asymmetric import ec, rsa
        from twisted.internet.task import Clock

        from gateway.keys.jose import AccountKey, thumbprint
        from gateway.v1.nonces import NonceIssuer

        clock = Clock()
        clock.advance(1733220000)
        nonces = NonceIssuer(clock, used=None)
        keys = [AccountKey.from_private_key(ec.generate_private_key(ec.SECP256R1())),
                AccountKey.from_private_key(rsa.generate_private_key(65537, 2048))]
        del self.parsed[:], self.hashed[:]  # (the keys' own thumbprints)
        for _ in range(10):
            for key in keys:
                verified = self.verify(key, nonces)
                self.assertEqual(verified.thumbprint, key.thumbprint)
        self.assertEqual(len(self.parsed), 2)
        self.assertEqual(len(self.hashed), 2)
        self.assertEqual(thumbprint(verified.jwk), keys[1].thumbprint)

    def test_a_refused_key_is_refused_every_time(self):
        """
        A JWK with private members is refused on every request that sends
        it, with the same problem (refusals are not kept).
        """
        import json

        from cryptography.hazmat.primitives.asymmetric import ec

        from gateway.keys.jose import b64url
        from gateway.v1.jws import verify_with_jwk, parse_jws
        from gateway.v1.problems import V1Problem

        private = ec.generate_private_key(ec.SECP256R1())
        numbers = private.private_numbers()
        jwk = {"kty": "EC", "crv": "P-256",
               "x": b64url(numbers.public_numbers.x.to_bytes(32, "big")),
               "y": b64url(numbers.public_numbers.y.to_bytes(32, "big")),
               "d": b64url(numbers.private_value.to_bytes(32, "big"))}
        protected = b64url(json.dumps({"alg": "ES256", "jwk": jwk, "nonce": "n"}).encode())
        body = json.dumps({"protected": protected, "payload": b64url(b"{}"),
                           "signature": b64url(b"x" * 64)}).encode()
        for _ in range(3):
            with self.assertRaises(V1Problem) as raised:
                verify_with_jwk(parse_jws(body), jwk)
            self.assertIn("private key members: d", raised.exception.detail)


    def test_a_key_with_members_that_are_not_strings(self):
        """
        A JWK with a member that is no string (``key_ops``, ``ext``) is
        parsed, not kept, and verifies like the same key without it.
        """
        from cryptography.hazmat.primitives.asymmetric import ec
        from twisted.internet.task import Clock

        from gateway.keys.jose import AccountKey
        from gateway.v1.jws import verify_v1_request
        from gateway.v1.nonces import NonceIssuer

        clock = Clock()
        clock.advance(1733220000)
        nonces = NonceIssuer(clock, used=None)
        key = AccountKey.from_private_key(ec.generate_private_key(ec.SECP256R1()))
        jwk = dict(key.public_jwk_json, key_ops=["verify"], ext=True)
        del self.parsed[:], self.hashed[:]
        for _ in range(3):
            protected = {"alg": "ES256", "jwk": jwk, "nonce": nonces.issue()}
            body = to_body(sign_jws(key.sign, protected, b'{"resource": "new-authz"}'))
            verified = verify_v1_request(body, "new-authz", nonces)
            self.assertEqual(verified.thumbprint, key.thumbprint)
        self.assertEqual(len(self.parsed), 3)
