"""
`gateway.v1.jws` and strings that are no Unicode text (issue 21): JSON's
``"\\ud800"`` escape decodes to a lone surrogate, which no UTF-8 encoder
takes, so a payload holding one — as a value or a key, at any depth — is a
400 ``malformed`` naming it, while text outside ASCII (a surrogate *pair*
included) passes; and the verified request carries the nonce it was signed
with, for the caller to redeem.
"""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from twisted.internet.task import Clock
from twisted.trial import unittest

from gateway.keys.jose import AccountKey
from gateway.store.sqlite import SQLiteStore
from gateway.v1.jws import NotUnicode, decode_json_payload, loads_bounded, verify_v1_request
from gateway.v1.nonces import NonceIssuer
from gateway.v1.problems import V1Problem
from tests.support.v1_signing import sign_jws, to_body

KEY = AccountKey.from_private_key(ec.generate_private_key(ec.SECP256R1()))
NOT_UNICODE = ("Request payload holds a string that is not Unicode text (a lone surrogate, "
               "such as \\ud800)")


@pytest.fixture
def nonces():
    clock = Clock()
    return NonceIssuer(clock, SQLiteStore.inline(clock=clock))


def _signed(nonces, raw_payload: bytes, nonce=None) -> bytes:
    protected = {"alg": "ES256", "jwk": KEY.public_jwk_json, "nonce": nonce or nonces.issue()}
    return to_body(sign_jws(KEY.sign, protected, raw_payload))


@pytest.mark.parametrize("payload", [
    rb'{"resource": "new-reg", "contact": "\ud800"}',
    rb'{"resource": "new-reg", "\udfff": 1}',
    rb'{"resource": "new-reg", "contact": ["mailto:a@example.test", "\ud800x"]}',
    rb'{"resource": "new-reg", "x": [{"y": {"\ud800": "z"}}]}',
    rb'{"resource": "new-reg", "x": [[["caf\u00e9", "\udc00"]]]}',
])
def test_a_lone_surrogate_anywhere_in_the_payload_is_refused_by_name(nonces, payload):
    with pytest.raises(V1Problem) as raised:
        verify_v1_request(_signed(nonces, payload), "new-reg", nonces)
    assert (raised.value.status, raised.value.code, raised.value.detail) == (400, "malformed", NOT_UNICODE)
    with pytest.raises(NotUnicode, match="lone surrogate"):
        loads_bounded(payload)


def test_text_outside_ascii_passes(nonces):
    payload = rb'{"resource": "new-reg", "caf\u00e9": ["\ud83d\ude00", {"k": "\u00fc"}], "n": 1}'
    verified = verify_v1_request(_signed(nonces, payload), "new-reg", nonces)
    assert verified.payload == {"resource": "new-reg", "café": ["\U0001F600", {"k": "ü"}], "n": 1}
    assert decode_json_payload(payload) == verified.payload


def test_a_payload_that_is_no_json_is_still_said_so(nonces):
    with pytest.raises(V1Problem) as raised:
        decode_json_payload(b'{"resource": ')
    assert raised.value.detail == "Request payload did not parse as JSON"


def test_the_verified_request_carries_its_nonce_unredeemed(nonces):
    nonce = nonces.issue()
    verified = verify_v1_request(_signed(nonces, b'{"resource": "new-reg"}', nonce), "new-reg", nonces)
    assert verified.nonce == nonce
    assert nonces.check(nonce) is not None, "still to redeem"


class SurrogateWalkOnlyWhenPossible(unittest.SynchronousTestCase):
    """
    Parsed JSON is walked for lone surrogates only when it could hold one
    (`gateway.v1.jws.loads_bounded`): a ``\\u`` escape in the text, or a
    ``str`` given that is not ASCII.  A signed v1 request without escapes
    is not walked at all (three walks per request before); every lone
    surrogate is still refused.
    """

    def setUp(self):
        from gateway.v1 import jws

        self.walks = []
        walk = jws._reject_lone_surrogates
        self.patch(jws, "_reject_lone_surrogates",
                   lambda value: (self.walks.append(value), walk(value))[1])

    def test_no_walk_for_signed_requests(self):
        from cryptography.hazmat.primitives.asymmetric import ec
        from twisted.internet.task import Clock

        from gateway.keys.jose import AccountKey
        from gateway.v1.jws import verify_v1_request
        from gateway.v1.nonces import NonceIssuer
        from tests.support.v1_signing import sign_v1

        clock = Clock()
        clock.advance(1733220000)
        nonces = NonceIssuer(clock, used=None)
        key = AccountKey.from_private_key(ec.generate_private_key(ec.SECP256R1()))
        for _ in range(20):
            body = sign_v1(key, {"resource": "new-reg", "contact": ["mailto:admin@example.test"]},
                           nonces.issue())
            verified = verify_v1_request(body, "new-reg", nonces)
            self.assertEqual(verified.payload["contact"], ["mailto:admin@example.test"])
        self.assertEqual(self.walks, [])

    def test_walked_only_when_a_surrogate_could_be_there(self):
        from gateway.v1.jws import loads_bounded

        unwalked = [b'{"a": "x"}', '{"a": "x"}'.encode(), '{"a": "\u00e9"}'.encode("utf-8"),
                    '{"a": "x"}', '{"a": "\\\\n"}']
        for text in unwalked:
            loads_bounded(text)
        self.assertEqual(self.walks, [])
        walked = [b'{"a": "\\u00e9"}', '{"a": "\\u00e9"}', '{"a": "\u00e9"}']
        for text in walked:
            self.assertEqual(loads_bounded(text), {"a": "\u00e9"})
        self.assertEqual(len(self.walks), 3)

    def test_every_lone_surrogate_refused(self):
        from gateway.v1.jws import NotUnicode, loads_bounded

        for text in (b'{"a": "\\ud800"}', '{"a": "\\ud800"}', '{"a": "\ud800"}',
                     '{"\ud800": 1}', b'["\\udfff x"]', '["x", {"k": "\udc00\u00e9"}]'):
            with self.assertRaises(NotUnicode, msg=repr(text)):
                loads_bounded(text)
        with self.assertRaises(ValueError):  # UTF-8 for a surrogate: not UTF-8
            loads_bounded(b'{"a": "\xed\xa0\x80"}')
