"""
Tests for `gateway.v1.nonces.NonceIssuer`: the gateway's single-use v1 nonces.
"""

from __future__ import annotations

import pytest
from twisted.internet.task import Clock

from gateway.keys.jose import b64url_decode
from gateway.v1.nonces import NonceIssuer


@pytest.fixture
def clock() -> Clock:
    """
    A fake reactor clock, advanced by hand.
    """
    return Clock()


def test_nonce_redeems_once(clock):
    """
    An issued nonce is good exactly once: a replay fails.
    """
    issuer = NonceIssuer(clock)
    nonce = issuer.issue()
    assert issuer.redeem(nonce) is True
    assert issuer.redeem(nonce) is False


def test_unknown_nonce_fails(clock):
    """
    Nonces the issuer never made, and non-strings, fail.
    """
    issuer = NonceIssuer(clock)
    issuer.issue()
    assert issuer.redeem("AAAAAAAAAAAAAAAAAAAAAAAA") is False
    assert issuer.redeem("") is False
    assert issuer.redeem(12) is False
    assert issuer.redeem(None) is False


def test_nonce_expires(clock):
    """
    A nonce is good until its lifetime ends, and not after.
    """
    issuer = NonceIssuer(clock, lifetime=60)
    early = issuer.issue()
    late = issuer.issue()
    clock.advance(59)
    assert issuer.redeem(early) is True
    clock.advance(2)
    assert issuer.redeem(late) is False


def test_expired_nonces_are_pruned(clock):
    """
    Expired nonces do not pile up: issuing after expiry forgets them.
    """
    issuer = NonceIssuer(clock, lifetime=10)
    for _ in range(100):
        issuer.issue()
    assert len(issuer) == 100
    clock.advance(11)
    issuer.issue()
    assert len(issuer) == 1


def test_capacity_drops_oldest(clock):
    """
    Beyond the capacity the oldest nonces are forgotten (and fail as
    unknown), while the newest still work.
    """
    issuer = NonceIssuer(clock, capacity=3)
    nonces = [issuer.issue() for _ in range(5)]
    assert len(issuer) == 3
    assert issuer.redeem(nonces[0]) is False
    assert issuer.redeem(nonces[1]) is False
    assert all(issuer.redeem(nonce) for nonce in nonces[2:])


def test_nonces_unique_and_long(clock):
    """
    Nonces are base64url, carry at least 128 random bits, and do not repeat.
    """
    issuer = NonceIssuer(clock)
    nonces = {issuer.issue() for _ in range(2000)}
    assert len(nonces) == 2000
    for nonce in nonces:
        assert len(b64url_decode(nonce)) * 8 >= 128
        assert "=" not in nonce


def test_invalid_settings_refused(clock):
    """
    A zero lifetime or capacity would make every nonce fail: refuse it.
    """
    with pytest.raises(ValueError):
        NonceIssuer(clock, lifetime=0)
    with pytest.raises(ValueError):
        NonceIssuer(clock, capacity=0)
