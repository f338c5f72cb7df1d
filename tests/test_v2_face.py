"""
The v2 face (`gateway.v2`) through whole in-memory gateways over a
`FakeCA`, request by request, as the draft-era clients measured in
``tests/support/v2_clients.py`` send them -- plain ``GET`` reads with a JOSE
``Content-Type``, POSTs without one, ``resource`` members, a ``kid`` that
is another CA's account URL, ``{}`` to a challenge that is valid already
-- and as RFC 8555 clients do.  Synchronous: ``StubTreq`` answers at once.
The real clients run against Pebble in ``tests/e2e/test_v2_clients.py``.
"""

from __future__ import annotations

import json

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from twisted.internet import defer
from twisted.trial.unittest import SynchronousTestCase

from gateway.keys.jose import AccountKey, b64url, sign_flattened
from gateway.process.testing import FakeCA, build_test_gateway
from gateway.translate.revalidation import Validators
from gateway.validation.http01 import HTTP01Responder
from tests.support.v1_client import _reply
from tests.support.v2_client import POST_AS_GET, V2TestClient
from tests.test_operations_face import samples
from tests.test_tlssni01_v1 import ScriptedChecker
from tests.test_v1_face import make_csr

KEY = AccountKey.from_private_key(rsa.generate_private_key(public_exponent=65537, key_size=2048))
OTHER = AccountKey.from_private_key(ec.generate_private_key(ec.SECP256R1()))
NEW = AccountKey.from_private_key(ec.generate_private_key(ec.SECP256R1()))
STRANGER = AccountKey.from_private_key(ec.generate_private_key(ec.SECP256R1()))
NAME = "www.example.test"
LE_ACCOUNT_URL = "https://acme-v02.api.letsencrypt.org/acme/acct/31415926"
JOSE = {"Content-Type": ["application/jose+json"]}
V2 = "urn:ietf:params:acme:error:"


def names_of(certificate):
    san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return san.get_values_for_type(x509.DNSName)


class V2FaceTestCase(SynchronousTestCase):
    def setUp(self):
        self.build()

    def build(self, validators=None, ca=None, base_url="http://gateway.test"):
        self.ca = ca or FakeCA()
        self.gateway = build_test_gateway([KEY, OTHER, NEW], ca=self.ca, validators=validators,
                                          base_url=base_url)
        self.client = self.client_for(KEY)

    def client_for(self, key, kid=None):
        return V2TestClient(self.gateway.url("/v2/directory"), key, http=self.gateway.client, kid=kid)

    def resolve(self, coroutine):
        done = []
        defer.Deferred.fromCoroutine(coroutine).addBoth(done.append)
        self.assertTrue(done, "the request did not complete")
        if isinstance(done[0], Exception):
            raise done[0]
        return done[0]

    def ok(self, reply, status=200):
        self.assertEqual(reply.status, status, reply.body)
        return reply

    def problem(self, reply, code, status):
        self.assertEqual(reply.status, status, reply.body)
        self.assertEqual(reply.header("content-type"), "application/problem+json")
        document = reply.json()
        self.assertEqual((document["type"], document["status"]), (V2 + code, status))
        self.assertTrue(reply.header("replay-nonce"))
        return document

    def get(self, url, **kwargs):
        # acme-tiny 4.0 sends its JOSE Content-Type on plain GETs too
        return self.resolve(self.client.get(url, headers=JOSE, **kwargs))

    def post(self, url, payload, client=None, **kwargs):
        return self.resolve((client or self.client).post(url, payload, **kwargs))

    def directory(self):
        return self.resolve(self.client.load_directory())

    def new_order(self, names=(NAME,), client=None):
        directory = self.directory()
        reply = self.ok(self.post(directory["newOrder"], {
            "identifiers": [{"type": "dns", "value": n} for n in names]}, client=client), 201)
        return reply.json(), reply.header("location")

    def issue(self, client=None, names=(NAME,)):
        """
        A certificate as acme-tiny 4.0 gets one: newOrder, plain GETs of the
        authorizations, {} to each http-01 challenge whatever its status,
        finalize, a plain GET of the order and of the certificate.
        """
        client = client or self.client
        order, location = self.new_order(names, client)
        for url in order["authorizations"]:
            authorization = self.ok(self.get(url)).json()
            challenge = next(c for c in authorization["challenges"] if c["type"] == "http-01")
            answered = self.ok(self.post(challenge["url"], {}, client=client))
            self.assertEqual(answered.links("up"), [url])
            self.assertEqual(self.ok(self.get(url)).json()["status"], "valid")
        csr = make_csr(list(names))
        finalized = self.ok(self.post(order["finalize"], {"csr": b64url(csr)}, client=client))
        self.assertEqual(finalized.json()["status"], "valid")
        polled = self.ok(self.get(location)).json()
        self.assertEqual(polled["status"], "valid")
        chain = self.ok(self.get(polled["certificate"]))
        self.assertEqual(chain.header("content-type"), "application/pem-certificate-chain")
        return order, location, x509.load_pem_x509_certificates(chain.body)


