"""
Tests for what the stores do so that crashes and CA changes lose nothing
and mix nothing up: atomic multi-record writes (`IStore.write`), binding
to one upstream CA, order attempts, orphaned certificates, and the
consistency check — on a file, run inline and in the store's thread, plus
the SQLite-only parts (attributing rows written before schema version 3,
``check_state`` on a file).
"""

from __future__ import annotations

import sqlite3
import time

import attrs
import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import Clock

import gateway.store.sql as sql_module
from gateway.store.schema import MIGRATIONS
from gateway.store import (
    Account,
    Authorization,
    Challenge,
    Conflict,
    Insert,
    Issuer,
    NotFound,
    Order,
    OrderAttempt,
    Update,
    issuer_id,
)
from gateway.store.records import (
    ATTEMPT_LOST,
    ATTEMPT_REFUSED,
    ORPHAN_ROW,
    PARTIAL_AUTHORIZATION,
    PARTIAL_ORDER,
    UNSTORED_ORDER,
)
from gateway.store.sqlite import SQLiteDatabase, SQLiteStore, check_state
from tests.test_store import (
    STORE_KINDS,
    open_kind,
    JWK,
    T0,
    T1,
    expect_failure,
    make_authorization,
    make_certificate,
    make_challenge,
    make_order,
)
from tests.test_store import make_authorization as make_authorization_expiring
from tests.test_store import make_order as make_order_expiring

CA_A = "https://ca-a.test/dir"
CA_B = "https://ca-b.test:14000/dir"


def order_at(store, account, directory: str, **kwargs) -> Order:
    order = make_order(store, account, **kwargs)
    base = directory.rsplit("/", 1)[0]
    return attrs.evolve(order, upstream_url=f"{base}/order/{order.id}",
                        finalize_url=f"{base}/finalize/{order.id}")


class Stores:
    """
    Opens a store on a file, run inline or in its own thread, bound to a
    CA, and "restarts" it bound to another on the same file.
    """

    def __init__(self, kind: str, path: str, request=None):
        self.kind, self.path, self.current, self.request = kind, path, None, request

    async def open(self, upstream=None):
        if self.current is not None:
            await self.current.close()
        clock = Clock()
        clock.advance(time.time())
        self.current = await open_kind(self.request, self.kind, self.path, upstream=upstream,
                                       clock=clock)
        return self.current


@pytest_twisted.async_yield_fixture(params=STORE_KINDS)
async def stores(request, tmp_path):
    opened = Stores(request.param, str(tmp_path / "state.sqlite3"), request)
    yield opened
    if opened.current is not None:
        await opened.current.close()


# --- Atomic writes ----------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_write_stores_a_whole_step_and_returns_each_record(stores):
    """
    An order, its authorization and the authorization's challenges in one
    write; later operations may refer to earlier ones; updates too.
    """
    store = await stores.open()
    account = await store.create_account("tp-1", JWK)
    order = make_order(store, account)
    authorization = make_authorization(store, account, order)
    challenges = [make_challenge(store, authorization, t) for t in ("http-01", "dns-01")]
    written = await store.write([Insert(order), Insert(authorization),
                                 *(Insert(c) for c in challenges),
                                 Update(Order, order.id, {"status": "ready"})])
    assert written[:4] == [order, authorization, *challenges]
    assert written[4] == attrs.evolve(order, status="ready")
    assert await store.order_by_id(order.id) == attrs.evolve(order, status="ready")
    assert await store.challenges_for_authorization(authorization.id) == challenges


@pytest_twisted.ensureDeferred
async def test_write_is_all_or_nothing(stores):
    """
    When one operation fails (here the last: a challenge of an unknown
    authorization), nothing of the write is stored, updates included.
    """
    store = await stores.open()
    account = await store.create_account("tp-1", JWK)
    kept = await store.add_order(make_order(store, account))
    order = make_order(store, account)
    authorization = make_authorization(store, account, order)
    stray = make_challenge(store, make_authorization(store, account))
    await expect_failure(store.write([
        Insert(order), Insert(authorization), Insert(make_challenge(store, authorization)),
        Update(Order, kept.id, {"status": "invalid"}),
        Insert(Account(id=0, thumbprint="tp-2", public_jwk=JWK, upstream_url=None, contact=(),
                       agreement=None, status="valid", created_at=T0, initial_ip="")),
        Insert(stray),
    ]), NotFound)
    assert await store.order_by_id(order.id) is None
    assert await store.authorization_by_id(authorization.id) is None
    assert await store.challenges_for_authorization(authorization.id) == []
    assert (await store.order_by_id(kept.id)).status == "pending"
    assert await store.account_by_thumbprint("tp-2") is None
    await expect_failure(store.write([Insert(order), Insert(order)]), Conflict)
    assert await store.order_by_id(order.id) is None


