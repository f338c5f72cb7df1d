"""
Thread hand-offs per v1 request (issue 15).  In production every store call
is handed to the store's thread and its result handed back to the reactor
(`gateway.store.runners.ThreadRunner`); a py-spy profile of K=32 issuance
showed that traffic (``Condition.notify``, the waker) among the gateway's
busiest frames, at 18 hand-offs per ``new-authz``.  Counted here per v1
request through a whole in-memory gateway (SQLite, the FakeCA), with a
runner that runs inline and counts what a `ThreadRunner` would hand off,
and the transactions and durable (synced) commits behind them.
"""

from __future__ import annotations

import collections
import sys
from typing import Any, Callable, List

from gateway.keys.jose import b64url
from gateway.process.testing import FakeCA, _clock_at_now, build_test_gateway
from gateway.store.runners import InlineRunner
from gateway.store import OrderAttempt
from gateway.store.sqlite import SQLiteStore
from tests.test_v1_face import KEY, NAME, FaceTestCase, make_csr


def _store_method() -> str:
    """
    The public `SQLStore` method that made the hand-off being counted.
    """
    frame: Any = sys._getframe(2)
    while frame is not None:
        code = frame.f_code
        if code.co_filename.endswith("store/sql.py") and not code.co_name.startswith(("_", "<")):
            return code.co_name
        frame = frame.f_back
    return "?"


class CountingRunner:
    """
    Runs the store's work inline, counting each call a `ThreadRunner`
    would hand to its thread, by the store method that made it.
    """

    def __init__(self) -> None:
        self.handoffs: List[str] = []
        self._inline = InlineRunner()

    def run(self, work: Callable[[], Any]) -> Any:
        self.handoffs.append(_store_method())
        return self._inline.run(work)

    def stop(self) -> None:
        pass


class Counted:
    """
    What the store did during a ``with``: hand-offs by method, transactions,
    durable commits.
    """

    def __init__(self, runner: CountingRunner, database: Any) -> None:
        self.runner = runner
        self.database = database
        self.handoffs: collections.Counter = collections.Counter()
        self.transactions = 0
        self.durable = 0

    def __enter__(self) -> "Counted":
        self._first = len(self.runner.handoffs)
        original = self.database.transaction

        def counting(work, durable=True):
            self.transactions += 1
            self.durable += bool(durable)
            return original(work, durable)

        self.database.transaction = counting
        return self

    def __exit__(self, *exc: Any) -> None:
        del self.database.transaction
        self.handoffs.update(self.runner.handoffs[self._first:])

    @property
    def total(self) -> int:
        return sum(self.handoffs.values())