class DirectoryAndNonceTests(V2FaceTestCase):
    def test_directory(self):
        """
        ``/v2/directory`` names the v2 resources under ``/v2/`` (``newNonce``
        is what tells certbot 0.22-1.x it is v2) and the CA's terms; every
        answer carries a nonce and ``Link rel=index``; the v1 directory is
        as it was.
        """
        reply = self.ok(self.resolve(self.client.get(self.gateway.url("/v2/directory"))))
        base = self.gateway.url("/v2/")
        self.assertEqual(reply.json(), {
            "newNonce": base + "new-nonce", "newAccount": base + "new-acct",
            "newOrder": base + "new-order", "revokeCert": base + "revoke-cert",
            "keyChange": base + "key-change", "meta": {"termsOfService": self.ca.terms_of_service}})
        self.assertTrue(reply.header("replay-nonce"))
        self.assertEqual(reply.links("index"), [base + "directory"])
        v1 = self.ok(self.resolve(self.client.get(self.gateway.url("/directory")))).json()
        self.assertIn("new-reg", v1)
        self.assertNotIn("newNonce", v1)

    def test_under_a_base_url_with_a_path(self):
        """
        Behind a proxy that serves the gateway under a path (``--base-url
        https://host/acme``), the v2 face answers below it, hands out URLs
        below it, and a client issues there.
        """
        self.build(base_url="http://gateway.test/acme")
        directory = self.directory()
        self.assertEqual(directory["newOrder"], "http://gateway.test/acme/v2/new-order")
        self.ok(self.resolve(self.client.new_account()), 201)
        self.assertTrue(self.client.kid.startswith("http://gateway.test/acme/v2/acct/"))
        order, location, chain = self.issue()
        self.assertTrue(location.startswith("http://gateway.test/acme/v2/order/"))
        self.assertEqual(names_of(chain[0]), [NAME])

    def test_nonces(self):
        """
        ``newNonce``: 200 to HEAD, 204 to GET (acme-tiny 4.0 GETs it); a HEAD
        of a POST-only resource (certbot 0.27's way to its first nonce) is a
        405 with a nonce, as at Boulder.
        """
        directory = self.directory()
        head = self.resolve(self.client.get(directory["newNonce"], method="HEAD"))
        got = self.resolve(self.client.get(directory["newNonce"], headers=JOSE))
        self.assertEqual((head.status, got.status), (200, 204))
        self.assertNotEqual(head.header("replay-nonce"), got.header("replay-nonce"))
        order_head = self.resolve(self.client.get(directory["newOrder"], method="HEAD"))
        self.assertEqual(order_head.status, 405)
        self.assertTrue(order_head.header("replay-nonce"))

    def test_unknown_paths_are_v2_problems(self):
        self.problem(self.resolve(self.client.get(self.gateway.url("/v2/nope"))), "malformed", 404)
        self.problem(self.resolve(self.client.get(self.gateway.url("/v2/authz/%2F.."))),
                     "malformed", 404)


