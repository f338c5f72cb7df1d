"""
What a v1 flow reads from the store must not grow with what the store holds
(issue 15): a py-spy profile of sequential issuance showed each new-authz
decoding every certificate of every account (the renewal inventory, read to
plan renewals) and every order the account ever made (the order budget, which
needs only their creation times), so a gateway got slower with each
certificate it issued.  Counted here as rows decoded, through a whole
in-memory gateway (SQLite) and the FakeCA.
"""

from __future__ import annotations

import collections
from contextlib import contextmanager

from gateway.keys.jose import b64url
from gateway.store import Certificate, Order
from gateway.store import sql
from tests.test_v1_face import KEY, OTHER, FaceTestCase, make_csr


@contextmanager
def decoded_rows():
    """Count the store's rows decoded into records, by record type, while in the ``with``."""
    counts: collections.Counter = collections.Counter()
    original = sql._decode

    def counting(record_type, row):
        counts[record_type] += 1
        return original(record_type, row)

    sql._decode = counting
    try:
        yield counts
    finally:
        sql._decode = original


class FlowStoreReadTests(FaceTestCase):

    def test_new_authz_reads_only_certificates_holding_its_name(self):
        """
        A new-authz plans a renewal from its own account's certificates that
        hold the name: other accounts' certificates, and the account's for
        other names, are not read.
        """
        self.register(key=OTHER)
        for index in range(3):
            self.issue(names=(f"other-{index}.example.test",), key=OTHER)
        self.register()
        self.issue(names=("elsewhere.example.test",))
        with decoded_rows() as counts:
            reply = self.new_authz("mine.example.test")
        self.assertEqual(reply.status, 201, reply.body)
        self.assertEqual(counts[Certificate], 0)

        self.issue(names=("mine.example.test", "www.example.test"))
        with decoded_rows() as counts:
            reply = self.new_authz("mine.example.test")
        self.assertEqual(reply.status, 201, reply.body)
        self.assertEqual(counts[Certificate], 1)
        self.assertEqual(reply.json()["identifier"]["value"], "mine.example.test")

    def test_new_cert_reads_only_its_accounts_certificates_holding_its_names(self):
        """
        A new-cert that orders anew (several names) looks for the
        certificate it renews among its own account's that hold its names.
        """
        self.register(key=OTHER)
        for index in range(3):
            self.issue(names=(f"other-{index}.example.test",), key=OTHER)
        self.register()
        self.issue(names=("elsewhere.example.test",))
        self.issue(names=("a.example.test",))
        names = ["a.example.test", "b.example.test"]
        for name in names:
            self.authorize(name)
        with decoded_rows() as counts:
            reply = self.post("/acme/new-cert", {"resource": "new-cert", "csr": b64url(make_csr(names))})
        self.assertEqual(reply.status, 201, reply.body)
        # The account's certificate for a.example.test is read, no other.
        self.assertEqual(counts[Certificate], 1)

    def test_the_order_budget_decodes_no_order(self):
        """
        The budget needs the creation times of the account's orders in its
        window, not the orders: however many the account made, none is
        decoded — and each still counts.
        """
        self.register()
        for index in range(4):
            self.issue(names=(f"name-{index}.example.test",))
        store = self.gateway.store
        account = self.successResultOf(store.account_by_thumbprint(KEY.thumbprint))
        with decoded_rows() as counts:
            spend = self.successResultOf(store.spend(account.id, "2000-01-01T00:00:00Z"))
        self.assertEqual(counts[Order], 0)
        self.assertEqual(len(spend.order_times), 4)
        later = self.successResultOf(store.spend(account.id, "2999-01-01T00:00:00Z"))
        self.assertEqual(later.order_times, ())

