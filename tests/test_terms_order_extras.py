"""
`gateway.translate.terms.order_terms` through whole in-memory gateways: the
profile rules see the client's key and the order's names, and an order that
renews a certificate without being its planned order (renewal planning
off) carries ``replaces`` but is planned for nothing.
"""

from __future__ import annotations

from gateway.translate.inventory import ari_cert_id
from gateway.translate.profiles import ProfilePolicy, ProfileRule
from tests.test_renewals import NAMES, RenewalTestCase
from tests.test_v1_face import KEY, OTHER


class ProfileByKeyAndNamesTests(RenewalTestCase):
    ca_options = {"profiles": {"classic": "90 days", "shortlived": "6 days"}}
    gateway_options = {"profiles": ProfilePolicy(default="classic", rules=(
        ProfileRule(profile="shortlived", thumbprint=KEY.thumbprint, names="*.lab.renew.test"),))}

    def profile_of_new_authz(self, name, key):
        reply = self.new_authz(name, key=key)
        self.assertEqual(reply.status, 201, reply.body)
        return self.ca.orders[-1].profile

    def test_the_rule_matches_the_clients_key_and_the_orders_names(self):
        self.register(KEY)
        self.register(OTHER)
        self.assertEqual(self.profile_of_new_authz("a.lab.renew.test", KEY), "shortlived")
        self.assertEqual(self.profile_of_new_authz("b.lab.renew.test", OTHER), "classic")
        self.assertEqual(self.profile_of_new_authz("c.renew.test", KEY), "classic")


class UnplannedRenewalTests(RenewalTestCase):
    gateway_options = {"plan_renewals": False}

    def test_a_renewal_by_new_cert_replaces_but_is_planned_for_nothing(self):
        self.register()
        self.first_certificate()
        account = self.successResultOf(self.gateway.store.account_by_thumbprint(KEY.thumbprint))
        (old,) = self.successResultOf(self.gateway.store.current_certificates())
        self.ca.reuse_authorizations = True
        for name in NAMES:
            self.authorize(name)
        issued = self.new_cert(NAMES)
        self.assertEqual(issued.status, 201, issued.body)
        orders = self.successResultOf(self.gateway.store.find_orders(account.id, NAMES))
        renewal = max(orders, key=lambda o: o.created_at)
        self.assertEqual(renewal.replaces, ari_cert_id(old))
        self.assertEqual(self.ca.orders[-1].replaces, ari_cert_id(old))
        self.assertTrue(all(o.planned_for is None for o in orders), orders)
