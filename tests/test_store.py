"""
Tests for `gateway.store`: the store's contract, run on SQLite both ways
the gateway runs it — inline on ``:memory:`` (as every unit test of the
translation code does) and in its own thread on a file (as production
does) — plus tests of what only the file and the thread do (durability,
file permissions, the worker thread, shutdown).
"""

from __future__ import annotations

import hashlib
import os
import re
import sqlite3
import stat
import threading
from typing import Any, List

import attrs
import pytest
import pytest_twisted
from twisted.internet import defer, reactor
from twisted.internet.interfaces import IReactorCore
from twisted.internet.task import Clock
from twisted.logger import LogLevel, capturedLogs
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

import gateway.store.sql as sql_module
import gateway.store.sqlite as sqlite_module
from gateway.store import (
    Account,
    Authorization,
    Certificate,
    Challenge,
    Conflict,
    DuplicateAccount,
    IStore,
    Issuer,
    NotFound,
    Order,
    StoreError,
    issuer_id,
)
from gateway.status import Status
from gateway.store.records import AttemptStatus
from gateway.store.sqlite import SQLiteStore

T0 = "2026-11-28T17:00:00Z"
T1 = "2026-11-28T17:05:00Z"
T2 = "2026-11-28T17:10:00Z"
JWK = {"kty": "EC", "crv": "P-256", "x": "eA", "y": "eQ"}
UPSTREAM = "https://ca.test/acme"


async def open_kind(request, kind: str, path: str, upstream=None, clock=None):
    """
    A store of one kind: ``inline`` (SQLite in the calling thread),
    ``thread`` (SQLite on a file, in its thread) or ``postgresql`` (a fresh
    database of the session's throwaway cluster, in its thread).
    """
    if kind == "inline":
        return SQLiteStore.inline(path if path != "file" else ":memory:",
                                  clock=clock or Clock(), upstream=upstream)
    if kind == "thread":
        return await SQLiteStore.open(path, reactor, upstream=upstream)
    from gateway.store.postgresql import PostgreSQLStore, StateURI

    cluster, database = request.getfixturevalue("postgres_state")
    if not hasattr(request, "_gateway_database"):
        request._gateway_database = database
    return await PostgreSQLStore.open(
        StateURI.parse(cluster.uri(request._gateway_database), cluster.password),
        reactor, upstream=upstream)


#: The kinds of store the contract runs on.
STORE_KINDS = ["inline", "thread", "postgresql"]


@pytest_twisted.async_yield_fixture(params=STORE_KINDS)
async def store(request, tmp_path):
    """
    A fresh, empty store of each engine and runner, closed after the test.
    """
    opened = await open_kind(request, request.param,
                             ":memory:" if request.param == "inline"
                             else str(tmp_path / "state.sqlite3"))
    yield opened
    await opened.close()


@pytest_twisted.async_yield_fixture
async def sqlite_store(tmp_path):
    """
    A fresh `SQLiteStore` on ``tmp_path/state.sqlite3``, closed after the test.
    """
    opened = await SQLiteStore.open(str(tmp_path / "state.sqlite3"), reactor)
    yield opened
    await opened.close()


async def expect_failure(deferred: defer.Deferred, error: type) -> BaseException:
    """
    Await ``deferred`` and return the ``error`` it must fail with.
    """
    with pytest.raises(error) as info:
        await deferred
    return info.value


async def make_account(store: Any, thumbprint: str = "tp-1") -> Account:
    """
    Create an account with ``thumbprint`` and defaults for everything else.
    """
    return await store.create_account(thumbprint, JWK)


def make_order(
    store: Any, account: Account, identifiers=("example.com",), status="pending",
    created_at=T0,
) -> Order:
    """
    An unstored `Order` with a fresh id and plausible values.
    """
    id = store.new_id()
    return Order(
        id=id,
        account_id=account.id,
        upstream_url=f"{UPSTREAM}/order/{id}",
        identifiers=identifiers,
        status=status,
        finalize_url=f"{UPSTREAM}/finalize/{id}",
        expires="2026-12-05T17:00:00Z",
        certificate_url=None,
        created_at=created_at,
    )


def make_authorization(
    store: Any, account: Account, order: Order = None, identifier="example.com",
    wildcard=False, status="pending", created_at=T0, upstream_url=None,
) -> Authorization:
    """
    An unstored `Authorization` with a fresh id and plausible values.
    """
    id = store.new_id()
    return Authorization(
        id=id,
        account_id=account.id,
        order_id=None if order is None else order.id,
        upstream_url=upstream_url or f"{UPSTREAM}/authz/{id}",
        identifier=identifier,
        wildcard=wildcard,
        status=status,
        expires="2026-12-05T17:00:00Z",
        created_at=created_at,
        updated_at=created_at,
    )