@pytest_twisted.ensureDeferred
async def test_write_inserts_accounts_and_issuers(stores):
    """
    An `Account` insert gets the next id; an `Issuer` insert is idempotent.
    """
    store = await stores.open()
    first = await store.create_account("tp-1", JWK)
    der = b"\x30\x82issuer"
    issuer = Issuer(id=issuer_id(der), der=der)
    written = await store.write([
        Update(Account, first.id, {"thumbprint": "tp-new"}),
        Insert(Account(id=0, thumbprint="tp-1", public_jwk=JWK, upstream_url=None, contact=(),
                       agreement=None, status="retired", created_at=T0, initial_ip="")),
        Insert(issuer), Insert(issuer),
    ])
    assert written[0].thumbprint == "tp-new" and written[1].id == first.id + 1
    assert (await store.account_by_thumbprint("tp-1")).status == "retired"
    assert written[2] == written[3] == issuer


@pytest_twisted.ensureDeferred
async def test_write_refuses_what_is_not_an_operation(stores):
    store = await stores.open()
    account = await store.create_account("tp-1", JWK)
    await expect_failure(store.write([make_order(store, account)]), TypeError)


# --- Bound to one CA --------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_rows_are_stamped_and_searches_see_only_the_bound_ca(stores):
    """
    Orders, authorizations and certificates record the CA they came from;
    after the store is bound to another CA, searches find none of the old
    CA's, lookups by id still do, and the account's upstream URL is hidden
    until it is recorded anew — then the old CA's returns with the old CA.
    """
    store = await stores.open(CA_A)
    account = await store.create_account("tp-1", JWK, upstream_url="https://ca-a.test/acct/1")
    order = await store.add_order(order_at(store, account, CA_A))
    authorization = await store.add_authorization(make_authorization(store, account, order))
    certificate = await store.add_certificate(make_certificate(store, account, order))
    attempt = await store.write([Insert(OrderAttempt(
        id=store.new_id(), account_id=account.id, identifiers=("x.example",), created_at=T0))])
    assert order.directory_url == authorization.directory_url == CA_A
    assert certificate.directory_url == attempt[0].directory_url == CA_A
    assert await store.find_orders(account.id, ("example.com",)) == [order]

    store = await stores.open(CA_B)
    assert await store.find_orders(account.id, ("example.com",)) == []
    assert await store.find_authorizations(account.id, "example.com", False) == []
    assert await store.authorization_by_upstream_url(account.id, authorization.upstream_url) is None
    assert await store.authorizations_with_status("pending") == []
    assert await store.count_authorizations("pending") == 0
    assert await store.order_times_since(account.id, T0) == []
    assert await store.open_order_attempts() == []
    assert await store.order_by_id(order.id) == order
    assert await store.authorization_by_id(authorization.id) == authorization
    assert await store.certificate_by_id(certificate.id) == certificate
    assert (await store.account_by_id(account.id)).upstream_url is None
    assert (await store.account_by_thumbprint("tp-1")).upstream_url is None
    assert [a.upstream_url for a in await store.list_accounts()] == [None]
    # An unrelated change does not lose the old CA's URL.
    assert (await store.update_account(account.id, contact=("mailto:x@example.test",))).upstream_url is None
    at_b = await store.update_account(account.id, upstream_url="https://ca-b.test:14000/acct/9")
    assert at_b.upstream_url == "https://ca-b.test:14000/acct/9"
    assert (await store.add_order(order_at(store, account, CA_B))).directory_url == CA_B

    store = await stores.open(None)
    assert len(await store.find_orders(account.id, ("example.com",))) == 2


