"""
`gateway.translate.renewals.abandon_wrong_plans` on planned renewals made
through a whole in-memory gateway and the FakeCA: which planned orders a
``new-cert``'s names give up (one sharing a name without being for exactly
them; not one for other names, not one given up already), which of their
authorizations are deactivated (pending and unanswered only), a refusal by
the CA that leaves one and goes on, the count returned and the log lines
the operator reads.
"""

from __future__ import annotations


from gateway.translate.accounts import BoundAccount, upstream_for
from gateway.translate.renewals import abandon_wrong_plans
from tests.test_renewals import NAMES, RenewalTestCase
from tests.test_v1_face import KEY

from tests.support.logs import LogLines

OTHER_NAMES = ("x.renew.test", "y.renew.test")




class WrongPlanTests(RenewalTestCase):

    def setUp(self):
        super().setUp()
        self.register()

    def bound(self):
        account = self.successResultOf(self.gateway.store.account_by_thumbprint(KEY.thumbprint))
        return BoundAccount(account, self.resolve(upstream_for(self.gateway.context, account)))

    def abandon(self, names):
        return self.resolve(abandon_wrong_plans(self.gateway.context, self.bound(), names))

    def plan(self, first_name):
        """The planned order the first new-authz of a renewal makes, and the authorization."""
        reply = self.new_authz(first_name)
        self.assertEqual(reply.status, 201, reply.body)
        authorization = self.stored_authorization(reply.header("location"))
        return self.successResultOf(self.gateway.store.order_by_id(authorization.order_id))

    def ca_statuses(self, names):
        return {a.identifier: a.status for a in self.ca.authorizations.values() if a.identifier in names
                and a.status != "valid"}

    def order_status(self, order):
        return self.successResultOf(self.gateway.store.order_by_id(order.id)).status

    def test_a_plan_sharing_a_name_is_given_up_and_its_unused_authorizations_deactivated(self):
        self.first_certificate()
        self.ca.validate_immediately = False  # an answered challenge stays processing
        url, answered = self.authorize(NAMES[1])
        self.assertEqual(answered.status, 202, answered.body)
        plan = self.successResultOf(self.gateway.store.order_by_id(self.stored_authorization(url).order_id))
        self.assertEqual(plan.identifiers, NAMES)
        with LogLines("gateway.translate.renewals") as log:
            self.assertEqual(self.abandon([NAMES[1].upper()]), 2)
        self.assertEqual(self.ca_statuses(NAMES), {NAMES[0]: "deactivated", NAMES[1]: "pending",
                                                   NAMES[2]: "deactivated"})
        self.assertEqual(self.order_status(plan), "invalid")
        self.assertEqual(log.lines, [
            f"new-cert for ['{NAMES[1]}'] is not the planned renewal {plan.id} "
            f"(['{NAMES[0]}', '{NAMES[1]}', '{NAMES[2]}']): plan given up, "
            f"2 unused authorization(s) deactivated"])
        # given up once: a second new-cert does not give it up again
        with LogLines("gateway.translate.renewals") as log:
            self.assertEqual(self.abandon([NAMES[1]]), 0)
        self.assertEqual(log.lines, [])

    def test_a_plan_for_exactly_the_names_or_for_other_names_is_kept(self):
        self.first_certificate()
        plan = self.plan(NAMES[0])
        with LogLines("gateway.translate.renewals") as log:
            self.assertEqual(self.abandon([n.upper() for n in reversed(NAMES)] + [NAMES[0]]), 0)
            self.assertEqual(self.abandon(["elsewhere.renew.test"]), 0)
        self.assertEqual(log.lines, [])
        self.assertEqual(self.order_status(plan), "pending")
        self.assertEqual(set(self.ca_statuses(NAMES).values()), {"pending"})

    def test_every_plan_sharing_a_name_is_looked_at(self):
        """The newest plan is for other names; the older one is given up."""
        self.first_certificate()
        self.ca.reuse_authorizations = True
        self.issue(OTHER_NAMES)
        self.ca.reuse_authorizations = False
        self.gateway.advance(60 * 86400)
        for client in self.clients.values():
            client.nonce = None
        older = self.plan(NAMES[0])
        newer = self.plan(OTHER_NAMES[0])
        self.assertEqual(self.abandon([NAMES[0]]), 3)
        self.assertEqual(self.order_status(older), "invalid")
        self.assertEqual(self.order_status(newer), "pending")

    def test_an_authorization_the_ca_will_not_deactivate_is_left_and_the_rest_done(self):
        self.first_certificate()
        plan = self.plan(NAMES[2])
        first = next(a for a in self.ca.authorizations.values()
                     if a.identifier == NAMES[0] and a.status == "pending")
        self.ca.fail_next(f"/authz/{first.id}", 403, {"type": "unauthorized", "detail": "not yours"})
        with LogLines("gateway.translate.renewals") as log:
            self.assertEqual(self.abandon([NAMES[2]]), 2)
        self.assertEqual(self.ca_statuses(NAMES), {NAMES[0]: "pending", NAMES[1]: "deactivated",
                                                   NAMES[2]: "deactivated"})
        stored = {a.identifier: a for a in self.successResultOf(
            self.gateway.store.authorizations_for_order(plan.id))}
        self.assertEqual(stored[NAMES[0]].status, "pending")
        self.assertEqual(stored[NAMES[1]].status, "deactivated")
        self.assertEqual(log.lines[0],
                         f"could not deactivate authorization {stored[NAMES[0]].id} of abandoned plan "
                         f"{plan.id}: 403 unauthorized: not yours")
        self.assertTrue(log.lines[1].endswith("plan given up, 2 unused authorization(s) deactivated"))
