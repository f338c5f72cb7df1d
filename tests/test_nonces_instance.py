"""
v1 nonces of a process that serves its state alone (issue 15, sixth
round): `gateway.v1.nonces.InstanceNonceIssuer` names the instance that
issued each nonce and redeems it in that process's memory, so a v1 POST
makes no store call and no write transaction for its nonce.  A nonce is
still never accepted twice — replayed, after a restart (a new issuer on the
same key), or at another process — and the memory is bounded whatever the
number of redemptions.  A process that is not alone (``--workers``,
PostgreSQL) keeps the store's nonces (`gateway.process.wiring.
serves_state_alone`).
"""

from __future__ import annotations

import tracemalloc

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from gateway.keys.jose import b64url, b64url_decode
from gateway.process import serve
from gateway.process.testing import FakeCA, _clock_at_now, build_test_gateway
from gateway.process.wiring import ServeConfig, serves_state_alone
from gateway.store.sqlite import SQLiteStore
from gateway.v1 import nonces as nonces_module
from gateway.v1.nonces import (
    INSTANCE_NONCE_BYTES,
    MAX_REDEEMED,
    NONCE_KEY_NAME,
    InstanceNonceIssuer,
    NonceIssuer,
)
from tests.test_store_handoffs import Counted, CountingRunner
from tests.test_startup import config_for, one_key
from tests.test_v1_face import FaceTestCase

KEY = b"k" * 32


def redeemed(issuer: NonceIssuer, nonce: object) -> bool:
    outcome: list = []
    Deferred.fromCoroutine(issuer.redeem(nonce)).addBoth(outcome.append)
    (result,) = outcome
    if isinstance(result, BaseException):  # pragma: no cover - a failure to show
        raise result
    return result


def test_a_nonce_is_redeemed_once_in_memory():
    issuer = InstanceNonceIssuer(Clock(), key=KEY)
    nonce = issuer.issue()
    assert [redeemed(issuer, nonce), redeemed(issuer, nonce)] == [True, False]
    assert issuer.used is None


def test_a_replay_after_a_restart_is_refused():
    """
    The process restarts on the same state (same key): the new instance
    refuses every nonce of the previous one, used or not.
    """
    clock = Clock()
    before = InstanceNonceIssuer(clock, key=KEY)
    used, unused = before.issue(), before.issue()
    assert redeemed(before, used) is True
    after = InstanceNonceIssuer(clock, key=KEY)
    for nonce in (used, unused):
        assert after.check(nonce) is None
        assert redeemed(after, nonce) is False
    assert redeemed(after, after.issue()) is True


def test_another_instances_nonce_is_refused_even_with_the_same_serial():
    """
    Two processes alone on one key (two started by hand on one SQLite
    file): each refuses the other's nonces, though their serials are the
    same, so neither accepts one the other may accept.
    """
    clock = Clock()
    first = InstanceNonceIssuer(clock, key=KEY)
    second = InstanceNonceIssuer(clock, key=KEY)
    assert first.instance != second.instance
    theirs = second.issue()
    assert b64url_decode(theirs)[12:20] == b64url_decode(first.issue())[12:20]  # serial 1
    assert first.check(theirs) is None
    assert redeemed(first, theirs) is False
    assert redeemed(second, theirs) is True


def test_the_store_kind_and_the_instance_kind_refuse_each_other():
    """
    A process of several (the store's nonces) never accepts an instance's
    nonce, which that instance redeems in its memory; an instance refuses
    the store's kind (a nonce of the run before, with ``--workers 2``).
    """
    clock = Clock()
    store = SQLiteStore.inline(clock=clock)
    shared = NonceIssuer(clock, store, key=KEY)
    alone = InstanceNonceIssuer(clock, key=KEY)
    mine = alone.issue()
    assert shared.check(mine) is None
    assert redeemed(shared, mine) is False
    assert alone.check(shared.issue()) is None
    assert redeemed(alone, shared.issue()) is False
    assert redeemed(alone, mine) is True


def test_forged_altered_and_malformed_nonces_are_refused():
    clock = Clock()
    issuer = InstanceNonceIssuer(clock, key=KEY)
    good = issuer.issue()
    raw = bytearray(b64url_decode(good))
    forged_instance = bytearray(raw)
    forged_instance[4] ^= 1
    forged_serial = bytearray(raw)
    forged_serial[19] ^= 1
    other_key = InstanceNonceIssuer(clock, key=b"o" * 32, instance=issuer.instance).issue()
    for bad in (b64url(bytes(forged_instance)), b64url(bytes(forged_serial)), other_key,
                good[:-1], good + "A", "A" * len(good), "*" * len(good), None, 43, ""):
        assert issuer.check(bad) is None, bad
        assert redeemed(issuer, bad) is False, bad
    assert redeemed(issuer, good) is True