@pytest_twisted.ensureDeferred
async def test_order_budget_counts_attempts_whose_order_is_missing(stores):
    """
    An attempt without its order (open or lost) spent the budget; one the
    CA refused did not, nor does one whose order is stored count twice.
    """
    store = await stores.open(CA_A)
    account = await store.create_account("tp-1", JWK)

    def attempt(at):
        return OrderAttempt(id=store.new_id(), account_id=account.id,
                            identifiers=("a.example",), created_at=at)

    open_, lost, refused, stored = attempt(T0), attempt(T0), attempt(T0), attempt(T1)
    await store.write([Insert(a) for a in (open_, lost, refused, stored)])
    await store.write([Update(OrderAttempt, lost.id, {"status": ATTEMPT_LOST}),
                       Update(OrderAttempt, refused.id, {"status": ATTEMPT_REFUSED})])
    await store.add_order(attrs.evolve(order_at(store, account, CA_A, created_at=T1), id=stored.id))
    assert await store.order_times_since(account.id, T0) == [T0, T0, T1]
    assert [a.id for a in await store.open_order_attempts()] == [open_.id]


@pytest_twisted.ensureDeferred
async def test_orphaned_certificates_are_listed(stores):
    store = await stores.open(CA_A)
    account = await store.create_account("tp-1", JWK)
    await store.add_certificate(make_certificate(store, account, serial="01"))
    orphan = await store.add_certificate(
        attrs.evolve(make_certificate(store, account, serial="02"), orphaned=True))
    assert await store.orphaned_certificates() == [orphan]


# --- Consistency ------------------------------------------------------------------


#: Partial rows are reported only while unexpired (the CA drops them then).
LATER = "2099-01-01T00:00:00Z"


async def partial_rows(store, thumbprint: str = "tp-1") -> dict:
    """
    One of each partial row a crash of an older gateway (or a lost answer)
    leaves, plus complete ones and expired partial ones that must not be
    reported.
    """

    def make_order(*args, **kwargs):
        return attrs.evolve(make_order_expiring(*args, **kwargs), expires=LATER)

    def make_authorization(*args, **kwargs):
        return attrs.evolve(make_authorization_expiring(*args, **kwargs), expires=LATER)

    account = await store.create_account(thumbprint, JWK)
    await store.add_authorization(attrs.evolve(make_authorization(store, account),
                                               expires="2001-01-01T00:00:00Z"))
    await store.add_order(attrs.evolve(make_order(store, account, identifiers=("old.example",)),
                                       expires="2001-01-01T00:00:00Z"))
    complete = make_order(store, account)
    complete_authz = make_authorization(store, account, complete)
    await store.write([Insert(attrs.evolve(complete, authorization_urls=(complete_authz.upstream_url,))),
                       Insert(complete_authz), Insert(make_challenge(store, complete_authz))])
    bare = await store.add_authorization(make_authorization(store, account, complete))
    await store.add_authorization(make_authorization(store, account, status="valid"))
    partial = await store.add_order(attrs.evolve(
        make_order(store, account), authorization_urls=(complete_authz.upstream_url, "https://x/authz/9")))
    legacy = await store.add_order(make_order(store, account, identifiers=("legacy.example",)))
    await store.add_order(make_order(store, account, status="valid"))
    attempt = OrderAttempt(id=store.new_id(), account_id=account.id,
                           identifiers=("lost.example",), created_at=T0)
    await store.write([Insert(attempt)])
    return {"bare": bare.id, "partial": partial.id, "legacy": legacy.id, "attempt": attempt.id}


@pytest_twisted.ensureDeferred
async def test_inconsistencies_name_each_partial_row(stores):
    store = await stores.open()
    ids = await partial_rows(store)
    found = {(f.kind, f.record_id) for f in await store.inconsistencies()}
    assert found == {
        (PARTIAL_AUTHORIZATION, ids["bare"]),
        (PARTIAL_ORDER, ids["partial"]),
        (PARTIAL_ORDER, ids["legacy"]),
        (UNSTORED_ORDER, ids["attempt"]),
    }


