"""
The rate-limit economy against the in-memory CA and a fake clock: local
refusals before the CA's limits, upstream ``rateLimited`` holding the
account, and abandoned pending authorizations freeing the budget.  (What a
polling client costs the CA: ``tests/test_following.py``.)
"""

from cryptography.hazmat.primitives.asymmetric import ec
from twisted.internet import defer
from twisted.trial.unittest import SynchronousTestCase

from gateway.translate.budget import BudgetLimits
from gateway.translate.sweeps import deactivate_abandoned
from gateway.keys.jose import AccountKey
from gateway.process.testing import build_test_gateway
from tests.support.v1_client import V1TestClient

KEY = AccountKey.from_private_key(ec.generate_private_key(ec.SECP256R1()))


class BudgetTests(SynchronousTestCase):
    """
    Each test drives v1 new-authz requests through a whole in-memory gateway.
    """

    def setUp(self):
        self.gateway = build_test_gateway([KEY])
        self.client = V1TestClient(self.gateway.base_url, KEY, http=self.gateway.client)

    def resolve(self, coroutine):
        return self.successResultOf(defer.ensureDeferred(coroutine))

    def new_authz(self, name):
        return self.resolve(self.client.post(self.gateway.url("/acme/new-authz"), {
            "resource": "new-authz", "identifier": {"type": "dns", "value": name}}))

    def limit(self, **limits):
        self.gateway.context.budget.limits = BudgetLimits(**limits)

    def assertRateLimited(self, reply, words):
        self.assertEqual(reply.status, 429, reply.body)
        problem = reply.json()
        self.assertEqual(problem["type"], "urn:acme:error:rateLimited")
        self.assertIn(words, problem["detail"])
        self.assertGreater(int(reply.header("retry-after")), 0)
        return int(reply.header("retry-after"))

    def test_order_limit_refuses_locally_and_recovers_after_the_window(self):
        """
        With a limit of 3 orders per hour, the fourth new-authz is refused
        with 429, a detail naming the limit and a Retry-After up to the
        window; the CA saw exactly 3 orders.  Once the window has passed,
        orders are allowed again.
        """
        self.limit(orders=3, order_window=3600, pending_authorizations=100)
        for index in range(3):
            self.assertEqual(self.new_authz(f"n{index}.example.test").status, 201)
        retry = self.assertRateLimited(self.new_authz("n3.example.test"), "too many new orders")
        self.assertIn("--order-limit", self.new_authz("n3.example.test").json()["detail"])
        self.assertLessEqual(retry, 3600)
        self.assertEqual(self.gateway.ca.counts["newOrder"], 3)
        self.gateway.advance(retry + 1)
        self.client.nonce = None  # the last one expired with the hour
        self.assertEqual(self.new_authz("n3.example.test").status, 201)
        self.assertEqual(self.gateway.ca.counts["newOrder"], 4)

    def test_pending_limit_and_abandoned_authorizations(self):
        """
        With 2 pending authorizations allowed, a third new-authz is refused
        locally; after the idle time, the sweep deactivates the abandoned
        ones upstream, and the budget recovers.
        """
        self.limit(orders=100, pending_authorizations=2, abandoned_after=600)
        self.assertEqual(self.new_authz("p0.example.test").status, 201)
        self.assertEqual(self.new_authz("p1.example.test").status, 201)
        self.assertRateLimited(self.new_authz("p2.example.test"), "pending authorizations")
        self.assertEqual(self.gateway.ca.counts["newOrder"], 2)
        self.gateway.advance(601)
        done = self.successResultOf(defer.ensureDeferred(deactivate_abandoned(self.gateway.context)))
        self.assertEqual(done, 2)
        statuses = sorted(a.status for a in self.gateway.ca.authorizations.values())
        self.assertEqual(statuses, ["deactivated", "deactivated"])
        self.assertEqual(self.new_authz("p2.example.test").status, 201)

    def test_abandoned_sweep_reads_the_status_not_the_words(self):
        """
        The sweep records an abandoned authorization the CA answers 404 for
        as deactivated (gone frees the budget as well), but not one whose
        refusal merely mentions 404 in its detail, nor one the CA did not
        answer for: those stay pending for the next sweep.
        """
        self.limit(orders=100, pending_authorizations=10, abandoned_after=600)
        for name in ("gone", "refused", "silent"):
            self.assertEqual(self.new_authz(f"{name}.example.test").status, 201)
        self.gateway.advance(601)
        by_name = {a.identifier: a for a in self.gateway.ca.authorizations.values()}
        del self.gateway.ca.authorizations[by_name["gone.example.test"].id]
        self.gateway.ca.fail_next(f"/authz/{by_name['refused.example.test'].id}", 400,
                                  {"type": "malformed", "detail": "error 404 in the CA's words"})
        self.gateway.ca.fail_next(f"/authz/{by_name['silent.example.test'].id}", 503)
        done = self.successResultOf(defer.ensureDeferred(deactivate_abandoned(self.gateway.context)))
        self.assertEqual(done, 1)
        account = self.resolve(self.gateway.store.account_by_thumbprint(KEY.thumbprint))
        stored = self.resolve(self.gateway.store.authorizations_with_status(
            "deactivated", account_id=account.id))
        self.assertEqual([a.identifier for a in stored], ["gone.example.test"])
        pending = self.resolve(self.gateway.store.authorizations_with_status(
            "pending", account_id=account.id))
        self.assertEqual(sorted(a.identifier for a in pending),
                         ["refused.example.test", "silent.example.test"])

    def test_upstream_rate_limit_holds_the_account(self):
        """
        An upstream ``rateLimited`` with Retry-After reaches the client as a
        v1 429 with that Retry-After; until it passes, further orders are
        refused without calling upstream.
        """
        self.gateway.ca.fail_next("/new-order", 429, {"type": "rateLimited",
                                                      "detail": "too many new orders recently"},
                                  {"Retry-After": "120"})
        reply = self.new_authz("r0.example.test")
        self.assertEqual(reply.status, 429)
        self.assertEqual(reply.header("retry-after"), "120")
        calls = self.gateway.ca.counts["newOrder"]
        retry = self.assertRateLimited(self.new_authz("r1.example.test"), "rate-limited this account")
        self.assertLessEqual(retry, 120)
        self.assertEqual(self.gateway.ca.counts["newOrder"], calls)
        self.gateway.advance(121)
        self.assertEqual(self.new_authz("r1.example.test").status, 201)

    def test_budget_state_reports_what_is_left(self):
        """
        The budget state counts orders in the window and pending
        authorizations.
        """
        self.limit(orders=10, pending_authorizations=5)
        self.new_authz("s0.example.test")
        self.new_authz("s1.example.test")
        account = self.resolve(self.gateway.store.account_by_thumbprint(KEY.thumbprint))
        state = self.resolve(self.gateway.context.budget.state(account.id))
        self.assertEqual((state.orders_used, state.orders_left, state.pending, state.pending_left),
                         (2, 8, 2, 3))