class AccountTests(V2FaceTestCase):
    def test_new_account_then_the_same_again(self):
        """
        acme-tiny 4.0 sends newAccount on every run: 201 the first time, 200
        with the same ``Location`` (the gateway's account URL) after.
        """
        first = self.ok(self.resolve(self.client.new_account()), 201)
        location = first.header("location")
        self.assertTrue(location.startswith(self.gateway.url("/v2/acct/")))
        self.assertEqual(first.json()["status"], "valid")
        again = self.ok(self.resolve(self.client.new_account()), 200)
        self.assertEqual(again.header("location"), location)

    def test_only_return_existing(self):
        """
        ``onlyReturnExisting`` for a key without an account at the CA is
        ``accountDoesNotExist``; for one with an account, that account.
        """
        self.problem(self.resolve(self.client_for(NEW).new_account({"onlyReturnExisting": True})),
                     "accountDoesNotExist", 400)
        self.ok(self.resolve(self.client.new_account()), 201)
        self.ok(self.resolve(self.client_for(KEY).new_account({"onlyReturnExisting": True})), 200)

    def test_new_account_needs_the_jwk_and_a_held_key(self):
        self.ok(self.resolve(self.client.new_account()), 201)
        directory = self.directory()
        self.problem(self.post(directory["newAccount"], {"termsOfServiceAgreed": True}),
                     "malformed", 400)
        stranger = self.problem(self.resolve(self.client_for(STRANGER).new_account()),
                                "unauthorized", 403)
        self.assertIn("is not in the gateway's key store", stranger["detail"])

    def test_account_read_update_and_deactivation(self):
        self.ok(self.resolve(self.client.new_account()), 201)
        account_url = self.client.kid
        read = self.ok(self.post(account_url, POST_AS_GET)).json()
        self.assertEqual(read["status"], "valid")
        updated = self.ok(self.post(account_url, {"contact": ["mailto:new@example.test"],
                                                  "resource": "reg"})).json()
        self.assertEqual(updated["contact"], ["mailto:new@example.test"])
        self.assertEqual(self.ca.accounts[1].contact, ["mailto:new@example.test"])
        other = self.client_for(OTHER)
        self.resolve(other.new_account())
        self.problem(self.post(account_url, POST_AS_GET, client=other), "unauthorized", 403)
        self.assertEqual(self.ok(self.post(account_url, {"status": "deactivated"})).json()["status"],
                         "deactivated")
        self.problem(self.post(self.directory()["newOrder"], {
            "identifiers": [{"type": "dns", "value": NAME}]}), "unauthorized", 403)


class KidTests(V2FaceTestCase):
    def test_kid_of_another_ca(self):
        """
        certbot 0.27 signs with ``kid`` = the account URL in its regr.json
        (Let's Encrypt's) and never sends newAccount: the gateway finds the
        key among those it holds by the signature, and orders as that
        account.
        """
        client = self.client_for(KEY, kid=LE_ACCOUNT_URL)
        _, _, chain = self.issue(client)
        self.assertEqual(names_of(chain[0]), [NAME])
        (account,) = self.successResultOf(self.gateway.store.list_accounts())
        self.assertEqual(account.thumbprint, KEY.thumbprint)

    def test_kid_of_the_upstream_account(self):
        """
        Against Let's Encrypt itself, the ``kid`` of regr.json is the URL of
        the account the gateway uses upstream: that account's key, at once.
        """
        self.ok(self.resolve(self.client.new_account()), 201)
        (account,) = self.successResultOf(self.gateway.store.list_accounts())
        client = self.client_for(KEY, kid=account.upstream_url)
        self.issue(client)

    def test_kid_nobody_can_stand_for(self):
        """
        A key the gateway does not hold, with a URL it cannot tie to any
        key: ``accountDoesNotExist``, saying what to do.
        """
        stranger = self.client_for(STRANGER, kid=LE_ACCOUNT_URL)
        document = self.problem(self.post(self.directory()["newOrder"], {
            "identifiers": [{"type": "dns", "value": NAME}]}, client=stranger),
            "accountDoesNotExist", 400)
        self.assertIn("key store", document["detail"])

    def test_kid_of_a_gateway_account_signed_by_another_key(self):
        self.ok(self.resolve(self.client.new_account()), 201)
        forger = self.client_for(OTHER, kid=self.client.kid)
        self.problem(self.post(self.directory()["newOrder"], {
            "identifiers": [{"type": "dns", "value": NAME}]}, client=forger),
            "accountDoesNotExist", 400)
        self.assertEqual(len(self.ca.orders), 0)