def make_challenge(store: Any, authorization: Authorization, type="http-01") -> Challenge:
    """
    An unstored `Challenge` with a fresh id and plausible values.
    """
    id = store.new_id()
    return Challenge(
        id=id,
        authorization_id=authorization.id,
        account_id=authorization.account_id,
        upstream_url=f"{UPSTREAM}/chall/{id}",
        type=type,
        token=f"token-{id}",
        status="pending",
    )


def make_certificate(
    store: Any, account: Account, order: Order = None, serial="03ab", issuer_ids=(),
    issued_at=T0,
) -> Certificate:
    """
    An unstored `Certificate` with a fresh id and plausible values.
    """
    id = store.new_id()
    return Certificate(
        id=id,
        account_id=account.id,
        order_id=None if order is None else order.id,
        serial=serial,
        leaf_der=b"\x30\x82leaf-" + serial.encode(),
        issuer_ids=issuer_ids,
        upstream_url=f"{UPSTREAM}/cert/{id}",
        issued_at=issued_at,
    )


async def populate(store: Any) -> dict:
    """
    Store one record of every kind, linked together, and return them.
    """
    account = await store.create_account(
        "tp-1", JWK, contact=("mailto:a@example.com",), agreement=f"{UPSTREAM}/tos",
        initial_ip="192.0.2.1", upstream_url=f"{UPSTREAM}/acct/1",
    )
    order = await store.add_order(make_order(store, account))
    authorization = await store.add_authorization(
        make_authorization(store, account, order)
    )
    challenge = await store.add_challenge(make_challenge(store, authorization))
    issuer = await store.add_issuer(b"\x30\x82issuer")
    certificate = await store.add_certificate(
        make_certificate(store, account, order, issuer_ids=(issuer.id,))
    )
    return dict(
        account=account, order=order, authorization=authorization,
        challenge=challenge, issuer=issuer, certificate=certificate,
    )


# --- The contract, for both implementations ------------------------------------


def test_provides_interface(store):
    """
    Both implementations provide `IStore`.
    """
    assert verifyObject(IStore, store)


def test_new_id(store):
    """
    ``new_id`` makes distinct URL-safe ids of at least 128 bits (22 base64url
    characters), because v1 objects are read without authentication.
    """
    ids = {store.new_id() for _ in range(1000)}
    assert len(ids) == 1000
    for id in ids:
        assert re.fullmatch(r"[A-Za-z0-9_-]{22,}", id)


@pytest_twisted.ensureDeferred
async def test_account_round_trip(store):
    """
    ``create_account`` numbers accounts from 1, timestamps them, and every
    lookup returns what was stored.
    """
    first = await store.create_account(
        "tp-1", JWK, contact=["mailto:a@example.com", "tel:+1"],
        agreement=f"{UPSTREAM}/tos", initial_ip="192.0.2.1",
    )
    second = await store.create_account(
        "tp-2", {"kty": "RSA", "n": "AQ", "e": "AQAB"}, upstream_url=f"{UPSTREAM}/acct/9",
        status="deactivated",
    )
    assert (first.id, second.id) == (1, 2)
    assert first.contact == ("mailto:a@example.com", "tel:+1")
    assert first.public_jwk == JWK
    assert (first.upstream_url, first.status) == (None, "valid")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", first.created_at)
    assert second.upstream_url == f"{UPSTREAM}/acct/9"
    assert second.agreement is None and second.contact == ()

    assert await store.account_by_id(1) == first
    assert await store.account_by_thumbprint("tp-2") == second
    assert await store.account_by_id(3) is None
    assert await store.account_by_thumbprint("nope") is None
    assert await store.list_accounts() == [first, second]


@pytest_twisted.ensureDeferred
async def test_account_jwk_is_detached(store):
    """
    Mutating the ``public_jwk`` of a returned account, or the dict passed in,
    does not change what is stored.
    """
    jwk = dict(JWK)
    account = await store.create_account("tp-1", jwk)
    jwk["x"] = "changed"
    account.public_jwk["y"] = "changed"
    assert (await store.account_by_id(account.id)).public_jwk == JWK


@pytest_twisted.ensureDeferred
async def test_duplicate_account(store):
    """
    A second account with the same thumbprint fails with `DuplicateAccount`
    and consumes nothing: the next account still gets the next id.
    """
    await make_account(store, "tp-1")
    error = await expect_failure(store.create_account("tp-1", JWK), DuplicateAccount)
    assert isinstance(error, StoreError)
    assert (await store.create_account("tp-2", JWK)).id == 2
    assert len(await store.list_accounts()) == 2


@pytest_twisted.ensureDeferred
async def test_update_account(store):
    """
    ``update_account`` changes fields, including the key (key change): the old
    thumbprint no longer finds the account, the new one does.
    """
    account = await make_account(store, "old")
    new_jwk = {"kty": "EC", "crv": "P-384", "x": "AA", "y": "BB"}
    updated = await store.update_account(
        account.id, thumbprint="new", public_jwk=new_jwk,
        upstream_url=f"{UPSTREAM}/acct/1", contact=("mailto:b@example.com",),
        agreement=f"{UPSTREAM}/tos2", status="deactivated",
    )
    assert updated == attrs.evolve(
        account, thumbprint="new", public_jwk=new_jwk,
        upstream_url=f"{UPSTREAM}/acct/1", contact=("mailto:b@example.com",),
        agreement=f"{UPSTREAM}/tos2", status="deactivated",
    )
    assert await store.account_by_id(account.id) == updated
    assert await store.account_by_thumbprint("old") is None
    assert await store.account_by_thumbprint("new") == updated


