"""
The body of an upstream request (`gateway.keys.jose.sign_request`): the same
bytes the generic path gave (a header dict through ``json.dumps``, the JWS
through ``json.dumps``), from pieces of the key built once, with no JSON
encoder run but the payload's.
"""

from __future__ import annotations

import json

from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import given, settings, strategies as st

from gateway.keys import jose
from gateway.keys.jose import AccountKey, b64url_decode, sign_flattened, sign_request

EC_KEY = AccountKey.from_private_key(ec.generate_private_key(ec.SECP256R1()))
EC384_KEY = AccountKey.from_private_key(ec.generate_private_key(ec.SECP384R1()))
RSA_KEY = AccountKey.from_private_key(rsa.generate_private_key(65537, 2048))


def generic_body(key, payload, nonce, url, kid):
    """What the upstream client sent before: sign_flattened, then json.dumps."""
    protected = {"nonce": nonce, "url": url}
    if kid is None:
        protected["jwk"] = key.public_jwk_json
    else:
        protected["kid"] = kid
    return sign_flattened(key, payload, protected)


def without_signature(body: bytes):
    jws = json.loads(body)
    return body.replace(jws["signature"].encode(), b"SIG"), jws


@settings(max_examples=200, deadline=None)
@given(
    key=st.sampled_from([EC_KEY, EC384_KEY, RSA_KEY]),
    nonce=st.text(max_size=30),
    url=st.text(max_size=60),
    kid=st.one_of(st.none(), st.text(max_size=40)),
    payload=st.one_of(st.none(), st.just({}), st.dictionaries(st.text(max_size=5),
                                                              st.text(max_size=10), max_size=3)),
)
def test_the_body_is_the_bytes_the_generic_path_sent(key, nonce, url, kid, payload):
    """
    Quotes, backslashes, control and non-ASCII characters included: the
    protected header, payload and framing are byte for byte those of
    ``json.dumps`` (the signature differs only where ECDSA is randomized).
    """
    body = sign_request(key, payload, nonce, url, kid)
    expected = json.dumps(generic_body(key, payload, nonce, url, kid)).encode("utf-8")
    got, jws = without_signature(body)
    want, _ = without_signature(expected)
    assert got == want
    assert key.algorithm.verify(key.private_key.public_key(),
                                f"{jws['protected']}.{jws['payload']}".encode(),
                                b64url_decode(jws["signature"]))
    if key is RSA_KEY:  # deterministic: the whole body is the same
        assert body == expected


def test_a_header_names_the_key_or_the_account():
    with_kid = json.loads(b64url_decode(json.loads(
        sign_request(EC_KEY, None, "n-1", "https://ca.test/a", "https://ca.test/acct/1"))["protected"]))
    assert with_kid == {"alg": "ES256", "kid": "https://ca.test/acct/1", "nonce": "n-1",
                        "url": "https://ca.test/a"}
    with_jwk = json.loads(b64url_decode(json.loads(
        sign_request(RSA_KEY, {"a": 1}, "n-2", "https://ca.test/new-acct"))["protected"]))
    assert with_jwk == {"alg": "RS256", "jwk": RSA_KEY.public_jwk_json, "nonce": "n-2",
                        "url": "https://ca.test/new-acct"}


class CountingEncodings:
    def __init__(self, monkeypatch):
        self.encoded = []
        dumps = json.dumps

        def counted(obj, *args, **kwargs):
            self.encoded.append(obj)
            return dumps(obj, *args, **kwargs)

        monkeypatch.setattr(jose.json, "dumps", counted)


def test_a_post_as_get_runs_no_json_encoder(monkeypatch):
    encodings = CountingEncodings(monkeypatch)
    for n in range(5):
        sign_request(EC_KEY, None, f"nonce-{n}", "https://ca.test/order/1", "https://ca.test/acct/1")
    sign_request(EC_KEY, {"csr": "AAAA"}, "nonce-5", "https://ca.test/finalize/1",
                 "https://ca.test/acct/1")
    # the header and the JWS took one encoding each before: only the payload's is left
    assert encodings.encoded == [{"csr": "AAAA"}]


def test_the_jwk_is_made_json_once_per_key_not_per_request(monkeypatch):
    calls = []
    to_json = type(EC_KEY.jwk).to_json

    def counted(jwk):
        calls.append(jwk)
        return to_json(jwk)

    monkeypatch.setattr(type(EC_KEY.jwk), "to_json", counted)
    key = AccountKey.from_private_key(ec.generate_private_key(ec.SECP256R1()))
    assert calls  # made JSON when the key was wrapped (its thumbprint, its members)
    calls.clear()
    for n in range(5):
        sign_request(key, {}, f"nonce-{n}", "https://ca.test/new-acct")
        assert key.public_jwk_json["kty"] == "EC"
    assert calls == []  # ten before: one per header, one per read


def test_the_jwk_members_handed_out_are_a_copy():
    members = EC_KEY.public_jwk_json
    members["x"] = "changed"
    assert EC_KEY.public_jwk_json["x"] != "changed"