class IssuanceTests(V2FaceTestCase):
    def test_draft_era_issuance_and_renewal(self):
        """
        acme-tiny 4.0's run twice: the renewal's order gets the authorization
        the CA reused, valid already, and its {} to the valid challenge is
        answered with the challenge unchanged, without asking the CA to
        update it; the renewal's certificate is another.
        """
        self.ok(self.resolve(self.client.new_account()), 201)
        first_order, _, first_chain = self.issue()
        answered_before = self.ca.counts["challenge"]
        second_order, _, second_chain = self.issue()
        self.assertEqual(second_order["authorizations"], first_order["authorizations"])
        self.assertNotEqual(first_chain[0].serial_number, second_chain[0].serial_number)
        # the renewal's challenge POST was answered from what the CA already said
        self.assertEqual(self.ca.counts["challenge"], answered_before)
        self.assertEqual(second_chain[0].public_bytes(Encoding.DER), self.ca.certificates[-1].der)

    def test_v2_requests_are_counted_apart_from_v1(self):
        """
        ``/metrics`` counts the v2 face's answers by v2 endpoint and status;
        none of them as v1 requests.
        """
        self.ok(self.resolve(self.client.new_account()), 201)
        self.issue()
        self.resolve(self.client.get(self.gateway.url("/v2/nope")))
        found = samples(self.gateway.gateway.metrics)
        counted = {dict(labels)["endpoint"] + " " + dict(labels)["status"]: value
                   for (name, labels), value in found.items()
                   if name == "acme_gateway_v2_requests_total"}
        self.assertEqual(counted["v2-new-account 201"], 1)
        self.assertEqual(counted["v2-new-order 201"], 1)
        self.assertEqual(counted["v2-finalize 200"], 1)
        self.assertEqual(counted["v2-certificate 200"], 1)
        self.assertEqual(counted["v2-unknown 404"], 1)
        self.assertFalse([name for (name, _) in found if name == "acme_gateway_v1_requests_total"])

    def test_certbot_0_27_style_requests(self):
        """
        POSTs without Content-Type and with v1's ``resource`` member, the
        challenge answered with ``type`` and ``keyAuthorization``, reads by
        plain GET without Content-Type.
        """
        client = self.client_for(KEY, kid=LE_ACCOUNT_URL)
        directory = self.directory()
        order = self.ok(self.post(directory["newOrder"], {
            "identifiers": [{"type": "dns", "value": NAME}], "status": "pending",
            "resource": "new-order"}, client=client, content_type=None), 201).json()
        authorization = self.ok(self.resolve(client.get(order["authorizations"][0]))).json()
        self.assertEqual(self.resolve(client.get(order["authorizations"][0])).status, 200)
        challenge = next(c for c in authorization["challenges"] if c["type"] == "http-01")
        self.ok(self.post(challenge["url"], {
            "resource": "challenge", "type": "http-01",
            "keyAuthorization": KEY.key_authorization(challenge["token"])},
            client=client, content_type=None))
        finalized = self.ok(self.post(order["finalize"], {
            "resource": "new-cert", "csr": b64url(make_csr([NAME]))}, client=client,
            content_type=None)).json()
        self.assertTrue(finalized["certificate"].startswith(self.gateway.url("/v2/cert/")))

    def test_rfc_8555_client(self):
        """
        POST-as-GET reads, ``ready`` shown as the CA says it (RFC clients
        wait for it), the certificate by POST-as-GET.
        """
        self.ok(self.resolve(self.client.new_account()), 201)
        order, location = self.new_order()
        authorization = self.ok(self.post(order["authorizations"][0], POST_AS_GET)).json()
        challenge = next(c for c in authorization["challenges"] if c["type"] == "http-01")
        self.ok(self.post(challenge["url"], {}))
        self.assertEqual(self.ok(self.post(location, POST_AS_GET)).json()["status"], "ready")
        self.ok(self.post(order["finalize"], {"csr": b64url(make_csr([NAME]))}))
        certificate_url = self.ok(self.post(location, POST_AS_GET)).json()["certificate"]
        pem = self.ok(self.post(certificate_url, POST_AS_GET)).body
        self.assertEqual(len(x509.load_pem_x509_certificates(pem)), 2)
        self.problem(self.post(location, {}), "malformed", 400)

    def test_repeated_new_order_gets_the_pending_order(self):
        self.ok(self.resolve(self.client.new_account()), 201)
        _, first = self.new_order()
        _, second = self.new_order()
        self.assertEqual(first, second)
        self.assertEqual(len(self.ca.orders), 1)

    def test_refusals(self):
        """
        Refusals in v2 types: a name the gateway does not issue for, a CSR
        for other names than the order's, another account's order.
        """
        self.ok(self.resolve(self.client.new_account()), 201)
        directory = self.directory()
        self.problem(self.post(directory["newOrder"], {
            "identifiers": [{"type": "dns", "value": "127.0.0.1"}]}), "rejectedIdentifier", 400)
        self.problem(self.post(directory["newOrder"], {"identifiers": []}), "malformed", 400)
        order, _ = self.new_order()
        self.problem(self.post(order["finalize"], {"csr": b64url(make_csr(["other.example.test"]))}),
                     "badCSR", 400)
        other = self.client_for(OTHER)
        self.resolve(other.new_account())
        self.problem(self.post(order["finalize"], {"csr": b64url(make_csr([NAME]))}, client=other),
                     "malformed", 404)
        # finalize before the authorizations are valid: the CA's own refusal
        self.problem(self.post(order["finalize"], {"csr": b64url(make_csr([NAME]))}),
                     "orderNotReady", 403)

    def test_failed_validation_shows_the_cas_error(self):
        self.build(ca=FakeCA(validator=lambda *args: False))
        self.ok(self.resolve(self.client.new_account()), 201)
        order, _ = self.new_order()
        authorization = self.ok(self.get(order["authorizations"][0])).json()
        challenge = next(c for c in authorization["challenges"] if c["type"] == "http-01")
        self.ok(self.post(challenge["url"], {}))
        self.gateway.advance(1)  # a client polls a second later, as certbot and acme-tiny do
        failed = self.ok(self.get(order["authorizations"][0])).json()
        self.assertEqual(failed["status"], "invalid")
        (error,) = [c["error"] for c in failed["challenges"] if "error" in c]
        self.assertTrue(error["type"].startswith(V2))

    def test_tls_sni_01_is_for_v1_clients_only(self):
        """
        With a means, v1 authorizations offer tls-sni-01; the v2 face shows
        the CA's challenges only.
        """
        self.build(validators=Validators({"http-01": HTTP01Responder()}, tls_sni01=ScriptedChecker()))
        self.ok(self.resolve(self.client.new_account()), 201)
        order, _ = self.new_order()
        authorization = self.ok(self.get(order["authorizations"][0])).json()
        self.assertNotIn("tls-sni-01", [c["type"] for c in authorization["challenges"]])


