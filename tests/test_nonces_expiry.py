"""
`gateway.v1.nonces.NonceIssuer` at its edges (issue 21): expiry at the exact
instant, pruning that forgets only the expired nonces (never the newest), a
clock that went back (pruning is late, expiry is not), and the settings'
bounds and words.
"""

from __future__ import annotations

import pytest
from twisted.internet.task import Clock

from gateway.v1.nonces import NonceIssuer


def test_a_nonce_expires_at_the_instant_its_lifetime_ends():
    clock = Clock()
    issuer = NonceIssuer(clock, lifetime=60)
    before, at = issuer.issue(), issuer.issue()
    clock.advance(59.5)
    assert issuer.redeem(before) is True
    clock.advance(0.5)
    assert issuer.redeem(at) is False


def test_pruning_forgets_the_expired_and_keeps_the_newest():
    """
    One expired nonce in front of live ones: pruning it must not evict the
    live ones behind it (a badNonce storm for every client at once).
    """
    clock = Clock()
    issuer = NonceIssuer(clock, lifetime=10)
    expired = issuer.issue()
    clock.advance(5)
    live = [issuer.issue() for _ in range(3)]
    clock.advance(5)  # the first one's expiry, exactly
    fresh = issuer.issue()
    assert len(issuer) == 4, "only the expired nonce is pruned, at its instant"
    assert issuer.redeem(expired) is False
    assert [issuer.redeem(n) for n in live + [fresh]] == [True, True, True, True]


def test_redeeming_prunes_too():
    clock = Clock()
    issuer = NonceIssuer(clock, lifetime=10)
    issuer.issue()
    issuer.issue()
    clock.advance(10)
    assert issuer.redeem("unknown") is False
    assert len(issuer) == 0


def test_a_clock_that_went_back_delays_pruning_not_expiry():
    """
    A nonce issued after the clock went back sits behind one that expires
    later, so pruning stops before it; redeeming it still checks its own
    expiry, to the instant.
    """
    clock = Clock()
    clock.advance(100)
    issuer = NonceIssuer(clock, lifetime=10)
    issuer.issue()                      # expires at 110
    clock.rightNow = 0
    late_a, late_b = issuer.issue(), issuer.issue()   # expire at 10, behind it
    clock.rightNow = 10
    assert issuer.redeem(late_a) is False, "expired at 10, though not pruned"
    clock.rightNow = 50
    assert issuer.redeem(late_b) is False
    assert len(issuer) == 1


def test_the_smallest_settings_work():
    clock = Clock()
    issuer = NonceIssuer(clock, lifetime=0.5, capacity=1)
    first = issuer.issue()
    second = issuer.issue()
    assert len(issuer) == 1
    assert issuer.redeem(first) is False
    assert issuer.redeem(second) is True


@pytest.mark.parametrize("field, value", [("lifetime", 0), ("lifetime", -1.5), ("capacity", 0),
                                          ("capacity", -3)])
def test_settings_that_are_not_positive_are_refused_by_name(field, value):
    with pytest.raises(ValueError) as raised:
        NonceIssuer(Clock(), **{field: value})
    assert str(raised.value) == f"{field} must be positive, not {value!r}"


def test_nonces_are_24_characters():
    """18 random bytes, base64url without padding."""
    issuer = NonceIssuer(Clock())
    assert {len(issuer.issue()) for _ in range(50)} == {24}