def test_only_the_canonical_spelling_of_a_nonce_is_accepted():
    """
    43 base64url characters hold 258 bits: the last one's two spare bits
    set give another spelling of the same 32 bytes, which is refused (one
    nonce, one spelling: the store's uniqueness is on the text).
    """
    issuer = InstanceNonceIssuer(Clock(), key=KEY)
    good = issuer.issue()
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    spare = alphabet[alphabet.index(good[-1]) | 1]
    other_spelling = good[:-1] + spare
    assert other_spelling != good and b64url_decode(other_spelling) == b64url_decode(good)
    assert issuer.check(other_spelling) is None
    assert redeemed(issuer, other_spelling) is False
    assert redeemed(issuer, good) is True


def test_the_same_instance_and_key_accept_each_others_nonces():
    """
    What names the instance is the instance bytes under the tag, nothing
    else: an issuer given the same bytes and key redeems the nonce.
    """
    clock = Clock()
    issuer = InstanceNonceIssuer(clock, key=KEY)
    twin = InstanceNonceIssuer(clock, key=KEY, instance=issuer.instance)
    assert redeemed(twin, issuer.issue()) is True


def test_an_instance_nonce_expires_with_its_lifetime():
    clock = Clock()
    clock.advance(1000.25)
    issuer = InstanceNonceIssuer(clock, key=KEY, lifetime=60)
    early, late = issuer.issue(), issuer.issue()
    assert issuer.check(early) == 1000 + 60 + 1
    clock.advance(59.5)
    assert redeemed(issuer, early) is True
    clock.advance(0.5)
    assert issuer.check(late) is None
    assert redeemed(issuer, late) is False


def test_instance_nonces_are_43_characters_unique_and_name_their_serial():
    issuer = InstanceNonceIssuer(Clock(), key=KEY)
    nonces = [issuer.issue() for _ in range(300)]
    assert len(set(nonces)) == 300
    assert {len(n) for n in nonces} == {43}
    assert INSTANCE_NONCE_BYTES == 32
    raws = [b64url_decode(n) for n in nonces]
    assert {r[4:12] for r in raws} == {issuer.instance}
    assert [int.from_bytes(r[12:20], "big") for r in raws] == list(range(1, 301))


def test_redemptions_are_bounded_and_the_oldest_are_refused_past_the_bound():
    """
    Past ``max_redeemed`` serials, the oldest redeemed one is forgotten and
    every serial up to it refused — its own replay included — while newer
    ones, used or not, keep their fate.
    """
    issuer = InstanceNonceIssuer(Clock(), key=KEY, max_redeemed=3)
    first, skipped, *rest = [issuer.issue() for _ in range(6)]
    assert redeemed(issuer, first) is True
    for nonce in rest[:3]:
        assert redeemed(issuer, nonce) is True
    # Four redeemed, three remembered: the first (serial 1) is forgotten.
    assert (len(issuer._redeemed), len(issuer._oldest), issuer._floor) == (3, 3, 1)
    assert redeemed(issuer, first) is False
    assert redeemed(issuer, skipped) is True  # serial 2, above the floor
    assert issuer._floor == 2  # forgotten at once: it is the oldest
    assert redeemed(issuer, skipped) is False  # serial 2: the floor itself
    assert redeemed(issuer, rest[0]) is False  # serial 3: remembered
    assert redeemed(issuer, rest[3]) is True  # serial 6
    assert (sorted(issuer._redeemed), issuer._floor) == ([4, 5, 6], 3)
    assert redeemed(issuer, rest[0]) is False  # serial 3: the floor, no longer remembered


def test_memory_stays_bounded_over_many_redemptions():
    """
    The default bound: after ``MAX_REDEEMED`` and 20,000 more redemptions,
    exactly ``MAX_REDEEMED`` serials are remembered, and what the issuer
    holds (traced allocations) stays under 8 MB.
    """
    issuer = InstanceNonceIssuer(Clock(), key=KEY)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(MAX_REDEEMED + 20_000):
            assert redeemed(issuer, issuer.issue()) is True
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(issuer._redeemed) == len(issuer._oldest) == MAX_REDEEMED
    assert issuer._floor == 20_000
    assert held < 8 * 1024 * 1024, held


@pytest.mark.parametrize("value", [0, -1])
def test_a_bound_that_is_not_positive_is_refused(value):
    with pytest.raises(ValueError) as raised:
        InstanceNonceIssuer(Clock(), max_redeemed=value)
    assert str(raised.value) == f"max_redeemed must be positive, not {value!r}"