class NonceAndURLTests(V2FaceTestCase):
    def setUp(self):
        super().setUp()
        self.ok(self.resolve(self.client.new_account()), 201)

    def test_writes_need_a_fresh_nonce(self):
        directory = self.directory()
        payload = {"identifiers": [{"type": "dns", "value": NAME}]}
        self.problem(self.post(directory["newOrder"], payload, nonce="made-up"), "badNonce", 400)
        nonce = self.resolve(self.client.fresh_nonce())
        self.ok(self.post(directory["newOrder"], payload, nonce=nonce), 201)
        self.problem(self.post(directory["newOrder"], payload, nonce=nonce), "badNonce", 400)

    def test_reads_a_plain_get_may_make_need_none(self):
        """
        A POST-as-GET of an authorization (which a plain GET reads too) is
        served whatever its nonce: it guards nothing there.
        """
        order, location = self.new_order()
        self.ok(self.post(order["authorizations"][0], POST_AS_GET, nonce="stale-from-before-a-restart"))
        self.ok(self.post(location, POST_AS_GET, nonce="stale"))
        # an account read is no plain GET: strict
        self.problem(self.post(self.client.kid, POST_AS_GET, nonce="stale"), "badNonce", 400)

    def test_url_must_be_the_request_url(self):
        directory = self.directory()
        self.problem(self.post(directory["newOrder"], {"identifiers": [{"type": "dns", "value": NAME}]},
                               signed_url=directory["revokeCert"]), "malformed", 400)
        self.assertEqual(len(self.ca.orders), 0)

    def test_jwk_and_kid_together(self):
        directory = self.directory()
        nonce = self.resolve(self.client.fresh_nonce())
        jws = sign_flattened(KEY, {"identifiers": [{"type": "dns", "value": NAME}]}, {
            "nonce": nonce, "url": directory["newOrder"], "kid": self.client.kid,
            "jwk": KEY.public_jwk_json})
        done = []
        self.client.http.post(directory["newOrder"], data=json.dumps(jws).encode()).addBoth(done.append)
        self.assertEqual(done[0].code, 400)