@pytest_twisted.ensureDeferred
async def test_update_account_to_taken_thumbprint(store):
    """
    A key change to another account's key fails with `DuplicateAccount` and
    changes nothing.
    """
    first = await make_account(store, "tp-1")
    await make_account(store, "tp-2")
    await expect_failure(store.update_account(first.id, thumbprint="tp-2"), DuplicateAccount)
    assert await store.account_by_id(first.id) == first


@pytest_twisted.ensureDeferred
async def test_update_rejects_unknown_and_immutable_fields(store):
    """
    Updates accept only changeable record fields: ids never change, and
    neither does the owning account, which decides whose key signs upstream.
    """
    records = await populate(store)
    await expect_failure(store.update_account(1, colour="red"), TypeError)
    await expect_failure(store.update_account(1, id=2), TypeError)
    for method, key in [
        (store.update_order, "order"),
        (store.update_authorization, "authorization"),
        (store.update_challenge, "challenge"),
        (store.update_certificate, "certificate"),
    ]:
        record = records[key]
        await expect_failure(method(record.id, account_id=2), TypeError)
        await expect_failure(method(record.id, id="other"), TypeError)
        await expect_failure(method(record.id, colour="red"), TypeError)


@pytest_twisted.ensureDeferred
async def test_update_validates_values(store):
    """
    Changed values are validated like new records, so a bad update stores
    nothing.
    """
    records = await populate(store)
    order = records["order"]
    await expect_failure(store.update_order(order.id, status=None), TypeError)
    await expect_failure(store.update_order(order.id, expires="tomorrow"), ValueError)
    assert await store.order_by_id(order.id) == order


@pytest_twisted.ensureDeferred
async def test_update_unknown_id(store):
    """
    Updating a record that does not exist fails with `NotFound`.
    """
    for method, id, changes in [
        (store.update_account, 42, dict(status="valid")),
        (store.update_order, "nope", dict(status="valid")),
        (store.update_authorization, "nope", dict(status="valid")),
        (store.update_challenge, "nope", dict(status="valid")),
        (store.update_certificate, "nope", dict(revocation_reason=1)),
    ]:
        error = await expect_failure(method(id, **changes), NotFound)
        assert isinstance(error, StoreError)


@pytest_twisted.ensureDeferred
async def test_lookups_of_missing_records(store):
    """
    Lookups that match nothing fire with `None` or an empty list.
    """
    assert await store.order_by_id("nope") is None
    assert await store.authorization_by_id("nope") is None
    assert await store.authorization_by_upstream_url(1, "https://x") is None
    assert await store.challenge_by_id("nope") is None
    assert await store.certificate_by_id("nope") is None
    assert await store.certificate_by_serial("00") is None
    assert await store.issuer_by_id("nope") is None
    assert await store.authorizations_for_order("nope") == []
    assert await store.challenges_for_authorization("nope") == []
    assert await store.certificates_for_account(1) == []
    assert await store.find_orders(1, ("example.com",)) == []
    assert await store.find_authorizations(1, "example.com", False) == []
    assert await store.list_accounts() == []


@pytest_twisted.ensureDeferred
async def test_round_trip_every_record(store):
    """
    Every kind of record reads back equal to what was added.
    """
    records = await populate(store)
    assert await store.order_by_id(records["order"].id) == records["order"]
    authorization = records["authorization"]
    assert await store.authorization_by_id(authorization.id) == authorization
    assert await store.challenge_by_id(records["challenge"].id) == records["challenge"]
    certificate = records["certificate"]
    assert await store.certificate_by_id(certificate.id) == certificate
    assert await store.certificate_by_serial(certificate.serial) == certificate
    assert await store.issuer_by_id(records["issuer"].id) == records["issuer"]


@pytest_twisted.ensureDeferred
async def test_order_identifiers_are_normalised(store):
    """
    An order's identifiers are stored as a sorted, lower-cased set.
    """
    account = await make_account(store)
    order = await store.add_order(
        make_order(store, account, ("WWW.Example.com", "*.Example.com", "www.example.com"))
    )
    assert order.identifiers == ("*.example.com", "www.example.com")
    assert (await store.order_by_id(order.id)).identifiers == order.identifiers


