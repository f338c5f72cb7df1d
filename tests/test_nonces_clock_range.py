"""
`gateway.v1.nonces.NonceIssuer` across the range of its clock and lifetime
(issue 21): a nonce's issue time is an unsigned 32-bit count of seconds, so
nonces issued after 2038-01-19 (2^31 seconds, where a signed field would go
negative) are redeemed like any other; and a lifetime of a second or less
is still a lifetime.  Redemption goes to a store (`SQLiteStore.inline`).
"""

from __future__ import annotations

import pytest
from twisted.internet import defer
from twisted.internet.task import Clock

from gateway.store.sqlite import SQLiteStore
from gateway.v1.nonces import NonceIssuer

#: 2038-01-19T03:14:08Z, the first second a signed 32-bit time cannot hold.
_SIGNED_32_BIT_END = 2**31


def _issuer(clock: Clock, **settings) -> NonceIssuer:
    return NonceIssuer(clock, SQLiteStore.inline(clock=clock), **settings)


def _redeem(issuer: NonceIssuer, nonce: object) -> bool:
    done = []
    defer.Deferred.fromCoroutine(issuer.redeem(nonce)).addBoth(done.append)
    assert done, "the inline store answers at once"
    if isinstance(done[0], BaseException):
        raise done[0]
    return done[0]


@pytest.mark.parametrize("now", [_SIGNED_32_BIT_END - 1, _SIGNED_32_BIT_END, _SIGNED_32_BIT_END + 86400 * 365])
def test_a_nonce_issued_after_2038_is_redeemed_once(now):
    clock = Clock()
    clock.advance(now)
    issuer = _issuer(clock, lifetime=60)
    nonce = issuer.issue()
    assert issuer.check(nonce) == now + 60 + 1
    clock.advance(59)
    assert [_redeem(issuer, nonce), _redeem(issuer, nonce)] == [True, False]
    clock.advance(1)
    assert issuer.check(issuer.issue()) == now + 60 + 60 + 1


@pytest.mark.parametrize("lifetime", [1, 0.5])
def test_a_lifetime_of_a_second_or_less_is_a_lifetime(lifetime):
    clock = Clock()
    clock.advance(500)
    issuer = _issuer(clock, lifetime=lifetime)
    nonce, later = issuer.issue(), issuer.issue()
    assert issuer.check(nonce) == int(500 + lifetime) + 1
    assert _redeem(issuer, nonce) is True
    clock.advance(lifetime)
    assert _redeem(issuer, later) is False, "expired at the instant its lifetime ends"


@pytest.mark.parametrize("nonce", [None, 12345, b"x" * 32, ["x"] * 32])
def test_a_nonce_that_is_not_text_is_refused(nonce):
    issuer = _issuer(Clock())
    assert issuer.check(nonce) is None
    assert _redeem(issuer, nonce) is False
