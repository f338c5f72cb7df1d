"""
`gateway.v1.nonces.NonceIssuer` at its edges (issue 21): expiry at the exact
instant, nonces of another key or altered by one character, the shape of a
nonce, and the settings' bounds and words.  Redemption goes to a store
(`SQLiteStore.inline`: every Deferred has fired when the call returns).
"""

from __future__ import annotations

import pytest
from twisted.internet import defer
from twisted.internet.task import Clock

from gateway.store.sqlite import SQLiteStore
from gateway.v1.nonces import NonceIssuer


def _issuer(clock: Clock, **settings) -> NonceIssuer:
    return NonceIssuer(clock, SQLiteStore.inline(clock=clock), **settings)


def _redeem(issuer: NonceIssuer, nonce: object) -> bool:
    done = []
    defer.Deferred.fromCoroutine(issuer.redeem(nonce)).addBoth(done.append)
    assert done, "the inline store answers at once"
    if isinstance(done[0], BaseException):
        raise done[0]
    return done[0]


def test_a_nonce_expires_at_the_instant_its_lifetime_ends():
    clock = Clock()
    issuer = _issuer(clock, lifetime=60)
    before, at = issuer.issue(), issuer.issue()
    clock.advance(59.5)
    assert _redeem(issuer, before) is True
    clock.advance(0.5)
    assert issuer.check(at) is None
    assert _redeem(issuer, at) is False


def test_each_nonce_is_redeemed_once():
    clock = Clock()
    issuer = _issuer(clock)
    nonce = issuer.issue()
    assert [_redeem(issuer, nonce), _redeem(issuer, nonce)] == [True, False]


def test_another_key_or_one_changed_character_is_refused():
    clock = Clock()
    issuer = _issuer(clock, key=b"k" * 32)
    other = _issuer(clock, key=b"o" * 32)
    nonce = issuer.issue()
    assert other.check(nonce) is None
    changed = nonce[:-1] + ("A" if nonce[-1] != "A" else "B")
    assert issuer.check(changed) is None
    assert issuer.check(nonce[:-1]) is None
    assert issuer.check(12345) is None
    assert issuer.check("*" * len(nonce)) is None
    assert issuer.check(nonce) is not None


def test_the_expiry_is_the_issue_second_plus_the_lifetime():
    clock = Clock()
    clock.advance(1000.7)
    issuer = _issuer(clock, lifetime=30)
    assert issuer.check(issuer.issue()) == 1000 + 30 + 1


@pytest.mark.parametrize("value", [0, -1.5])
def test_a_lifetime_that_is_not_positive_is_refused_by_name(value):
    with pytest.raises(ValueError) as raised:
        _issuer(Clock(), lifetime=value)
    assert str(raised.value) == f"lifetime must be positive, not {value!r}"


def test_nonces_are_32_characters():
    """24 bytes (issue time, random, HMAC tag), base64url without padding."""
    issuer = _issuer(Clock())
    nonces = {issuer.issue() for _ in range(50)}
    assert len(nonces) == 50
    assert {len(n) for n in nonces} == {32}