@pytest_twisted.ensureDeferred
async def test_update_order(store):
    """
    ``update_order`` records upstream progress.
    """
    account = await make_account(store)
    order = await store.add_order(make_order(store, account))
    updated = await store.update_order(
        order.id, status="valid", certificate_url=f"{UPSTREAM}/cert/1"
    )
    assert updated == attrs.evolve(
        order, status="valid", certificate_url=f"{UPSTREAM}/cert/1"
    )
    assert await store.order_by_id(order.id) == updated


@pytest_twisted.ensureDeferred
async def test_find_orders(store):
    """
    ``find_orders`` matches the exact identifier set (in any order or case),
    the wanted statuses and the account only, newest first.
    """
    account = await make_account(store, "tp-1")
    other = await make_account(store, "tp-2")
    pair = ("a.example", "b.example")
    old = await store.add_order(make_order(store, account, pair, "ready", T0))
    new = await store.add_order(make_order(store, account, pair, "pending", T2))
    middle = await store.add_order(make_order(store, account, pair, "valid", T1))
    await store.add_order(make_order(store, account, ("a.example",), "ready"))
    await store.add_order(make_order(store, account, pair + ("c.example",), "ready"))
    await store.add_order(make_order(store, other, pair, "ready"))

    assert await store.find_orders(account.id, ("B.example", "a.example")) == [
        new, middle, old,
    ]
    assert await store.find_orders(account.id, pair, ("ready", "pending")) == [new, old]
    assert await store.find_orders(account.id, pair, ["valid"]) == [middle]
    assert await store.find_orders(account.id, pair, ()) == []
    assert await store.find_orders(account.id, ("c.example",)) == []
    # A bare string is a mistake, not a set of one-letter statuses.
    await expect_failure(store.find_orders(account.id, pair, "ready"), TypeError)


@pytest_twisted.ensureDeferred
async def test_newest_first_breaks_ties_and_reads_fractions(store):
    """
    Records made in the same second come latest-inserted first, and
    timestamps are compared as instants, not strings (``17:00:00.5Z`` is
    after ``17:00:00Z``, though it sorts before it as text).
    """
    account = await make_account(store)
    first = await store.add_order(make_order(store, account, created_at=T0))
    second = await store.add_order(make_order(store, account, created_at=T0))
    fraction = await store.add_order(
        make_order(store, account, created_at="2026-11-28T17:00:00.5Z")
    )
    nanos = await store.add_order(
        make_order(store, account, created_at="2026-11-28T17:00:00.700000001Z")
    )
    offset = await store.add_order(
        make_order(store, account, created_at="2026-11-28T18:00:01+01:00")
    )
    assert await store.find_orders(account.id, ("example.com",)) == [
        offset, nanos, fraction, second, first,
    ]


@pytest_twisted.ensureDeferred
async def test_authorizations(store):
    """
    Authorizations are found by upstream URL and by order (in insertion
    order), and updates are stored.
    """
    account = await make_account(store)
    order = await store.add_order(make_order(store, account, ("a.example", "b.example")))
    a = await store.add_authorization(make_authorization(store, account, order, "a.example"))
    b = await store.add_authorization(make_authorization(store, account, order, "b.example"))
    loose = await store.add_authorization(make_authorization(store, account, None, "c.example"))

    assert loose.order_id is None
    assert await store.authorizations_for_order(order.id) == [a, b]
    assert await store.authorization_by_upstream_url(account.id, b.upstream_url) == b
    assert await store.authorization_by_upstream_url(account.id + 1, b.upstream_url) is None

    updated = await store.update_authorization(
        a.id, status="valid", updated_at=T1, expires="2027-01-01T00:00:00Z"
    )
    assert updated == attrs.evolve(
        a, status="valid", updated_at=T1, expires="2027-01-01T00:00:00Z"
    )
    assert await store.authorization_by_id(a.id) == updated


@pytest_twisted.ensureDeferred
async def test_authorization_by_upstream_url_prefers_newest(store):
    """
    An upstream authorization reused by a later order may back several
    gateway authorizations; the lookup then returns the newest.
    """
    account = await make_account(store)
    url = f"{UPSTREAM}/authz/shared"
    await store.add_authorization(make_authorization(store, account, created_at=T0, upstream_url=url))
    newer = await store.add_authorization(
        make_authorization(store, account, created_at=T1, upstream_url=url)
    )
    assert await store.authorization_by_upstream_url(account.id, url) == newer


@pytest_twisted.ensureDeferred
async def test_find_authorizations(store):
    """
    ``find_authorizations`` matches account, identifier (case-insensitively),
    wildcard flag and statuses, newest first.
    """
    account = await make_account(store, "tp-1")
    other = await make_account(store, "tp-2")
    old = await store.add_authorization(
        make_authorization(store, account, identifier="Example.COM", status="valid", created_at=T0)
    )
    new = await store.add_authorization(
        make_authorization(store, account, status="pending", created_at=T1)
    )
    wild = await store.add_authorization(make_authorization(store, account, wildcard=True))
    await store.add_authorization(make_authorization(store, account, status="invalid", created_at=T2))
    await store.add_authorization(make_authorization(store, other))

    assert old.identifier == "example.com"
    assert await store.find_authorizations(
        account.id, "EXAMPLE.com", False, ("valid", "pending")
    ) == [new, old]
    assert await store.find_authorizations(account.id, "example.com", True) == [wild]
    assert await store.find_authorizations(account.id, "example.com", False, ("valid",)) == [old]
    assert len(await store.find_authorizations(account.id, "example.com", False)) == 3
    assert await store.find_authorizations(account.id, "example.com", False, ()) == []