class HandoffTests(FaceTestCase):

    def setUp(self) -> None:
        clock = _clock_at_now()
        ca = FakeCA(clock=clock)
        self.runner = CountingRunner()
        opened = SQLiteStore.open(":memory:", clock, upstream=ca.directory_url,
                                  runner=self.runner)
        store = self.successResultOf(opened)
        self.database = store._database
        self.gateway = build_test_gateway(self.keys, ca=ca, clock=clock, store=store)
        self.ca = self.gateway.ca
        self.base = self.gateway.base_url
        self.clients = {}

    def counted(self) -> Counted:
        return Counted(self.runner, self.database)

    def test_named_locks_are_taken_without_a_handoff(self):
        """
        SQLite's named locks never wait (a non-blocking ``lockf``): a
        ``new-authz`` takes and gives back four (account, name, plan,
        budget) without handing one to the store's thread.
        """
        self.register()
        with self.counted() as counted:
            reply = self.new_authz()
        self.assertEqual(reply.status, 201, reply.body)
        self.assertEqual(counted.handoffs["try_lock"], 0, counted.handoffs)
        self.assertEqual(counted.handoffs["unlock"], 0, counted.handoffs)

    def test_a_budget_reservation_is_one_transaction_without_a_lock(self):
        """
        The budget's check and the attempt it admits are one store call
        (`IStore.reserve`): one hand-off and one transaction, where a
        lock, the spend's transaction and the attempt's write took three
        hand-offs and two transactions (plus the lock's two).  A refusal
        writes nothing.
        """
        store = self.gateway.context.store
        account = self.successResultOf(store.create_account("tp", {"kty": "EC"}))
        attempt = OrderAttempt(id="a1", account_id=account.id, identifiers=["x.test"],
                               created_at="2026-12-03T10:00:00Z")
        with self.counted() as counted:
            spend, admitted = self.successResultOf(store.reserve(
                attempt, "2026-12-03T00:00:00Z", orders=1, pending_authorizations=10,
                now=1_796_292_000.0))
        self.assertEqual((spend.order_times, spend.names_in_flight, admitted), ((), 0, True))
        self.assertEqual((dict(counted.handoffs), counted.transactions), ({"reserve": 1}, 1))

        refused = OrderAttempt(id="a2", account_id=account.id, identifiers=["y.test"],
                               created_at="2026-12-03T10:00:01Z")
        spend, admitted = self.successResultOf(store.reserve(
            refused, "2026-12-03T00:00:00Z", orders=1, pending_authorizations=10,
            now=1_796_292_000.0))
        self.assertEqual((spend.order_times, spend.names_in_flight, admitted),
                         (("2026-12-03T10:00:00Z",), 1, False))
        spend = self.successResultOf(store.spend(account.id, "2026-12-03T00:00:00Z"))
        self.assertEqual((spend.order_times, spend.names_in_flight),
                         (("2026-12-03T10:00:00Z",), 1))

    def test_handoffs_per_issuance_step(self):
        """
        Hand-offs, transactions and durable commits of each v1 step of a
        single-name certificate, nonce included (before issue 15's
        batching: new-authz 18 hand-offs, a poll 3, challenge 9, new-cert 14;
        new-authz 7 before its sixth round).
        """
        self.register()
        with self.counted() as authz:
            reply = self.new_authz()
        self.assertEqual(reply.status, 201, reply.body)
        self.get(reply.header("location")[len(self.base):])  # asks the CA once
        with self.counted() as poll:
            polled = self.get(reply.header("location")[len(self.base):])
        self.assertEqual(polled.status, 200, polled.body)
        # A client's poll answered from the store: the authorization, its
        # owner and its challenges in one call (`IStore.authorization_read`),
        # where it made three.
        self.assertEqual((dict(poll.handoffs), poll.transactions),
                         ({"authorization_read": 1}, 0))
        challenge = next(c for c in reply.json()["challenges"] if c["type"] == "http-01")
        with self.counted() as answer:
            answered = self.post(challenge["uri"], {
                "resource": "challenge", "type": "http-01",
                "keyAuthorization": KEY.key_authorization(challenge["token"])})
        self.assertEqual(answered.status, 202, answered.body)
        with self.counted() as cert:
            issued = self.post("/acme/new-cert",
                               {"resource": "new-cert", "csr": b64url(make_csr([NAME]))})
        self.assertEqual(issued.status, 201, issued.body)
        self.assertEqual((authz.total, authz.transactions, authz.durable), (6, 3, 2),
                         authz.handoffs)
        # Its reads before the CA is asked: one call (`IStore.name_reads`).
        self.assertEqual(authz.handoffs["name_reads"], 1)
        self.assertEqual(authz.handoffs["reserve"], 1)
        # Its view shows the challenges just written, not read again (7
        # hand-offs before issue 15's sixth round).
        self.assertNotIn("challenges_for_authorization", authz.handoffs)
        # The authorization and its challenges in one call
        # (`IStore.authorization_read`), where it made two (7 hand-offs).
        self.assertEqual(answer.handoffs["authorization_read"], 1, answer.handoffs)
        self.assertNotIn("authorization_by_id", answer.handoffs)
        self.assertEqual((answer.total, answer.transactions, answer.durable), (6, 3, 0),
                         answer.handoffs)
        # The chain is written without asking first whether it is stored.
        self.assertNotIn("certificate_by_serial", cert.handoffs)
        self.assertEqual((cert.total, cert.transactions, cert.durable), (9, 3, 1),
                         cert.handoffs)

    def test_a_ready_order_reads_what_the_store_holds_of_its_authorizations_in_one_call(self):
        """
        A 3-name ``new-cert`` after the v1 flow's three ``new-authz``: the
        CA reuses their valid authorizations and answers the order
        ``ready``, and the gateway reads what it stores of all three (each
        with its challenges) in one store call
        (`IStore.authorizations_by_upstream_urls`) — no read of the CA, none
        after the write — where it made four per authorization (the
        authorization and its challenges, the authorization again, its
        challenges again when refreshed).  26 hand-offs, then 13, now 12.
        """
        self.register()
        names = ["a.example.com", "b.example.com", "c.example.com"]
        for name in names:
            url, answered = self.authorize(name)
            self.assertEqual(answered.status, 202, answered.body)
            self.assertEqual(self.get(url[len(self.base):]).json()["status"], "valid")
        reads = self.ca.counts["authorization"]
        with self.counted() as cert:
            issued = self.post("/acme/new-cert",
                               {"resource": "new-cert", "csr": b64url(make_csr(names))})
        self.assertEqual(issued.status, 201, issued.body)
        self.assertEqual(self.ca.counts["authorization"], reads)
        self.assertEqual(cert.handoffs["authorizations_by_upstream_urls"], 1, cert.handoffs)
        self.assertNotIn("authorization_by_upstream_url", cert.handoffs)
        self.assertNotIn("challenges_for_authorization", cert.handoffs)
        # Whether the account asked to authorize each name of the CSR: one
        # call (`IStore.find_authorizations_of_names`), where it made one
        # per name.
        self.assertEqual(cert.handoffs["find_authorizations_of_names"], 1, cert.handoffs)
        self.assertNotIn("find_authorizations", cert.handoffs)
        # The account's orders for the three names: read once for the fast
        # path (none ready) and the careful one, which each read them
        # (13 hand-offs before issue 15's sixth round).
        self.assertEqual(cert.handoffs["find_orders"], 1, cert.handoffs)
        self.assertEqual((cert.total, cert.transactions, cert.durable), (12, 5, 3),
                         cert.handoffs)