def test_the_default_bound_is_boulders():
    assert MAX_REDEEMED == 65536
    assert InstanceNonceIssuer(Clock()).max_redeemed == MAX_REDEEMED
    assert nonces_module.NonceIssuer(Clock(), None).lifetime == 3600.0


# --------------------------------------------------------------------------
# Which processes are alone
# --------------------------------------------------------------------------

def _config(**changes) -> ServeConfig:
    return ServeConfig(**{"upstream": "https://ca.test/dir", "keys": "/k", **changes})


def test_only_a_lone_sqlite_process_is_alone():
    assert serves_state_alone(_config()) is True
    assert serves_state_alone(_config(state="/var/lib/g/state.sqlite3")) is True
    assert serves_state_alone(_config(workers=2)) is False
    assert serves_state_alone(_config(inherited=(("--listen", 3),))) is False
    assert serves_state_alone(_config(state="postgresql://g@db.test/g")) is False
    assert serves_state_alone(_config(state="postgres://g@db.test/g")) is False


@pytest.mark.parametrize("changes, kind", [
    ({}, InstanceNonceIssuer),
    ({"workers": 2}, NonceIssuer),
])
@pytest_twisted.ensureDeferred
async def test_serve_wires_the_nonces_of_its_mode(tmp_path, changes, kind):
    """
    ``serve`` alone on its SQLite file redeems nonces in memory; told it
    is one of several (``--workers 2``), at the store.  Both sign with the
    state's nonce key.
    """
    running = await serve.start(reactor, config_for(tmp_path, "http://127.0.0.1:9/dir",
                                                    **changes), one_key())
    try:
        nonces = running.gateway.nonces
        assert type(nonces) is kind
        assert nonces.key == await running.store.secret(NONCE_KEY_NAME)
        assert nonces.used is (None if kind is InstanceNonceIssuer else running.store)
    finally:
        await running.stop()


# --------------------------------------------------------------------------
# What a v1 POST costs the store
# --------------------------------------------------------------------------

class AloneHandoffTests(FaceTestCase):
    """
    The same v1 POSTs through two whole in-memory gateways on SQLite, one
    alone and one of several, counting what a `ThreadRunner` would hand to
    the store's thread (`tests.test_store_handoffs`).
    """

    def gateway_with(self, alone: bool):
        clock = _clock_at_now()
        ca = FakeCA(clock=clock)
        self.runner = CountingRunner()
        store = self.successResultOf(SQLiteStore.open(
            ":memory:", clock, upstream=ca.directory_url, runner=self.runner))
        self.gateway = build_test_gateway(self.keys, ca=ca, clock=clock, store=store,
                                          nonces_alone=alone)
        self.ca = self.gateway.ca
        self.base = self.gateway.base_url
        self.clients = {}
        return Counted(self.runner, store._database)

    def steps(self, alone: bool) -> list:
        counted = []
        with self.gateway_with(alone) as registration:
            self.register()
        counted.append(registration)
        with Counted(self.runner, registration.database) as authz:
            reply = self.new_authz()
        self.assertEqual(reply.status, 201, reply.body)
        counted.append(authz)
        return counted

    def test_a_post_alone_makes_one_store_call_and_one_transaction_fewer(self):
        shared = self.steps(alone=False)
        alone = self.steps(alone=True)
        self.assertIsInstance(self.gateway.gateway.nonces, InstanceNonceIssuer)
        # A new-reg (with its agreement), then a new-authz: one nonce each.
        for of_several, of_one in zip(shared, alone):
            self.assertEqual(of_several.handoffs["use_nonce"], 1, of_several.handoffs)
            self.assertEqual(of_one.handoffs["use_nonce"], 0, of_one.handoffs)
            self.assertEqual(of_one.total, of_several.total - 1)
            self.assertEqual(of_one.transactions, of_several.transactions - 1)

    def test_a_replayed_post_alone_is_bad_nonce(self):
        self.gateway_with(alone=True)
        self.register()
        nonce = self.nonce()
        first = self.post("/acme/new-authz", {
            "resource": "new-authz", "identifier": {"type": "dns", "value": "a.example.test"}},
            nonce=nonce)
        self.assertEqual(first.status, 201, first.body)
        again = self.post("/acme/new-authz", {
            "resource": "new-authz", "identifier": {"type": "dns", "value": "b.example.test"}},
            nonce=nonce)
        self.assertEqual(again.status, 400, again.body)
        self.assertEqual(again.json()["type"], "urn:acme:error:badNonce")
        self.assertEqual(len(again.header("replay-nonce")), 43)
