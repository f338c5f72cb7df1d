"""
`gateway.translate.recovery` through a whole in-memory gateway and the
FakeCA, with the account's order list (RFC 8555 §7.1.2.1) served as Pebble
serves it (the FakeCA, like Let's Encrypt, has none): a ``newOrder`` whose
answer was lost is found in the list (the newest order for exactly its
names that is not stored yet, across pages) and stored under the attempt's
id; without a list (404, 405) the attempt is lost; a list that fails later
leaves it for the next pass; partial rows are completed from the CA, or
marked gone when the CA answers 404; rows of keys the gateway no longer
holds, of another CA, or of an attempt still in flight are left alone.
"""

from __future__ import annotations

import json

import attrs

from gateway.keys.keystore import KeyStore
from gateway.status import Status
from gateway.store import Insert, Order, OrderAttempt
from gateway.translate.accounts import upstream_for
from gateway.translate.recovery import MAX_ORDER_PAGES, Recovered, recover
from gateway.translate.signing import SigningKeys
from gateway.upstream.client import UpstreamResponse
from gateway.upstream.errors import UpstreamProblem
from tests.test_v1_face import KEY, NAME, FaceTestCase

from tests.support.logs import LogLines




class OrderListing:
    """
    The gateway's upstream client, with the account's order list served
    from ``pages`` (lists of order URLs, linked by ``next``), or a problem.
    """

    def __init__(self, upstream, pages=None, problem=None, endless=False):
        self._upstream = upstream
        self.pages = pages or [[]]
        self.problem = problem  # (status, page index) answered instead
        self.endless = endless
        self.read = []

    def __getattr__(self, name):
        return getattr(self._upstream, name)

    async def post_as_get(self, account, url, kind="read"):
        if kind != "orders":
            return await self._upstream.post_as_get(account, url, kind=kind)
        self.read.append(url)
        index = int(url.rsplit("page=", 1)[1]) if "page=" in url else 0
        if self.problem and self.problem[1] == index:
            raise UpstreamProblem("urn:ietf:params:acme:error:malformed", "no order list", self.problem[0])
        base = url.split("?")[0]
        headers = {}
        if self.endless or index + 1 < len(self.pages):
            headers["link"] = [f'<{base}?page={index + 1}>;rel="next"']
        urls = [] if self.endless else self.pages[index]
        return UpstreamResponse(url, 200, headers, json.dumps({"orders": urls + [7]}).encode())