@pytest_twisted.ensureDeferred
async def test_check_state_reports_partial_and_orphan_rows(tmp_path):
    """
    ``check_state`` (``acme-gateway check``) reads a file: clean, then with
    partial rows, then with a row whose parent was deleted behind the
    gateway's back.
    """
    path = str(tmp_path / "state.sqlite3")
    store = await SQLiteStore.open(path, reactor, upstream=CA_A)
    account = await store.create_account("tp-1", JWK)
    order = make_order(store, account)
    authorization = make_authorization(store, account, order)
    await store.write([Insert(attrs.evolve(order, authorization_urls=(authorization.upstream_url,))),
                       Insert(authorization), Insert(make_challenge(store, authorization))])
    await store.close()
    clean = check_state(path)
    assert clean.clean and clean.integrity == ("ok",) and clean.findings == ()
    assert clean.counts["orders"] == 1

    store = await SQLiteStore.open(path, reactor, upstream=CA_A)
    ids = await partial_rows(store, "tp-partial")
    await store.close()
    connection = sqlite3.connect(path)
    connection.execute("DELETE FROM authorizations WHERE id = ?", (authorization.id,))
    connection.commit()
    connection.close()
    checked = check_state(path)
    assert not checked.clean
    kinds = {(f.kind, f.record_id) for f in checked.findings}
    assert (UNSTORED_ORDER, ids["attempt"]) in kinds
    assert (PARTIAL_AUTHORIZATION, ids["bare"]) in kinds
    assert (PARTIAL_ORDER, ids["partial"]) in kinds
    assert any(f.kind == ORPHAN_ROW and f.table == "challenges" for f in checked.findings)


def test_check_state_on_a_file_that_is_not_a_database(tmp_path):
    path = tmp_path / "state.sqlite3"
    path.write_bytes(b"this is not SQLite" * 300)
    checked = check_state(str(path))
    assert not checked.clean and "not a readable SQLite database" in checked.integrity[0]


# --- SQLite: rows from before the store recorded CAs -----------------------------------


@pytest_twisted.ensureDeferred
async def test_rows_from_schema_2_are_attributed_by_origin(tmp_path):
    """
    A database written by a gateway that did not record CAs: opened bound to
    the CA whose origin its rows' URLs have, the rows are that CA's; bound
    to another CA, none of them is used.
    """
    path = str(tmp_path / "old.sqlite3")
    connection = sqlite3.connect(path, isolation_level=None)
    for migration in MIGRATIONS[:2]:
        for statement in migration.sql(SQLiteDatabase.column_types):
            connection.execute(statement)
    connection.execute(
        "INSERT INTO accounts (thumbprint, public_jwk, upstream_url, contact, agreement, status,"
        " created_at, initial_ip) VALUES ('tp-old', '{}', 'https://ca-a.test/acct/1', '[]', NULL,"
        " 'valid', ?, '')", (T0,))
    connection.execute(
        "INSERT INTO orders (id, account_id, upstream_url, identifiers, status, finalize_url,"
        " expires, certificate_url, created_at) VALUES ('o1', 1, 'https://ca-a.test/order/1',"
        " '[\"old.example\"]', 'pending', 'https://ca-a.test/finalize/1', NULL, NULL, ?)", (T0,))
    connection.execute("PRAGMA user_version = 2")
    connection.close()

    store = await SQLiteStore.open(path, reactor, upstream=CA_B)
    try:
        assert await store.find_orders(1, ("old.example",)) == []
        assert (await store.account_by_id(1)).upstream_url is None
    finally:
        await store.close()
    store = await SQLiteStore.open(path, reactor, upstream=CA_A)
    try:
        (order,) = await store.find_orders(1, ("old.example",))
        assert order.directory_url == CA_A and order.authorization_urls == ()
        assert (await store.account_by_id(1)).upstream_url == "https://ca-a.test/acct/1"
    finally:
        await store.close()


@pytest_twisted.ensureDeferred
async def test_sqlite_write_crash_point_inside_the_transaction(tmp_path, monkeypatch):
    """
    The crash point between two rows of one write fires inside the
    transaction (a real crash there leaves nothing: the e2e crash tests).
    """
    import gateway.crashpoints as crashpoints

    fired = []
    monkeypatch.setattr(sql_module, "crash_point", fired.append)
    store = await SQLiteStore.open(str(tmp_path / "state.sqlite3"), reactor)
    try:
        account = await store.create_account("tp-1", JWK)
        order = make_order(store, account)
        authorization = make_authorization(store, account, order)
        await store.write([Insert(order), Insert(authorization),
                           Insert(make_challenge(store, authorization))])
        assert fired == ["order-row", "authorization-row"]
        assert crashpoints.CRASH_STATUS == 86
    finally:
        await store.close()


