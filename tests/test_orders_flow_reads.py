"""
The v2 face's order and chain reads (`gateway.translate.orders.read_order`,
`read_chain`) as a client sees them: unknown and other-CA orders are
``404``s with Boulder's words, an order whose account key left the key store
shows what the gateway last knew (without asking the CA), an orphaned or
unknown certificate is not found, and a chain lists its stored issuers.
Through whole in-memory v2 gateways over the FakeCA.
"""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from gateway.keys.jose import b64url
from gateway.process.testing import build_test_gateway
from gateway.store import Certificate, Update
from tests.support.v2_client import POST_AS_GET
from tests.test_v1_face import make_csr
from tests.test_v2_face import KEY, NAME, NEW, OTHER, V2FaceTestCase

OLD_CA = "https://old-ca.test/directory"


class OrderReadTests(V2FaceTestCase):

    def ready_order(self, names=(NAME,)):
        self.ok(self.resolve(self.client.new_account()), 201)
        order, location = self.new_order(names=names)
        for url in order["authorizations"]:
            authorization = self.ok(self.post(url, POST_AS_GET)).json()
            challenge = next(c for c in authorization["challenges"] if c["type"] == "http-01")
            self.ok(self.post(challenge["url"], {}))
        return order, location

    def order_url(self, order_id):
        return self.gateway.url("/v2/order/" + order_id)

    def test_an_unknown_order_is_not_found(self):
        self.ok(self.resolve(self.client.new_account()), 201)
        _, location = self.new_order()
        unknown = location.rsplit("/", 1)[0] + "/nosuchorder"
        document = self.problem(self.post(unknown, POST_AS_GET), "malformed", 404)
        self.assertEqual(document["detail"], "No order for ID nosuchorder")
        document = self.problem(self.get(unknown), "malformed", 404)
        self.assertEqual(document["detail"], "No order for ID nosuchorder")

    def test_an_order_at_the_previous_ca_is_not_found(self):
        """
        An order the gateway made at the CA it ran against before is no
        order of this CA's: a read and a finalize are ``404``s, and the CA
        is not asked.
        """
        self.ok(self.resolve(self.client.new_account()), 201)
        order, location = self.new_order()
        order_id = location.rsplit("/", 1)[1]
        # the gateway now runs against another CA than the order's
        self.gateway.store.upstream = OLD_CA
        reads = self.ca.counts["order"]
        document = self.problem(self.post(location, POST_AS_GET), "malformed", 404)
        self.assertEqual(document["detail"], "No order for ID " + order_id)
        document = self.problem(self.post(order["finalize"], {"csr": b64url(make_csr([NAME]))}),
                                "malformed", 404)
        self.assertEqual(document["detail"], "No order for ID " + order_id)
        self.assertEqual(self.ca.counts["order"], reads)
        self.assertEqual(self.ca.counts["finalize"], 0)

    def test_an_order_whose_key_left_the_store_shows_what_the_gateway_knew(self):
        """
        The gateway restarted without the account's key: the order is shown
        as stored (its authorizations listed), and nothing is asked of the
        CA, which the gateway could no longer sign for.
        """
        order, location = self.ready_order()
        self.gateway = build_test_gateway([OTHER, NEW], ca=self.ca, store=self.gateway.store)
        self.client = self.client_for(OTHER)
        reads = dict(self.ca.counts)
        shown = self.ok(self.get(location)).json()
        self.assertEqual(shown["status"], "pending")
        self.assertEqual([a.rsplit("/", 1)[1] for a in shown["authorizations"]],
                         [a.rsplit("/", 1)[1] for a in order["authorizations"]])
        self.assertEqual(dict(self.ca.counts), reads)

    def test_an_open_order_is_read_from_the_ca_signed_by_its_owner(self):
        order, location = self.ready_order()
        reads = self.ca.counts["order"]
        shown = self.ok(self.get(location)).json()
        self.assertEqual(shown["status"], "ready")
        self.assertEqual(self.ca.counts["order"], reads + 1)
        self.assertNotIn("error", shown)
        self.assertEqual(shown["authorizations"], order["authorizations"])
        self.assertEqual(shown["identifiers"], [{"type": "dns", "value": NAME}])

    def test_a_valid_order_is_not_read_again(self):
        order, location = self.ready_order()
        finalized = self.ok(self.post(order["finalize"], {"csr": b64url(make_csr([NAME]))})).json()
        reads = dict(self.ca.counts)
        shown = self.ok(self.get(location)).json()
        self.assertEqual((shown["status"], shown["certificate"]), ("valid", finalized["certificate"]))
        self.assertEqual(dict(self.ca.counts), reads)

    def test_a_valid_order_whose_certificate_is_an_orphan_is_not_fetched_again(self):
        order, location = self.ready_order()
        finalized = self.ok(self.post(order["finalize"], {"csr": b64url(make_csr([NAME]))})).json()
        certificate_id = finalized["certificate"].rsplit("/", 1)[1]
        self.successResultOf(self.gateway.store.write(
            [Update(Certificate, certificate_id, {"orphaned": True})]))
        downloads = self.ca.counts["certificate"]
        shown = self.ok(self.get(location)).json()
        # an orphan of this very order: never fetched again
        self.assertNotIn("certificate", shown)
        self.assertEqual(self.ca.counts["certificate"], downloads)


    def test_a_certificate_whose_download_failed_is_fetched_once_for_its_order(self):
        """
        The finalize's certificate download failed: the next read of the
        order fetches and stores it as the order's, and later reads serve
        the stored one without asking the CA again.
        """
        order, location = self.ready_order()
        self.ca.fail_next("/cert/", 500, {"type": "serverInternal"})
        self.post(order["finalize"], {"csr": b64url(make_csr([NAME]))})
        order_id = location.rsplit("/", 1)[1]
        downloads = self.ca.counts["certificate"]
        shown = self.ok(self.get(location)).json()
        self.assertEqual(shown["status"], "valid")
        certificate_id = shown["certificate"].rsplit("/", 1)[1]
        stored = self.successResultOf(self.gateway.store.certificate_by_id(certificate_id))
        self.assertEqual((stored.order_id, stored.leaf_der), (order_id, self.ca.certificates[-1].der))
        self.assertEqual(self.ca.counts["certificate"], downloads + 1)
        again = self.ok(self.get(location)).json()
        self.assertEqual(again["certificate"], shown["certificate"])
        self.assertEqual(self.ca.counts["certificate"], downloads + 1)