class RecoveryTests(FaceTestCase):

    def setUp(self):
        super().setUp()
        self.context = self.gateway.context
        self.store = self.gateway.store
        self.register()
        self.account = self.successResultOf(self.store.account_by_thumbprint(KEY.thumbprint))
        self.upstream_account = self.resolve(upstream_for(self.context, self.account))

    def ca_order(self, names):
        """An order the CA made but the gateway never stored."""
        return self.resolve(self.context.upstream.new_order(self.upstream_account, list(names)))

    def attempt(self, names):
        attempt = OrderAttempt(id=self.store.new_id(), account_id=self.account.id,
                               identifiers=tuple(names), created_at=self.context.now())
        self.successResultOf(self.store.write([Insert(attempt)]))
        return attempt

    def recover_with(self, listing=None, keys=None, settled_after=0.0):
        context = self.context
        if listing is not None:
            context = attrs.evolve(context, upstream=listing)
        if keys is not None:
            context = attrs.evolve(context, keys=keys)
        return self.resolve(recover(context, settled_after=settled_after))

    def open_attempts(self):
        return [a.id for a in self.successResultOf(self.store.open_order_attempts())]

    def stored_order(self, order_id):
        return self.successResultOf(self.store.order_by_id(order_id))

    def test_a_lost_answer_is_found_in_the_order_list_and_stored(self):
        other = self.ca_order(["other.example.test"])
        older = self.ca_order(["lost.example.test"])
        newest = self.ca_order(["lost.example.test"])
        attempt = self.attempt(["lost.example.test"])
        listing = OrderListing(self.context.upstream, pages=[[older.url], [newest.url, other.url]])
        with LogLines("gateway.translate.recovery") as log:
            done = self.recover_with(listing)
        self.assertEqual(done, Recovered(adopted=1))
        self.assertEqual(len(listing.read), 2, "both pages read")
        stored = self.stored_order(attempt.id)
        self.assertEqual(stored.upstream_url, newest.url, "the newest order for the names")
        self.assertEqual(stored.created_at, attempt.created_at)
        self.assertEqual(stored.identifiers, ("lost.example.test",))
        self.assertEqual(len(self.successResultOf(self.store.authorizations_for_order(attempt.id))), 1)
        self.assertEqual(self.open_attempts(), [])
        self.assertIn(f"recovery: order {attempt.id} for ['lost.example.test'], whose answer was lost, "
                      f"found at the CA and stored", log.lines)
        self.assertIn("recovery: 1 lost order(s) found at the CA and stored, 0 not found, 0 partial "
                      "row(s) completed, 0 gone at the CA, 0 left for later", log.lines)

    def test_an_order_already_stored_is_not_adopted_twice(self):
        self.authorize(NAME)  # stores an order for NAME
        (known,) = self.successResultOf(self.store.find_orders(self.account.id, (NAME,)))
        lost = self.ca_order([NAME])
        attempt = self.attempt([NAME])
        listing = OrderListing(self.context.upstream, pages=[[lost.url, known.upstream_url]])
        self.assertEqual(self.recover_with(listing).adopted, 1)
        self.assertEqual(self.stored_order(attempt.id).upstream_url, lost.url)

    def test_without_its_order_in_the_list_the_attempt_is_lost(self):
        self.ca_order(["other.example.test"])
        attempt = self.attempt(["lost.example.test"])
        listing = OrderListing(self.context.upstream, pages=[[self.ca_order(["x.example.test"]).url]])
        self.assertEqual(self.recover_with(listing), Recovered(lost=1))
        self.assertEqual(self.open_attempts(), [])
        self.assertIsNone(self.stored_order(attempt.id))

    def test_a_list_advertised_but_not_served_means_lost(self):
        for status in (404, 405):
            attempt = self.attempt([f"lost{status}.example.test"])
            listing = OrderListing(self.context.upstream, problem=(status, 0))
            self.assertEqual(self.recover_with(listing), Recovered(lost=1), status)
            self.assertNotIn(attempt.id, self.open_attempts())

    def test_a_list_that_fails_is_left_for_the_next_pass(self):
        first = self.attempt(["a.example.test"])
        other = self.ca_order(["other.example.test"])
        with LogLines("gateway.translate.recovery") as log:
            done = self.recover_with(OrderListing(self.context.upstream, pages=[[other.url], []],
                                                  problem=(404, 1)))
        self.assertEqual(done, Recovered(failed=1))
        self.assertEqual(self.open_attempts(), [first.id])
        self.assertEqual(len(log.lines), 2)
        self.assertTrue(log.lines[0].startswith(f"recovery: order attempt {first.id}: 404 "), log.lines)
        done = self.recover_with(OrderListing(self.context.upstream, problem=(500, 0)))
        self.assertEqual(done, Recovered(failed=1))
        self.assertEqual(self.open_attempts(), [first.id])

    def test_at_most_fifty_pages_are_read(self):
        self.attempt(["lost.example.test"])
        listing = OrderListing(self.context.upstream, endless=True)
        self.assertEqual(self.recover_with(listing), Recovered(lost=1))
        self.assertEqual(len(listing.read), MAX_ORDER_PAGES)
        self.assertEqual(MAX_ORDER_PAGES, 50)

    def test_an_attempt_still_in_flight_is_left(self):
        settled = self.attempt(["settled.example.test"])
        self.gateway.advance(100)
        in_flight = self.attempt(["flight.example.test"])
        self.gateway.advance(99)
        self.assertEqual(self.recover_with(settled_after=100), Recovered(lost=1))
        self.assertEqual(self.open_attempts(), [in_flight.id])
        self.assertNotIn(settled.id, self.open_attempts())

    def test_rows_of_a_key_no_longer_held_are_left(self):
        attempt = self.attempt(["lost.example.test"])
        with LogLines("gateway.translate.recovery") as log:
            done = self.recover_with(keys=SigningKeys(KeyStore.from_keys([])))
        self.assertEqual(done, Recovered())
        self.assertFalse(done.anything)
        self.assertEqual(self.open_attempts(), [attempt.id])
        self.assertEqual(log.lines, [])

    def partial_order(self, names, drop_at_ca=False):
        upstream = self.ca_order(names)
        record = Order(id=self.store.new_id(), account_id=self.account.id, upstream_url=upstream.url,
                       identifiers=tuple(names), status=Status.PENDING, finalize_url=upstream.finalize,
                       expires=upstream.expires, certificate_url=None, created_at=self.context.now(),
                       authorization_urls=upstream.authorizations)
        self.successResultOf(self.store.write([Insert(record)]))
        if drop_at_ca:
            self.ca.orders = [o for o in self.ca.orders if not upstream.url.endswith("/" + o.id)]
        return record, upstream

    def test_an_order_without_its_authorizations_is_completed(self):
        record, upstream = self.partial_order(["p1.example.test", "p2.example.test"])
        self.assertEqual(self.recover_with(), Recovered(repaired=1))
        stored = self.successResultOf(self.store.authorizations_for_order(record.id))
        self.assertEqual(sorted(a.upstream_url for a in stored), sorted(upstream.authorizations))
        self.assertEqual(self.successResultOf(self.store.inconsistencies()), [])
        self.assertEqual(self.stored_order(record.id).authorization_urls, upstream.authorizations)

    def test_an_order_the_ca_forgot_is_marked_invalid(self):
        record, _ = self.partial_order(["gone.example.test"], drop_at_ca=True)
        self.assertEqual(self.recover_with(), Recovered(gone=1))
        self.assertEqual(self.stored_order(record.id).status, Status.INVALID)

    def test_an_order_the_ca_cannot_read_now_is_left(self):
        record, _ = self.partial_order(["later.example.test"])
        self.ca.fail_next("/order/", 500, {"type": "serverInternal", "detail": "busy"})
        self.ca.fail_next("/order/", 500, {"type": "serverInternal", "detail": "busy"})
        self.ca.fail_next("/order/", 500, {"type": "serverInternal", "detail": "busy"})
        self.ca.fail_next("/order/", 500, {"type": "serverInternal", "detail": "busy"})
        with LogLines("gateway.translate.recovery") as log:
            done = self.recover_with()
        self.assertEqual(done, Recovered(failed=1))
        self.assertEqual(self.stored_order(record.id).status, Status.PENDING)
        self.assertTrue(any(line.startswith("recovery: order") and "busy" in line for line in log.lines),
                        log.lines)

    def test_rows_of_another_ca_are_left(self):
        record, _ = self.partial_order(["old.example.test"])
        self.store.upstream = "https://other-ca.test/directory"
        try:
            self.assertEqual(self.recover_with(), Recovered())
        finally:
            self.store.upstream = self.ca.directory_url
        self.assertEqual(len(self.successResultOf(self.store.authorizations_for_order(record.id))), 0)