def test_challenge_record_unchanged():
    # Challenges carry no CA of their own: their authorization's applies.
    assert "directory_url" not in attrs.fields_dict(Challenge)
    assert "directory_url" in attrs.fields_dict(Authorization)


# --- acme-gateway check ------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_check_command_exit_status_and_output(tmp_path, capsys):
    """
    ``acme-gateway check --state FILE`` prints ``ok`` and exits 0 on a sound
    file; prints each finding and exits 1 otherwise; a missing file is a
    usage error (2).
    """
    from gateway.process.cli import main

    path = str(tmp_path / "state.sqlite3")
    store = await SQLiteStore.open(path, reactor, upstream=CA_A)
    await store.create_account("tp-1", JWK)
    await store.close()
    assert main(["check", "--state", path]) == 0
    assert f"{path}: ok (1 accounts" in capsys.readouterr().out

    store = await SQLiteStore.open(path, reactor, upstream=CA_A)
    ids = await partial_rows(store, "tp-2")
    await store.close()
    assert main(["check", "--state", path]) == 1
    captured = capsys.readouterr()
    assert f"{PARTIAL_AUTHORIZATION}: authorizations {ids['bare']}: pending authorization" in captured.out
    assert f"{UNSTORED_ORDER}: order_attempts {ids['attempt']}" in captured.out
    assert "4 problems found" in captured.err

    with pytest.raises(SystemExit) as exited:
        main(["check", "--state", str(tmp_path / "missing.sqlite3")])
    assert exited.value.code == 2


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("kind", STORE_KINDS)
async def test_name_reads_answer_the_three_reads_of_a_new_authz(kind, request, tmp_path):
    """
    `IStore.name_reads` (one call where a ``new-authz`` made three): the
    open planned orders, each with its authorizations for the name only;
    the current certificates holding the name; the authorizations for the
    name in the wanted statuses — each as its own method answers.
    """
    store = await open_kind(request, kind, str(tmp_path / "state.sqlite3"))
    try:
        await _check_name_reads(store)
    finally:
        await store.close()


async def _check_name_reads(store):
    account = await store.create_account("tp-1", JWK)
    other = await store.create_account("tp-2", JWK)
    planned = attrs.evolve(make_order(store, account, ("a.example", "b.example")),
                           planned_for="cert-0")
    await store.add_order(planned)
    closed = attrs.evolve(make_order(store, account, ("a.example",), status="valid"),
                          planned_for="cert-0")
    await store.add_order(closed)
    mine = make_authorization(store, account, planned, "a.example")
    await store.add_authorization(mine)
    await store.add_authorization(make_authorization(store, account, planned, "b.example"))
    await store.add_authorization(make_authorization(store, other, None, "a.example"))
    held_order = make_order(store, account, ("a.example",), status="valid")
    await store.add_order(held_order)
    held = attrs.evolve(make_certificate(store, account, held_order), names=("a.example",))
    await store.add_certificate(held)

    reads = await store.name_reads(account.id, "A.example", "a.example", False,
                                   ("pending", "valid"), ("pending", "ready"))
    assert [(o.id, [a.id for a in authzs]) for o, authzs in reads.planned] == [
        (planned.id, [mine.id])]
    assert [c.id for c in reads.held] == [
        c.id for c in await store.current_certificates(account.id, "a.example")] == [held.id]
    assert [a.id for a in reads.candidates] == [
        a.id for a in await store.find_authorizations(
            account.id, "a.example", False, ("pending", "valid"))] == [mine.id]


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("kind", STORE_KINDS)
async def test_authorization_read_is_the_three_reads_of_a_poll(kind, request, tmp_path):
    """
    `IStore.authorization_read` (one call where a client's poll made three):
    the authorization, its owner and its challenges as `authorization_by_id`,
    `account_by_id` and `challenges_for_authorization` answer; `None` for
    an unknown id.
    """
    store = await open_kind(request, kind, str(tmp_path / "state.sqlite3"))
    try:
        account = await store.create_account("tp-1", JWK)
        authorization = make_authorization(store, account, None, "a.example")
        challenges = [make_challenge(store, authorization, t) for t in ("http-01", "dns-01")]
        await store.write([Insert(authorization), *map(Insert, challenges)])
        read = await store.authorization_read(authorization.id)
        assert read.authorization == await store.authorization_by_id(authorization.id)
        assert read.owner == await store.account_by_id(account.id)
        assert list(read.challenges) == await store.challenges_for_authorization(
            authorization.id) and len(read.challenges) == 2
        assert await store.authorization_read("no-such-id") is None
    finally:
        await store.close()


