"""
`gateway.translate.sweeps` through a whole in-memory gateway and the
FakeCA: a sweep runs recovery (leaving a newOrder younger than ten request
timeouts, which may still be in flight) and then deactivates abandoned
pending authorizations — only those older than ``abandoned_after``, only of
keys the gateway holds, each stamped with the time — even when recovery
fails; it is skipped while another sweep holds the lock.
"""

from __future__ import annotations

import attrs

from gateway.keys.keystore import KeyStore
from gateway.store import Insert, OrderAttempt
from gateway.translate.budget import BudgetLimits
from gateway.translate.signing import SigningKeys
from gateway.translate.sweeps import SWEEP_LOCK, deactivate_abandoned, sweep
from tests.test_v1_face import KEY, OTHER, FaceTestCase

from tests.support.logs import LogLines




class BrokenAttempts:
    """The store, except that reading the open order attempts fails."""

    def __init__(self, store):
        self._store = store

    def __getattr__(self, name):
        return getattr(self._store, name)

    async def open_order_attempts(self):
        raise OSError("database is locked")


class SweepTests(FaceTestCase):

    def setUp(self):
        super().setUp()
        self.context = self.gateway.context
        self.context.budget.limits = BudgetLimits(abandoned_after=600)

    def pending(self, key=KEY):
        account = self.successResultOf(self.gateway.store.account_by_thumbprint(key.thumbprint))
        return sorted(a.identifier for a in self.successResultOf(
            self.gateway.store.authorizations_with_status("pending", account_id=account.id)))

    def ca_status(self, name):
        return next(a.status for a in self.ca.authorizations.values() if a.identifier == name)

    def test_only_authorizations_older_than_abandoned_after_are_deactivated(self):
        self.register()
        self.assertEqual(self.new_authz("old.example.test").status, 201)
        self.gateway.advance(300)
        self.assertEqual(self.new_authz("young.example.test").status, 201)
        self.gateway.advance(301)
        with LogLines("gateway.translate.sweeps") as log:
            self.assertEqual(self.resolve(deactivate_abandoned(self.context)), 1)
        self.assertEqual(self.pending(), ["young.example.test"])
        self.assertEqual(self.ca_status("old.example.test"), "deactivated")
        self.assertEqual(self.ca_status("young.example.test"), "pending")
        self.assertEqual(log.lines, ["deactivated 1 abandoned pending authorization(s)"])
        account = self.successResultOf(self.gateway.store.account_by_thumbprint(KEY.thumbprint))
        (stored,) = self.successResultOf(self.gateway.store.authorizations_with_status(
            "deactivated", account_id=account.id))
        self.assertEqual(stored.updated_at, self.context.now())
        self.assertNotEqual(stored.updated_at, stored.created_at)

    def test_nothing_abandoned_nothing_logged(self):
        self.register()
        self.assertEqual(self.new_authz("young.example.test").status, 201)
        with LogLines("gateway.translate.sweeps") as log:
            self.assertEqual(self.resolve(deactivate_abandoned(self.context)), 0)
        self.assertEqual(log.lines, [])
        self.assertEqual(self.ca_status("young.example.test"), "pending")

    def test_without_abandoned_after_nothing_is_swept(self):
        self.register()
        self.assertEqual(self.new_authz("old.example.test").status, 201)
        self.context.budget.limits = BudgetLimits(abandoned_after=None)
        self.gateway.advance(10 * 86400)
        self.assertEqual(self.resolve(deactivate_abandoned(self.context)), 0)
        self.assertEqual(self.ca_status("old.example.test"), "pending")

    def test_authorizations_of_keys_the_gateway_no_longer_holds_are_left(self):
        self.register(KEY)
        self.register(OTHER)
        # the one of the key no longer held comes first: the sweep goes on past it
        self.assertEqual(self.new_authz("theirs.example.test", key=OTHER).status, 201)
        self.gateway.advance(1)
        self.assertEqual(self.new_authz("mine.example.test", key=KEY).status, 201)
        self.gateway.advance(601)
        without_other = attrs.evolve(self.context, keys=SigningKeys(KeyStore.from_keys([KEY])))
        self.assertEqual(self.resolve(deactivate_abandoned(without_other)), 1)
        self.assertEqual(self.ca_status("mine.example.test"), "deactivated")
        self.assertEqual(self.ca_status("theirs.example.test"), "pending")
        self.assertEqual(self.pending(OTHER), ["theirs.example.test"])

    def test_a_sweep_recovers_settled_attempts_then_deactivates(self):
        self.register()
        self.assertEqual(self.new_authz("old.example.test").status, 201)
        account = self.successResultOf(self.gateway.store.account_by_thumbprint(KEY.thumbprint))
        store = self.gateway.store
        self.gateway.advance(398)
        settled = OrderAttempt(id=store.new_id(), account_id=account.id,
                               identifiers=("settled.example.test",), created_at=self.context.now())
        self.gateway.advance(2)
        in_flight = OrderAttempt(id=store.new_id(), account_id=account.id,
                                 identifiers=("flight.example.test",), created_at=self.context.now())
        self.successResultOf(store.write([Insert(settled), Insert(in_flight)]))
        self.gateway.advance(299)
        # request timeout 30 s: an attempt younger than 300 s may be in flight
        # (this one is 299 s old), an older one (301 s) has settled
        self.assertTrue(self.resolve(sweep(self.context, 30.0)))
        self.assertEqual([a.id for a in self.successResultOf(store.open_order_attempts())], [in_flight.id])
        self.assertEqual(self.ca_status("old.example.test"), "deactivated")

    def test_a_failed_recovery_does_not_stop_the_deactivation(self):
        self.register()
        self.assertEqual(self.new_authz("old.example.test").status, 201)
        self.gateway.advance(601)
        broken = attrs.evolve(self.context, store=BrokenAttempts(self.gateway.store))
        with LogLines("gateway.translate.sweeps") as log:
            self.assertTrue(self.resolve(sweep(broken, 30.0)))
        self.assertEqual(self.ca_status("old.example.test"), "deactivated")
        self.assertIn("recovery failed: database is locked", log.lines)

    def test_a_sweep_is_skipped_while_another_holds_the_lock(self):
        self.register()
        self.assertEqual(self.new_authz("old.example.test").status, 201)
        self.gateway.advance(601)
        lock = self.context.locks.lock_for(SWEEP_LOCK)
        self.successResultOf(lock.acquire())
        self.assertFalse(self.resolve(sweep(self.context, 30.0)))
        self.assertEqual(self.ca_status("old.example.test"), "pending")
        lock.release()
        self.assertTrue(self.resolve(sweep(self.context, 30.0)))
        self.assertEqual(self.ca_status("old.example.test"), "deactivated")

    def test_what_the_ca_answers_instead_is_logged(self):
        self.register()
        for name in ("gone", "refused", "silent"):
            self.assertEqual(self.new_authz(f"{name}.example.test").status, 201)
        self.gateway.advance(601)
        by_name = {a.identifier: a for a in self.ca.authorizations.values()}
        stored = {a.identifier: a for a in self.successResultOf(
            self.gateway.store.authorizations_with_status("pending"))}
        del self.ca.authorizations[by_name["gone.example.test"].id]
        self.ca.fail_next(f"/authz/{by_name['refused.example.test'].id}", 403,
                          {"type": "unauthorized", "detail": "not now"})
        self.ca.fail_next(f"/authz/{by_name['silent.example.test'].id}", 503)
        with LogLines("gateway.translate.sweeps") as log:
            self.assertEqual(self.resolve(deactivate_abandoned(self.context)), 1)
        gone, refused, silent = (stored[f"{n}.example.test"].id for n in ("gone", "refused", "silent"))
        self.assertEqual(log.lines[:3], [
            f"could not deactivate abandoned authorization {gone}: 404 malformed: no such authorization",
            f"could not deactivate abandoned authorization {refused}: 403 unauthorized: not now",
            f"could not deactivate abandoned authorization {silent}: "
            f"upstream answered 503 without a problem document"])
        self.assertEqual(log.lines[3], "deactivated 1 abandoned pending authorization(s)")