def test_records_are_hashable():
    """
    Records can go in sets and dict keys, although an account's
    ``public_jwk`` is a dict (it is compared but not hashed).
    """
    account = Account(
        id=1, thumbprint="tp", public_jwk=JWK, upstream_url=None, contact=(),
        agreement=None, status="valid", created_at=T0, initial_ip="",
    )
    assert {account, attrs.evolve(account)} == {account}


def test_wildcard_authorization_names_base_domain():
    """
    A wildcard authorization is spelled as in RFC 8555: the base domain with
    ``wildcard`` set, never ``*.example.com``.
    """
    with pytest.raises(ValueError):
        Authorization(
            id="a", account_id=1, order_id=None, upstream_url="u",
            identifier="*.example.com", wildcard=True, status="pending",
            expires=None, created_at=T0, updated_at=T0,
        )


@pytest_twisted.ensureDeferred
async def test_challenges(store):
    """
    Challenges come back in insertion order, which is the order of the v1
    ``challenges`` array, and updates are stored.
    """
    account = await make_account(store)
    authorization = await store.add_authorization(make_authorization(store, account))
    other = await store.add_authorization(make_authorization(store, account))
    http = await store.add_challenge(make_challenge(store, authorization, "http-01"))
    await store.add_challenge(make_challenge(store, other, "http-01"))
    dns = await store.add_challenge(make_challenge(store, authorization, "dns-01"))
    alpn = await store.add_challenge(make_challenge(store, authorization, "tls-alpn-01"))

    assert await store.challenges_for_authorization(authorization.id) == [http, dns, alpn]
    updated = await store.update_challenge(dns.id, status="processing")
    assert updated == attrs.evolve(dns, status="processing")
    assert await store.challenge_by_id(dns.id) == updated


@pytest_twisted.ensureDeferred
async def test_certificates(store):
    """
    Certificates are found by serial and account (newest first), keep their
    DER out of ``repr``, and record revocations.
    """
    account = await make_account(store, "tp-1")
    other = await make_account(store, "tp-2")
    issuer = await store.add_issuer(b"issuer-der")
    old = await store.add_certificate(
        make_certificate(store, account, serial="01", issuer_ids=(issuer.id,), issued_at=T0)
    )
    new = await store.add_certificate(make_certificate(store, account, serial="02", issued_at=T1))
    await store.add_certificate(make_certificate(store, other, serial="03"))

    assert "leaf" not in repr(old)
    assert await store.certificate_by_serial("01") == old
    assert await store.certificates_for_account(account.id) == [new, old]

    revoked = await store.update_certificate(old.id, revoked_at=T2, revocation_reason=4)
    assert (revoked.revoked_at, revoked.revocation_reason) == (T2, 4)
    assert await store.certificate_by_serial("01") == revoked


@pytest_twisted.ensureDeferred
async def test_current_certificates_of_one_account_holding_a_name(store):
    """
    The renewal inventory one flow reads: one account's current
    certificates (the newest of each name set) holding one name — exactly
    that name, not one that merely contains it.
    """
    account = await make_account(store, "tp-1")
    other = await make_account(store, "tp-2")

    async def add(owner, serial, names, issued_at=T0):
        certificate = attrs.evolve(make_certificate(store, owner, serial=serial, issued_at=issued_at),
                                   names=names)
        return await store.add_certificate(certificate)

    await add(account, "01", ("a.example.test", "b.example.test"), T0)
    await add(account, "02", ("a.example.test", "b.example.test"), T1)  # renewed "01"
    await add(account, "03", ("b.example.test",))
    await add(account, "05", ("xa.example.test",))
    await add(other, "04", ("a.example.test",))

    def serials(certificates):
        return sorted(c.serial for c in certificates)

    assert serials(await store.current_certificates(account.id, "a.example.test")) == ["02"]
    assert serials(await store.current_certificates(account.id, "A.Example.Test")) == ["02"]
    assert serials(await store.current_certificates(account.id, "b.example.test")) == ["02", "03"]
    assert serials(await store.current_certificates(account.id)) == ["02", "03", "05"]
    assert serials(await store.current_certificates()) == ["02", "03", "04", "05"]
    assert await store.current_certificates(account.id, "c.example.test") == []


