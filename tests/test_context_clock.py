"""
`gateway.translate.context`: what every flow asks of its context — the
time as the store spells it, whether an expiry has passed (at the instant,
never for none or an unreadable one), whether a record belongs to the CA
the gateway runs against now, ``--allow-names`` before anything is made,
and the store's record checked against the type written.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from twisted.internet.task import Clock

from gateway.keys.keystore import KeyStore
from gateway.translate.budget import Budget
from gateway.translate.context import Context, Policy, lapses_within, written_as
from gateway.translate.errors import Unauthorized
from gateway.translate.policy import AllowedNames, parse_dns_name
from gateway.translate.signing import SigningKeys

NOON = 1_780_315_200.0  # 2026-06-01T12:00:00Z


def clock_at(seconds=NOON):
    clock = Clock()
    clock.advance(seconds)
    return clock


def context(clock=None, store=None):
    clock = clock or clock_at()
    return Context(upstream=SimpleNamespace(directory_url="https://ca.test/directory"),
                   store=store or SimpleNamespace(), keys=SigningKeys(KeyStore.from_keys([])),
                   clock=clock, budget=Budget(store or SimpleNamespace(), clock))


def test_now_is_spelled_as_the_store_spells_timestamps():
    assert context(clock_at(NOON + 0.9)).now() == "2026-06-01T12:00:00Z"


@pytest.mark.parametrize("expires, seconds, lapses", [
    ("2026-06-01T12:00:00Z", 0, True),       # at the instant
    ("2026-06-01T12:00:01Z", 0, False),
    ("2026-06-01T11:59:59Z", 0, True),
    ("2026-06-01T12:00:30Z", 30, True),
    ("2026-06-01T12:00:31Z", 30, False),
    ("2026-06-01T12:00:00.5Z", 0.4, False),
    (None, 10 ** 9, False),
    ("", 10 ** 9, False),
    ("not a time", 10 ** 9, False),
])
def test_lapses_within(expires, seconds, lapses):
    assert lapses_within(clock_at(), expires, seconds) is lapses


def test_has_expired_at_the_instant_and_never_without_an_expiry():
    ctx = context()
    assert ctx.has_expired("2026-06-01T12:00:00Z")
    assert not ctx.has_expired("2026-06-01T12:00:01Z")
    assert not ctx.has_expired(None)
    assert not ctx.has_expired("soon")


def test_a_record_is_current_when_it_belongs_to_the_bound_ca():
    bound = context(store=SimpleNamespace(upstream="https://ca.test/directory"))
    assert bound.is_current(SimpleNamespace(directory_url="https://ca.test/directory"))
    assert not bound.is_current(SimpleNamespace(directory_url="https://old.test/directory"))
    assert not bound.is_current(SimpleNamespace(directory_url=None))
    assert not bound.is_current(object())
    unbound = context(store=SimpleNamespace(upstream=None))
    assert unbound.is_current(SimpleNamespace(directory_url="https://old.test/directory"))
    assert context().is_current(object()), "a store bound to no CA holds only current rows"


def test_names_outside_allow_names_are_refused():
    Policy().check_names([parse_dns_name("anything.test")])
    policy = Policy(allowed_names=AllowedNames.parse(["*.example.test"]))
    policy.check_names([parse_dns_name("www.example.test")])
    with pytest.raises(Unauthorized):
        policy.check_names([parse_dns_name("www.example.test"), parse_dns_name("other.test")])


def test_written_as_checks_the_type():
    record = SimpleNamespace(id=1)
    assert written_as(SimpleNamespace, record) is record
    with pytest.raises(TypeError) as raised:
        written_as(int, record)
    assert str(raised.value) == "expected a int, the store returned namespace(id=1)"


def test_the_followers_and_other_cas_share_the_contexts_clock_and_upstream():
    ctx = context()
    assert ctx.following.clock is ctx.clock
    assert ctx.following.background is ctx.background
    assert ctx.other_cas.current is ctx.upstream