class RevocationAndKeyChangeTests(V2FaceTestCase):
    def test_revocation_by_account_then_again(self):
        self.ok(self.resolve(self.client.new_account()), 201)
        _, _, chain = self.issue()
        payload = {"certificate": b64url(chain[0].public_bytes(Encoding.DER)), "reason": 4}
        self.ok(self.post(self.directory()["revokeCert"], payload))
        self.assertEqual(self.ca.certificates[-1].revoked_reason, 4)
        self.problem(self.post(self.directory()["revokeCert"], payload), "alreadyRevoked", 400)

    def test_key_change_rfc_8555(self):
        """
        The RFC's key change (inner ``{"account", "oldKey"}`` signed by the
        new key, which the gateway holds): the account then answers to the
        new key.
        """
        self.ok(self.resolve(self.client.new_account()), 201)
        account_url = self.client.kid
        url = self.directory()["keyChange"]
        inner = sign_flattened(NEW, {"account": account_url, "oldKey": KEY.public_jwk_json},
                               {"jwk": NEW.public_jwk_json, "url": url})
        self.ok(self.post(url, inner))
        moved = self.client_for(NEW, kid=account_url)
        self.ok(self.post(account_url, POST_AS_GET, client=moved))
        self.assertEqual(self.ca.accounts[1].thumbprint, NEW.thumbprint)

    def test_key_change_names_its_own_account(self):
        self.ok(self.resolve(self.client.new_account()), 201)
        url = self.directory()["keyChange"]
        inner = sign_flattened(NEW, {"account": LE_ACCOUNT_URL, "oldKey": KEY.public_jwk_json},
                               {"jwk": NEW.public_jwk_json, "url": url})
        self.problem(self.post(url, inner), "malformed", 400)
        self.assertEqual(self.ca.counts["keyChange"], 0)