@pytest_twisted.ensureDeferred
async def test_authorizations_by_upstream_urls_are_the_reads_of_each_url(stores):
    """
    `IStore.authorizations_by_upstream_urls` (one call where a new order's
    authorizations made two per URL): for each URL the store holds, the
    authorization `authorization_by_upstream_url` finds (the newest, of the
    account, at the bound CA) with its challenges as
    `challenges_for_authorization` lists them; a URL held by nothing the
    store may show is absent.
    """
    store = await stores.open(CA_A)
    account = await store.create_account("tp-1", JWK)
    other = await store.create_account("tp-2", JWK)
    shared = f"{CA_A}/authz/shared"
    older = make_authorization(store, account, None, "a.example", created_at=T1,
                               upstream_url=shared)
    newer = make_authorization(store, account, None, "a.example", created_at=T0,
                               upstream_url=shared)
    newer = attrs.evolve(newer, created_at=T1)  # the same second: the later insertion
    single = make_authorization(store, account, None, "b.example")
    bare = make_authorization(store, account, None, "c.example")
    others = make_authorization(store, other, None, "d.example", upstream_url=f"{CA_A}/authz/o")
    elsewhere = attrs.evolve(make_authorization(store, account, None, "e.example"),
                             directory_url=CA_B, upstream_url=f"{CA_A}/authz/e")
    challenges = {a.id: [make_challenge(store, a, t) for t in ("http-01", "dns-01")]
                  for a in (older, newer, single)}
    await store.write([Insert(a) for a in (older, newer, single, bare, others, elsewhere)]
                      + [Insert(c) for listed in challenges.values() for c in listed])

    urls = [single.upstream_url, shared, bare.upstream_url, others.upstream_url,
            elsewhere.upstream_url, f"{CA_A}/authz/none", shared]
    found = await store.authorizations_by_upstream_urls(account.id, urls)
    assert set(found) == {single.upstream_url, shared, bare.upstream_url}
    for url, (authorization, listed) in found.items():
        assert authorization == await store.authorization_by_upstream_url(account.id, url)
        assert list(listed) == await store.challenges_for_authorization(authorization.id)
    assert found[shared][0].id == newer.id
    assert [c.id for c in found[shared][1]] == [c.id for c in challenges[newer.id]]
    assert found[bare.upstream_url][1] == ()
    assert await store.authorizations_by_upstream_urls(account.id, []) == {}


@pytest_twisted.ensureDeferred
async def test_find_authorizations_of_names_is_find_authorizations_of_each(stores):
    """
    `IStore.find_authorizations_of_names` (one call where a ``new-cert``
    made one per name): for each ``(identifier, wildcard)``, in order,
    what `find_authorizations` answers for it.
    """
    store = await stores.open(CA_A)
    account = await store.create_account("tp-1", JWK)
    other = await store.create_account("tp-2", JWK)
    rows = [make_authorization(store, account, None, "a.example"),
            make_authorization(store, account, None, "a.example", created_at=T1),
            make_authorization(store, account, None, "a.example", status="invalid"),
            make_authorization(store, account, None, "a.example", wildcard=True),
            make_authorization(store, account, None, "b.example", status="valid"),
            make_authorization(store, other, None, "c.example")]
    await store.write([Insert(a) for a in rows])
    names = [("b.example", False), ("A.example", False), ("c.example", False),
             ("a.example", True)]
    statuses = iter(("pending", "valid"))  # read once, for every name
    found = await store.find_authorizations_of_names(account.id, names, statuses)
    assert found == [await store.find_authorizations(account.id, identifier, wildcard,
                                                     ("pending", "valid"))
                     for identifier, wildcard in names]
    assert [[a.id for a in each] for each in found] == [
        [rows[4].id], [rows[1].id, rows[0].id], [], [rows[3].id]]
    assert await store.find_authorizations_of_names(account.id, [("a.example", False)]) == [
        await store.find_authorizations(account.id, "a.example", False)]
    assert await store.find_authorizations_of_names(account.id, []) == []