@pytest_twisted.ensureDeferred
async def test_certificate_serial_is_unique(store):
    """
    ``/cert/{serial}`` must name one certificate, so a second certificate
    with a stored serial fails with `Conflict`.
    """
    account = await make_account(store)
    first = await store.add_certificate(make_certificate(store, account, serial="01"))
    await expect_failure(
        store.add_certificate(make_certificate(store, account, serial="01")), Conflict
    )
    second = await store.add_certificate(make_certificate(store, account, serial="02"))
    await expect_failure(store.update_certificate(second.id, serial="01"), Conflict)
    assert await store.certificate_by_serial("01") == first


@pytest_twisted.ensureDeferred
async def test_issuers(store):
    """
    ``add_issuer`` derives the id from the DER, so adding the same issuer
    again returns the same record; the DER stays out of ``repr``.
    """
    der = b"\x30\x82\x01\x0a-intermediate"
    issuer = await store.add_issuer(der)
    assert issuer == Issuer(id=hashlib.sha256(der).hexdigest()[:32], der=der)
    assert issuer.id == issuer_id(der)
    assert await store.add_issuer(der) == issuer
    assert await store.issuer_by_id(issuer.id) == issuer
    other = await store.add_issuer(b"another")
    assert other.id != issuer.id
    assert "intermediate" not in repr(issuer)


@pytest_twisted.ensureDeferred
async def test_issuer_parents(store):
    """
    An issuer records the issuer above it in the chain it was last stored
    with: the parent must be stored; a new parent replaces the old; adding
    the issuer again without one keeps it.
    """
    root = await store.add_issuer(b"root")
    cross = await store.add_issuer(b"cross-signed root")
    intermediate = await store.add_issuer(b"intermediate", parent_id=root.id)
    assert intermediate.parent_id == root.id
    assert (await store.issuer_by_id(intermediate.id)).parent_id == root.id
    assert (await store.issuer_by_id(root.id)).parent_id is None
    assert await store.add_issuer(b"intermediate") == intermediate
    assert (await store.issuer_by_id(intermediate.id)).parent_id == root.id
    moved = await store.add_issuer(b"intermediate", parent_id=cross.id)
    assert moved.parent_id == cross.id
    assert await store.issuer_by_id(intermediate.id) == moved
    await expect_failure(store.add_issuer(b"intermediate", parent_id="nope"), NotFound)
    await expect_failure(store.add_issuer(b"intermediate", parent_id=intermediate.id), ValueError)
    await expect_failure(store.add_issuer(b"orphan", parent_id="nope"), NotFound)
    assert await store.issuer_by_id(issuer_id(b"orphan")) is None
    assert (await store.issuer_by_id(intermediate.id)).parent_id == cross.id


@pytest_twisted.ensureDeferred
async def test_add_existing_id_conflicts(store):
    """
    Adding a record whose id is taken fails with `Conflict` and leaves the
    stored record alone.
    """
    records = await populate(store)
    for method, key in [
        (store.add_order, "order"),
        (store.add_authorization, "authorization"),
        (store.add_challenge, "challenge"),
    ]:
        record = records[key]
        await expect_failure(method(attrs.evolve(record, status="other")), Conflict)
    certificate = records["certificate"]
    await expect_failure(
        store.add_certificate(attrs.evolve(certificate, serial="ff")), Conflict
    )
    assert await store.order_by_id(records["order"].id) == records["order"]


@pytest_twisted.ensureDeferred
async def test_references_must_exist_and_share_the_account(store):
    """
    A record cannot point at a missing parent, nor at another account's:
    that would make the gateway sign with the wrong account's key.
    """
    records = await populate(store)
    account, order = records["account"], records["order"]
    authorization = records["authorization"]
    stranger = await make_account(store, "tp-2")

    await expect_failure(
        store.add_order(attrs.evolve(make_order(store, account), account_id=99)), NotFound
    )
    await expect_failure(
        store.add_authorization(make_authorization(store, stranger, order)), NotFound
    )
    await expect_failure(
        store.add_challenge(attrs.evolve(make_challenge(store, authorization), account_id=stranger.id)),
        NotFound,
    )
    await expect_failure(
        store.add_challenge(attrs.evolve(make_challenge(store, authorization), authorization_id="nope")),
        NotFound,
    )
    await expect_failure(
        store.add_certificate(make_certificate(store, stranger, order, serial="0f")), NotFound
    )
    await expect_failure(
        store.add_certificate(make_certificate(store, account, serial="0e", issuer_ids=("nope",))),
        NotFound,
    )
    await expect_failure(
        store.update_authorization(authorization.id, order_id="nope"), NotFound
    )
    assert await store.authorization_by_id(authorization.id) == authorization


@pytest_twisted.ensureDeferred
async def test_wrong_record_type(store):
    """
    Adding a record of the wrong type fails with `TypeError`.
    """
    records = await populate(store)
    await expect_failure(store.add_order(records["authorization"]), TypeError)


