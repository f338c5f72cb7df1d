"""
Tests for `gateway.v1.nonces.NonceIssuer`: the gateway's single-use v1
nonces, authenticated by an HMAC key the processes of one state share, and
redeemed once at the store — whichever process issued or redeems them.
"""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from gateway.keys.jose import b64url, b64url_decode
from gateway.store.sqlite import SQLiteStore
from gateway.v1.nonces import NONCE_KEY_NAME, NonceIssuer
from tests.test_store import STORE_KINDS, open_kind


@pytest.fixture
def clock() -> Clock:
    """
    A fake reactor clock, advanced by hand.
    """
    return Clock()


@pytest.fixture
def store(clock):
    store = SQLiteStore.inline(clock=clock)
    yield store
    store.close()


def fired(coroutine):
    outcome = []
    Deferred.fromCoroutine(coroutine).addBoth(outcome.append)
    (result,) = outcome
    return result


def test_nonce_redeems_once(clock, store):
    """
    An issued nonce is good exactly once: a replay fails.
    """
    issuer = NonceIssuer(clock, store)
    nonce = issuer.issue()
    assert fired(issuer.redeem(nonce)) is True
    assert fired(issuer.redeem(nonce)) is False


def test_unknown_and_forged_nonces_fail(clock, store):
    """
    Nonces the issuer never made (random text, another key's, one with a
    flipped bit), and non-strings, fail, and are not even recorded.
    """
    issuer = NonceIssuer(clock, store)
    other = NonceIssuer(clock, store)
    good = issuer.issue()
    raw = bytearray(b64url_decode(good))
    raw[5] ^= 1
    for bad in ("AAAAAAAAAAAAAAAAAAAAAAAA", "", 12, None, other.issue(), b64url(bytes(raw)),
                good + "A", good[:-1]):
        assert issuer.check(bad) is None
        assert fired(issuer.redeem(bad)) is False
    count = fired(_count_used(store))
    assert count == 0
    assert fired(issuer.redeem(good)) is True


async def _count_used(store) -> int:
    def work():
        return store._database.execute("SELECT count(*) FROM used_nonces").fetchone()[0]

    return await store._call(work)


def test_nonce_expires(clock, store):
    """
    A nonce is good until its lifetime ends, and not after.
    """
    issuer = NonceIssuer(clock, store, lifetime=60)
    early = issuer.issue()
    late = issuer.issue()
    clock.advance(59)
    assert fired(issuer.redeem(early)) is True
    clock.advance(2)
    assert fired(issuer.redeem(late)) is False


def test_issuing_writes_nothing(clock, store):
    """
    Issuing is an HMAC, nothing more: a thousand nonces leave the store as
    it was (HEAD and GET stay write-free).
    """
    issuer = NonceIssuer(clock, store)
    nonces = {issuer.issue() for _ in range(1000)}
    assert len(nonces) == 1000
    assert fired(_count_used(store)) == 0


def test_used_nonces_are_pruned_after_expiry(clock, store, monkeypatch):
    """
    Used nonces are kept only until they would have expired anyway.
    """
    import gateway.store.sql as sql_module

    monkeypatch.setattr(sql_module, "NONCE_PRUNE_EVERY", 10)
    issuer = NonceIssuer(clock, store, lifetime=10)
    for _ in range(9):
        assert fired(issuer.redeem(issuer.issue())) is True
    assert fired(_count_used(store)) == 9
    clock.advance(30)
    for _ in range(2):
        assert fired(issuer.redeem(issuer.issue())) is True
    assert fired(_count_used(store)) == 2  # the two fresh ones; the nine old ones pruned


def test_nonces_unique_and_long(clock, store):
    """
    Nonces are base64url, carry 64 random bits besides their time and a
    96-bit tag, and do not repeat.
    """
    issuer = NonceIssuer(clock, store)
    nonces = {issuer.issue() for _ in range(2000)}
    assert len(nonces) == 2000
    for nonce in nonces:
        assert len(b64url_decode(nonce)) * 8 >= 192
        assert "=" not in nonce


def test_invalid_settings_refused(clock, store):
    """
    A zero lifetime would make every nonce fail: refuse it.
    """
    with pytest.raises(ValueError):
        NonceIssuer(clock, store, lifetime=0)


@pytest.mark.parametrize("kind", STORE_KINDS[1:])
@pytest_twisted.ensureDeferred
async def test_processes_share_key_and_redemptions(kind, request, tmp_path):
    """
    Two stores on one state — as two processes or replicas have — agree on
    the nonce key, so a nonce one issues the other accepts, exactly once
    between them.
    """
    path = str(tmp_path / "state.sqlite3")
    first = await open_kind(request, kind, path)
    second = await open_kind(request, kind, path)
    try:
        key = await first.secret(NONCE_KEY_NAME)
        assert key == await second.secret(NONCE_KEY_NAME)
        assert len(key) == 32
        issuing = NonceIssuer(reactor, first, key=key)
        redeeming = NonceIssuer(reactor, second, key=await second.secret(NONCE_KEY_NAME))
        nonce = issuing.issue()
        assert await redeeming.redeem(nonce) is True
        assert await issuing.redeem(nonce) is False
        assert await redeeming.redeem(nonce) is False
    finally:
        await first.close()
        await second.close()