class ChainReadTests(V2FaceTestCase):

    def issued(self):
        self.ok(self.resolve(self.client.new_account()), 201)
        _, _, chain = self.issue()
        return chain

    def certificate_url(self, location):
        return self.ok(self.post(location, POST_AS_GET)).json()["certificate"]

    def test_a_chain_lists_the_leaf_and_its_issuers(self):
        self.ok(self.resolve(self.client.new_account()), 201)
        _, location, chain = self.issue()
        self.assertEqual(chain[0].public_bytes(Encoding.DER),
                         self.ca.certificates[-1].der)
        self.assertGreaterEqual(len(chain), 2)
        url = self.certificate_url(location)
        certificate = self.successResultOf(
            self.gateway.store.certificate_by_id(url.rsplit("/", 1)[1]))
        issuers = [self.successResultOf(self.gateway.store.issuer_by_id(i)).der
                   for i in certificate.issuer_ids]
        self.assertEqual([c.public_bytes(Encoding.DER) for c in chain[1:]],
                         issuers)

    def test_an_unknown_certificate_is_not_found(self):
        self.ok(self.resolve(self.client.new_account()), 201)
        _, location, _ = self.issue()
        url = self.certificate_url(location).rsplit("/", 1)[0] + "/nosuchcert"
        document = self.problem(self.get(url), "malformed", 404)
        self.assertEqual(document["detail"], "Certificate not found")

    def test_an_orphaned_certificate_is_not_served(self):
        self.ok(self.resolve(self.client.new_account()), 201)
        _, location, _ = self.issue()
        url = self.certificate_url(location)
        self.successResultOf(self.gateway.store.write(
            [Update(Certificate, url.rsplit("/", 1)[1], {"orphaned": True})]))
        document = self.problem(self.get(url), "malformed", 404)
        self.assertEqual(document["detail"], "Certificate not found")