@pytest_twisted.ensureDeferred
async def test_concurrent_creates(store):
    """
    Fifty account creations made at once all succeed with distinct ids 1–50:
    calls are serialised, not interleaved.
    """
    accounts = await defer.gatherResults(
        [store.create_account(f"tp-{i}", JWK) for i in range(50)], consumeErrors=True
    )
    assert sorted(a.id for a in accounts) == list(range(1, 51))
    by_thumbprint = {a.thumbprint: a.id for a in accounts}
    assert len(by_thumbprint) == 50
    assert await store.list_accounts() == sorted(accounts, key=lambda a: a.id)


@pytest_twisted.ensureDeferred
async def test_closed_store_refuses_calls(store):
    """
    After ``close`` every call fails with `StoreError`, and closing again is
    harmless.
    """
    await make_account(store)
    await store.close()
    await expect_failure(store.account_by_id(1), StoreError)
    await expect_failure(store.create_account("tp-9", JWK), StoreError)
    assert await store.close() is None


def test_statuses_are_plain_strings():
    """
    A record given a status enum member holds its plain string (stored and
    compared the same), and a status that is no string is refused; order
    attempts' statuses are the strings stored so far.
    """
    assert [s.value for s in AttemptStatus] == ["open", "lost", "refused"]
    challenge = Challenge(id="c", authorization_id="a", account_id=1, upstream_url="u",
                          type="http-01", token="t", status=Status.VALID)
    assert type(challenge.status) is str and challenge.status == "valid"
    with pytest.raises(TypeError):
        attrs.evolve(challenge, status=None)
    store = SQLiteStore.inline(clock=Clock())
    account = store.create_account("tp", JWK, status=Status.DEACTIVATED).result
    assert type(account.status) is str and account.status == "deactivated"
    failure = store.create_account("tp-2", JWK, status=None)
    assert failure.result.check(TypeError)
    failure.addErrback(lambda _: None)


# --- The inline store ----------------------------------------------------------


class TestInlineStoreIsSynchronous(SynchronousTestCase):
    """
    An inline store's results are already there when a method returns, so
    synchronous tests need no reactor.
    """

    def test_already_fired(self):
        """
        Successes and failures are both delivered by already-fired Deferreds.
        """
        store = SQLiteStore.inline(clock=Clock())
        account = self.successResultOf(store.create_account("tp", JWK))
        self.assertEqual(account.id, 1)
        failure = self.failureResultOf(store.create_account("tp", JWK), DuplicateAccount)
        self.assertIsInstance(failure.value, StoreError)
        self.failureResultOf(store.update_order("nope", status="x"), NotFound)

    def test_clock_timestamps_accounts(self):
        """
        New accounts are timestamped by the given clock, in RFC 3339 UTC.
        """
        clock = Clock()
        clock.advance(1795885200)  # 2026-11-28T17:00:00Z
        store = SQLiteStore.inline(clock=clock)
        account = self.successResultOf(store.create_account("tp", JWK))
        self.assertEqual(account.created_at, "2026-11-28T17:00:00Z")

    def test_runs_in_the_calling_thread(self):
        """
        No worker thread: every statement runs in the caller's thread, and
        closing fires at once.
        """
        seen = []
        decode = sql_module._decode

        def recording_decode(record_type, row):
            seen.append(threading.get_ident())
            return decode(record_type, row)

        self.patch(sql_module, "_decode", recording_decode)
        threads = threading.active_count()
        store = SQLiteStore.inline(clock=Clock())
        self.successResultOf(store.create_account("tp", JWK))
        self.assertIsNotNone(self.successResultOf(store.account_by_id(1)))
        self.assertEqual(set(seen), {threading.get_ident()})
        self.assertEqual(threading.active_count(), threads)
        self.assertIsNone(self.successResultOf(store.close()))
        self.failureResultOf(store.account_by_id(1), StoreError)


# --- SQLiteStore ---------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_sqlite_persists_across_reopen(tmp_path):
    """
    Everything written survives closing and reopening the file, as after a
    gateway restart, and account ids keep counting up.
    """
    path = str(tmp_path / "state.sqlite3")
    store = await SQLiteStore.open(path, reactor)
    records = await populate(store)
    await make_account(store, "tp-2")
    updated = await store.update_order(records["order"].id, status="ready")
    await store.close()

    store = await SQLiteStore.open(path, reactor)
    try:
        account = records["account"]
        assert await store.account_by_thumbprint("tp-1") == account
        assert await store.order_by_id(updated.id) == updated
        authorization = records["authorization"]
        assert await store.authorizations_for_order(updated.id) == [authorization]
        assert await store.challenges_for_authorization(authorization.id) == [
            records["challenge"]
        ]
        assert await store.issuer_by_id(records["issuer"].id) == records["issuer"]
        certificate = records["certificate"]
        assert await store.certificate_by_serial(certificate.serial) == certificate
        assert (await store.create_account("tp-3", JWK)).id == 3
    finally:
        await store.close()