class BadInputTests(V2FaceTestCase):
    """
    Whatever bytes reach a v2 resource, the answer is a v2 problem document
    with a 4xx status and a nonce, never a traceback or a 500, and nothing
    reaches the CA.
    """

    def setUp(self):
        super().setUp()
        self.ok(self.resolve(self.client.new_account()), 201)
        self.orders_before = len(self.ca.orders)

    def raw_post(self, url, body):
        async def send():
            return await _reply(await self.client.http.post(url, data=body))

        return self.resolve(send())

    def signed(self, protected, payload=b'{"identifiers": []}', signature=b"x"):
        return json.dumps({"protected": b64url(json.dumps(protected).encode()),
                           "payload": b64url(payload), "signature": b64url(signature)}).encode()

    def test_bodies_that_are_no_jws(self):
        url = self.directory()["newOrder"]
        for body in (b"", b"not json", b"[1, 2]", b"{}", b'{"protected": 7}', b"\xff\xfe",
                     b"[" * 5000 + b"]" * 5000,
                     b'{"protected": "!!", "payload": "", "signature": ""}'):
            self.assertEqual(self.problem(self.raw_post(url, body), "malformed", 400)["status"], 400, body[:40])
        self.assertEqual(len(self.ca.orders), self.orders_before)

    def test_headers_that_name_no_key(self):
        url = self.directory()["newOrder"]
        nonce = self.resolve(self.client.fresh_nonce())
        for protected in ({"nonce": nonce, "url": url, "alg": "RS256"},
                          {"nonce": nonce, "url": url, "alg": "RS256", "kid": 7},
                          {"nonce": nonce, "url": url, "alg": "RS256", "kid": ""},
                          {"nonce": nonce, "url": url, "alg": "RS256", "jwk": "a key"},
                          {"nonce": nonce, "alg": "RS256", "kid": self.client.kid},
                          {"nonce": nonce, "url": url, "alg": "none", "kid": self.client.kid},
                          {"nonce": nonce, "url": url, "alg": "RS256", "kid": self.client.kid}):
            reply = self.raw_post(url, self.signed(protected))
            self.assertIn(reply.status, (400, 403), reply.body)
            self.assertTrue(reply.json()["type"].startswith(V2), reply.body)
        self.assertEqual(len(self.ca.orders), self.orders_before)

    def test_a_body_above_the_limit(self):
        reply = self.raw_post(self.directory()["newOrder"], b"x" * 70000)
        self.problem(reply, "malformed", 413)

    def test_payloads_a_flow_cannot_use(self):
        """
        Well-signed requests whose payloads are wrong: each a 4xx problem.
        """
        directory = self.directory()
        for url, payload in ((directory["newOrder"], {"identifiers": "www.example.test"}),
                             (directory["newOrder"], {"identifiers": [{"type": "ip"}]}),
                             (directory["newOrder"], {"identifiers": [7]}),
                             (directory["revokeCert"], {"certificate": "!!"}),
                             (directory["keyChange"], {"protected": "x"}),
                             (self.client.kid, {"status": "revoked"}),
                             (self.client.kid, {"contact": ["tel:+1"]})):
            reply = self.post(url, payload)
            self.assertTrue(400 <= reply.status < 500, reply.body)
            self.assertTrue(reply.json()["type"].startswith(V2), reply.body)
        self.assertEqual(len(self.ca.orders), self.orders_before)


class OperatorPolicyTests(V2FaceTestCase):
    """
    The operator's policy holds on the v2 face as on the v1 face: the names
    of ``--allow-names`` and the profile of ``--profile``.
    """

    def test_names_outside_allow_names_are_refused_before_any_order(self):
        from gateway.translate.context import Policy
        from gateway.translate.policy import AllowedNames

        self.ca = FakeCA()
        self.gateway = build_test_gateway(
            [KEY], ca=self.ca,
            policy=Policy(allowed_names=AllowedNames.parse(["*.allowed.test"])))
        self.client = self.client_for(KEY)
        self.ok(self.resolve(self.client.new_account()), 201)
        directory = self.directory()
        refused = self.problem(self.post(directory["newOrder"], {
            "identifiers": [{"type": "dns", "value": NAME}]}), "unauthorized", 403)
        self.assertIn(NAME, refused["detail"])
        self.assertEqual(self.ca.counts["newOrder"], 0)
        order, _ = self.new_order(("www.allowed.test",))
        self.assertEqual(order["status"], "pending")
        self.assertEqual(self.ca.counts["newOrder"], 1)

    def test_the_profile_of_the_policy_is_asked_for(self):
        from gateway.translate.profiles import ProfilePolicy

        self.ca = FakeCA(profiles={"classic": "90 days", "shortlived": "6 days"})
        self.gateway = build_test_gateway([KEY], ca=self.ca,
                                          profiles=ProfilePolicy(default="shortlived"))
        self.client = self.client_for(KEY)
        self.ok(self.resolve(self.client.new_account()), 201)
        self.new_order()
        self.assertEqual([o.profile for o in self.ca.orders], ["shortlived"])