@pytest_twisted.ensureDeferred
async def test_sqlite_file_is_private(tmp_path):
    """
    The database file, and the WAL file SQLite makes next to it, are
    readable and writable by their owner only, whatever the umask.
    """
    path = tmp_path / "state.sqlite3"
    old_umask = os.umask(0o002)
    try:
        store = await SQLiteStore.open(str(path), reactor)
    finally:
        os.umask(old_umask)
    try:
        await make_account(store)
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        wal = tmp_path / "state.sqlite3-wal"
        assert wal.exists()
        assert stat.S_IMODE(os.stat(wal).st_mode) == 0o600
    finally:
        await store.close()


@pytest_twisted.ensureDeferred
async def test_sqlite_connection_settings(sqlite_store):
    """
    The connection runs in WAL mode with ``synchronous=FULL`` (an issued
    certificate must survive a crash), foreign keys on, a busy timeout, and
    the current schema version.
    """

    def settings():
        connection = sqlite_store._database.connection
        return {
            name: connection.execute(f"PRAGMA {name}").fetchone()[0]
            for name in ["journal_mode", "synchronous", "foreign_keys", "busy_timeout", "user_version"]
        }

    assert await sqlite_store._call(settings) == {
        "journal_mode": "wal",
        "synchronous": 2,
        "foreign_keys": 1,
        "busy_timeout": sqlite_module.BUSY_TIMEOUT_MS,
        "user_version": sqlite_module.SCHEMA_VERSION,
    }


@pytest_twisted.ensureDeferred
async def test_sqlite_runs_off_the_reactor_thread(sqlite_store, monkeypatch):
    """
    Every SQLite call runs in the store's single worker thread, never in the
    reactor thread.
    """
    seen: List[int] = []
    decode = sql_module._decode

    def recording_decode(record_type, row):
        seen.append(threading.get_ident())
        return decode(record_type, row)

    monkeypatch.setattr(sql_module, "_decode", recording_decode)
    records = await populate(sqlite_store)
    await sqlite_store.order_by_id(records["order"].id)
    await sqlite_store.list_accounts()
    await sqlite_store.find_orders(1, ("example.com",))

    workers = sqlite_store._runner.threads
    assert len(workers) == 1
    assert seen and set(seen) == {workers[0].ident}
    assert workers[0].ident != threading.get_ident()
    assert threading.get_ident() == threading.main_thread().ident


@pytest_twisted.ensureDeferred
async def test_sqlite_refuses_newer_schema(tmp_path):
    """
    A database written by a newer gateway (higher ``user_version``) is
    refused rather than misread.
    """
    path = str(tmp_path / "state.sqlite3")
    with sqlite3.connect(path) as connection:
        connection.execute("PRAGMA user_version = 99")
    connection.close()
    await expect_failure(SQLiteStore.open(path, reactor), StoreError)


@pytest_twisted.ensureDeferred
async def test_sqlite_warns_about_shared_file(tmp_path):
    """
    An existing database file that other users can read is opened, with a
    warning: its mode is the operator's choice, but it holds account data.
    """
    path = tmp_path / "state.sqlite3"
    path.touch()
    path.chmod(0o644)
    with capturedLogs() as events:
        store = await SQLiteStore.open(str(path), reactor)
    await store.close()
    assert any(
        event.get("log_level") == LogLevel.warn and event.get("mode") == 0o644
        for event in events
    )


@implementer(IReactorCore)
class RecordingReactor:
    """
    The real reactor, but recording system event triggers instead of
    registering them, so a test can play the shutdown.
    """

    def __init__(self) -> None:
        self.triggers: dict = {}
        self.removed: list = []

    def __getattr__(self, name: str) -> Any:
        return getattr(reactor, name)

    def addSystemEventTrigger(self, phase, event, callable, *args, **kwargs):
        trigger = object()
        self.triggers[trigger] = (phase, event, callable)
        return trigger

    def removeSystemEventTrigger(self, trigger):
        self.removed.append(trigger)
        del self.triggers[trigger]


@pytest_twisted.ensureDeferred
async def test_sqlite_closes_before_reactor_shutdown(tmp_path):
    """
    A store closes itself before the reactor shuts down, so the last writes
    are committed and the worker thread does not keep the process alive.
    """
    fake = RecordingReactor()
    store = await SQLiteStore.open(str(tmp_path / "state.sqlite3"), fake)
    [(phase, event, shutdown)] = fake.triggers.values()
    assert (phase, event) == ("before", "shutdown")

    await make_account(store)
    await shutdown()
    assert not store._runner.threads[0].is_alive()
    await expect_failure(store.account_by_id(1), StoreError)
    assert fake.removed == []


@pytest_twisted.ensureDeferred
async def test_sqlite_close_removes_shutdown_trigger(tmp_path):
    """
    Closing a store explicitly unregisters its shutdown trigger, so a closed
    store is not kept alive by the reactor.
    """
    fake = RecordingReactor()
    store = await SQLiteStore.open(str(tmp_path / "state.sqlite3"), fake)
    [trigger] = fake.triggers
    await store.close()
    assert fake.removed == [trigger]
    assert fake.triggers == {}
