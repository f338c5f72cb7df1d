"""
Unit tests of the v1 face (`gateway.v1.face.V1Face` over `gateway.v1.resource`) through whole
in-memory gateways (`gateway.process.testing.build_test_gateway`): every v1 error the
face can return, each checked for its status, ``application/problem+json``,
``urn:acme:error:`` type, detail and ``Replay-Nonce``; the upstream faults
the `FakeCA` can script; and the happy paths once.

Everything runs synchronously: ``StubTreq`` answers at once, so each request
is a Deferred that has already fired (``successResultOf``).
"""

from __future__ import annotations

import json

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from treq.testing import StubTreq
from twisted.internet import defer
from twisted.trial.unittest import SynchronousTestCase

from gateway.keys.jose import AccountKey, b64url, sign_flattened
from gateway.process.testing import FakeCA, build_test_gateway
from gateway.translate.context import Policy
from gateway.upstream.client import UpstreamClient
from gateway.upstream.errors import UpstreamProblem
from tests.support.certs import make_chain
from tests.support.v1_client import Reply, V1TestClient, _reply
from tests.support.v1_signing import sign_jws, sign_v1, to_body

KEY = AccountKey.from_private_key(ec.generate_private_key(ec.SECP256R1()))
OTHER = AccountKey.from_private_key(ec.generate_private_key(ec.SECP256R1()))
NEW = AccountKey.from_private_key(ec.generate_private_key(ec.SECP384R1()))
STRANGER = AccountKey.from_private_key(ec.generate_private_key(ec.SECP256R1()))
RSA_KEY = AccountKey.from_private_key(rsa.generate_private_key(65537, 2048))

PROBLEM = "application/problem+json"
NAME = "www.example.test"


def make_csr(names, key=None) -> bytes:
    """
    A DER CSR for ``names`` (CN = the first), signed by ``key`` (a
    ``cryptography`` private key; a fresh P-256 key by default).
    """
    key = key or ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.DER)


class FaceTestCase(SynchronousTestCase):
    """
    A gateway holding KEY, OTHER and NEW (not STRANGER) over a fresh FakeCA,
    and helpers that drive it as a v1 client would.
    """

    keys = (KEY, OTHER, NEW)

    def setUp(self):
        self.gateway = build_test_gateway(self.keys)
        self.ca = self.gateway.ca
        self.base = self.gateway.base_url
        self.clients = {}

    # -- driving ------------------------------------------------------------

    def resolve(self, coroutine):
        return self.successResultOf(defer.Deferred.fromCoroutine(coroutine))

    def client(self, key=KEY) -> V1TestClient:
        if key not in self.clients:
            self.clients[key] = V1TestClient(self.base, key, http=self.gateway.client)
        return self.clients[key]

    def url(self, path: str) -> str:
        return self.base + path

    def get(self, path: str, method: str = "GET") -> Reply:
        return self.resolve(self.client().get(self.url(path), method=method))

    def post(self, path: str, payload: dict, key=KEY, **options) -> Reply:
        url = path if path.startswith("http") else self.url(path)
        return self.resolve(self.client(key).post(url, payload, **options))

    def post_raw(self, path: str, body: bytes) -> Reply:
        async def send():
            return await _reply(await self.gateway.client.post(self.url(path), data=body))

        return self.resolve(send())

    def nonce(self) -> str:
        return self.get("/directory", method="HEAD").header("replay-nonce")

    # -- flows --------------------------------------------------------------

    def register(self, key=KEY, **fields) -> str:
        """
        new-reg for ``key`` (with an agreement); the registration URL.
        """
        payload = {"resource": "new-reg", "contact": ["mailto:admin@example.test"],
                   "agreement": self.url("/terms")}
        payload.update(fields)
        reply = self.post("/acme/new-reg", payload, key=key)
        self.assertEqual(reply.status, 201, reply.body)
        return reply.header("location")

    def new_authz(self, name=NAME, key=KEY) -> Reply:
        return self.post("/acme/new-authz", {"resource": "new-authz",
                                             "identifier": {"type": "dns", "value": name}}, key=key)

    def authorize(self, name=NAME, key=KEY) -> tuple:
        """
        new-authz for ``name`` and answer its http-01 challenge; the
        authorization URL and the challenge reply.
        """
        reply = self.new_authz(name, key)
        self.assertEqual(reply.status, 201, reply.body)
        challenge = next(c for c in reply.json()["challenges"] if c["type"] == "http-01")
        answered = self.post(challenge["uri"], {
            "resource": "challenge", "type": "http-01",
            "keyAuthorization": key.key_authorization(challenge["token"])}, key=key)
        return reply.header("location"), answered

    def issue(self, names=(NAME,), key=KEY) -> Reply:
        """
        Authorize every name and request the certificate; the new-cert reply.
        """
        for name in names:
            self.authorize(name, key)
        reply = self.post("/acme/new-cert", {"resource": "new-cert", "csr": b64url(make_csr(list(names)))},
                          key=key)
        self.assertEqual(reply.status, 201, reply.body)
        return reply

    def key_change_payload(self, new_key, account_url, signer=None) -> dict:
        """
        A v1 key-change payload: the inner JWS by ``signer`` (``new_key``
        by default) over ``{"account", "newKey"}``, plus ``resource``.
        """
        signer = signer or new_key
        inner = sign_flattened(signer, {"account": account_url, "newKey": new_key.public_jwk_json},
                               {"jwk": signer.public_jwk_json})
        return dict(inner, resource="key-change")

    # -- assertions ---------------------------------------------------------

    def assertProblem(self, reply: Reply, status: int, code: str, *fragments: str) -> dict:
        """
        ``reply`` is a v1 problem document: the status (also in the body),
        the content type, ``urn:acme:error:<code>``, a detail containing each
        of ``fragments``, and a fresh nonce.
        """
        self.assertEqual(reply.status, status, reply.body)
        self.assertEqual(reply.header("content-type"), PROBLEM)
        self.assertTrue(reply.header("replay-nonce"), "every response carries a Replay-Nonce")
        problem = reply.json()
        self.assertEqual(problem["type"], "urn:acme:error:" + code)
        self.assertEqual(problem["status"], status)
        self.assertIsInstance(problem["detail"], str)
        self.assertTrue(problem["detail"])
        for fragment in fragments:
            self.assertIn(fragment, problem["detail"])
        self.assertNotIn("urn:ietf:params:acme", reply.body.decode())
        return problem


class RoutingTests(FaceTestCase):
    """
    Paths, methods and bodies, before any JWS is looked at.
    """

    def test_unknown_path(self):
        """
        A path the v1 API does not have is a 404 ``malformed``.
        """
        self.assertProblem(self.get("/acme/no-such-thing"), 404, "malformed", "Not found")
        self.assertProblem(self.get("/acme/authz/bad!id"), 404, "malformed")

    def test_wrong_method(self):
        """
        A known path with a method it does not answer is a 405 ``malformed``
        with the ``Allow`` header listing what it does answer.
        """
        reply = self.get("/acme/new-reg")
        self.assertProblem(reply, 405, "malformed", "Method not allowed")
        self.assertEqual(reply.header("allow"), "POST")
        reply = self.get("/acme/authz/abc", method="DELETE")
        self.assertProblem(reply, 405, "malformed")
        self.assertEqual(reply.header("allow"), "GET, POST")
        reply = self.post_raw("/directory", b"{}")
        self.assertProblem(reply, 405, "malformed")
        self.assertEqual(reply.header("allow"), "GET")

    def test_head_on_post_only_path(self):
        """
        HEAD (how v1 clients fetch a nonce) on a POST-only path is a 405 with
        a nonce and no body.
        """
        reply = self.get("/acme/new-reg", method="HEAD")
        self.assertEqual(reply.status, 405)
        self.assertTrue(reply.header("replay-nonce"))
        self.assertEqual(reply.header("allow"), "POST")
        self.assertEqual(reply.body, b"")

    def test_head_directory(self):
        """
        HEAD /directory answers 200 with a nonce and no body.
        """
        reply = self.get("/directory", method="HEAD")
        self.assertEqual(reply.status, 200)
        self.assertTrue(reply.header("replay-nonce"))
        self.assertEqual(reply.body, b"")

    def test_nonces_are_fresh(self):
        """
        Every response carries a new nonce.
        """
        nonces = {self.get("/directory").header("replay-nonce") for _ in range(3)}
        self.assertEqual(len(nonces), 3)

    def test_body_too_large(self):
        """
        A POST body above the limit is refused with 413 before it is parsed.
        """
        reply = self.post_raw("/acme/new-reg", b"{" + b" " * (64 * 1024) + b"}")
        self.assertProblem(reply, 413, "malformed", "too large")

    def test_empty_post_body(self):
        """
        A POST without a body is a 400 ``malformed``.
        """
        self.assertProblem(self.post_raw("/acme/new-reg", b""), 400, "malformed", "No body")

    def test_body_not_json(self):
        """
        A body that is not a JWS at all is a 400 ``malformed`` parse error.
        """
        self.assertProblem(self.post_raw("/acme/new-reg", b"hello"), 400, "malformed", "Parse error")


class JWSTests(FaceTestCase):
    """
    Representative JWS rejections surface as v1 problems.
    """

    def test_bad_signature(self):
        """
        A JWS whose signature was made by another key than its ``jwk`` is a
        400 ``malformed`` verification error.
        """
        body = to_body(sign_jws(OTHER.sign, {"alg": "ES256", "jwk": KEY.public_jwk_json,
                                             "nonce": self.nonce()},
                                {"resource": "new-reg"}))
        self.assertProblem(self.post_raw("/acme/new-reg", body), 400, "malformed", "JWS verification error")

    def test_missing_nonce(self):
        """
        A JWS without a nonce is a 400 ``badNonce``.
        """
        body = sign_v1(KEY, {"resource": "new-reg"}, None)
        self.assertProblem(self.post_raw("/acme/new-reg", body), 400, "badNonce", "no anti-replay nonce")

    def test_replayed_nonce(self):
        """
        A nonce used once is a 400 ``badNonce`` the second time, and the
        error's own nonce works for the retry.
        """
        self.register()
        nonce = self.nonce()
        body = sign_v1(KEY, {"resource": "reg"}, nonce)
        first = self.post_raw("/acme/reg/1", body)
        self.assertEqual(first.status, 202, first.body)
        replay = self.post_raw("/acme/reg/1", body)
        self.assertProblem(replay, 400, "badNonce", "invalid anti-replay nonce")
        retry = self.post_raw("/acme/reg/1", sign_v1(KEY, {"resource": "reg"}, replay.header("replay-nonce")))
        self.assertEqual(retry.status, 202, retry.body)

    def test_wrong_resource(self):
        """
        A payload whose ``resource`` names another endpoint is a 400
        ``malformed``.
        """
        reply = self.post("/acme/new-reg", {"resource": "new-authz"})
        self.assertProblem(reply, 400, "malformed", "does not match the HTTP resource")


class RegistrationTests(FaceTestCase):
    """
    Errors of new-reg, reg/<id> and account binding.
    """

    def test_key_not_in_store(self):
        """
        A correctly signed request by a key the gateway does not hold is a
        403 ``unauthorized`` naming the key's thumbprint, and nothing reaches
        the upstream beyond its directory.
        """
        for path, payload in [
            ("/acme/new-reg", {"resource": "new-reg"}),
            ("/acme/new-authz", {"resource": "new-authz", "identifier": {"type": "dns", "value": NAME}}),
            ("/acme/new-cert", {"resource": "new-cert", "csr": b64url(make_csr([NAME]))}),
        ]:
            reply = self.post(path, payload, key=STRANGER)
            self.assertProblem(reply, 403, "unauthorized", STRANGER.thumbprint, "key store")
        self.assertEqual(set(self.ca.counts), {"directory"})

    def test_existing_registration_conflict(self):
        """
        new-reg for a registered key is 409 ``malformed`` with the existing
        registration's Location.
        """
        reg_url = self.register()
        reply = self.post("/acme/new-reg", {"resource": "new-reg"})
        self.assertProblem(reply, 409, "malformed", "already in use")
        self.assertEqual(reply.header("location"), reg_url)

    def test_other_registration(self):
        """
        POSTing to another account's reg/<id>, or to one that does not
        exist, is a 403 ``unauthorized``.
        """
        self.register(KEY)
        other_url = self.register(OTHER)
        self.assertProblem(self.post(other_url, {"resource": "reg"}), 403, "unauthorized",
                           "did not match registration key")
        self.assertProblem(self.post("/acme/reg/99", {"resource": "reg"}), 403, "unauthorized")

    def test_deactivated_account(self):
        """
        After a deactivation (200), every account-bound request of the key
        is a 403 "Registration is not valid"; the upstream account is
        deactivated too.
        """
        reg_url = self.register()
        reply = self.post(reg_url, {"resource": "reg", "status": "deactivated"})
        self.assertEqual(reply.status, 200, reply.body)
        self.assertEqual(reply.json()["status"], "deactivated")
        self.assertEqual(self.ca.accounts[1].status, "deactivated")
        self.assertProblem(self.new_authz(), 403, "unauthorized", "Registration is not valid")
        self.assertProblem(self.post(reg_url, {"resource": "reg"}), 403, "unauthorized",
                           "Registration is not valid")

    def test_invalid_contact(self):
        """
        A contact that is not a mailto: address is a 400 ``invalidEmail``,
        at new-reg and at a registration update, before anything upstream.
        """
        reply = self.post("/acme/new-reg", {"resource": "new-reg", "contact": ["tel:+15555550100"]})
        self.assertProblem(reply, 400, "invalidEmail", "tel:+15555550100")
        self.assertEqual(self.ca.counts["newAccount"], 0)
        reg_url = self.register()
        reply = self.post(reg_url, {"resource": "reg", "contact": ["mailto:nobody"]})
        self.assertProblem(reply, 400, "invalidEmail", "mailto:nobody")

    def test_upstream_invalid_contact(self):
        """
        An upstream ``invalidContact`` (v2) reaches the client as v1's
        ``invalidEmail``.
        """
        reg_url = self.register()
        self.ca.fail_next("/acct/", 400, {"type": "invalidContact", "detail": "domain has no MX"})
        reply = self.post(reg_url, {"resource": "reg", "contact": ["mailto:a@nomx.example.test"]})
        self.assertProblem(reply, 400, "invalidEmail", "domain has no MX")

    def test_invalid_status_update(self):
        """
        A registration update to a status other than valid or deactivated
        is a 400 ``malformed``.
        """
        reg_url = self.register()
        reply = self.post(reg_url, {"resource": "reg", "status": "revoked"})
        self.assertProblem(reply, 400, "malformed", "status")

    def test_upstream_requires_agreement(self):
        """
        With agreement left to the client, a new-reg without one meets the
        upstream ``userActionRequired``: 403 ``unauthorized`` in Boulder's
        words, with the terms-of-service Link.
        """
        gateway = build_test_gateway([KEY], policy=Policy(agree_to_terms=False))
        client = V1TestClient(gateway.base_url, KEY, http=gateway.client)
        reply = self.resolve(client.post(gateway.url("/acme/new-reg"), {"resource": "new-reg"}))
        self.assertProblem(reply, 403, "unauthorized", "Must agree to subscriber agreement")
        self.assertEqual(reply.links("terms-of-service"), [gateway.ca.terms_of_service])

    def test_upstream_account_deactivated(self):
        """
        An account deactivated upstream behind the gateway's back: the CA's
        ``unauthorized`` (401) reaches the client as 403 ``unauthorized``.
        """
        self.register()
        self.ca.accounts[1].status = "deactivated"
        self.assertProblem(self.new_authz(), 403, "unauthorized", "deactivated")

    def test_internal_error(self):
        """
        An unexpected exception inside the gateway is a 500
        ``serverInternal`` without a traceback.
        """
        class BrokenStore:
            def __getattr__(self, name):
                raise RuntimeError("secret internals")

        self.gateway = build_test_gateway(self.keys, store=BrokenStore())
        self.clients = {}
        reply = self.post("/acme/new-reg", {"resource": "new-reg"})
        self.assertProblem(reply, 500, "serverInternal", "failed to serve this request")
        self.assertNotIn(b"secret internals", reply.body)
        self.assertNotIn(b"Traceback", reply.body)
        self.flushLoggedErrors(RuntimeError)

    def test_unknown_registration_field(self):
        """
        A registration payload with a field v1 never had is a 400
        ``malformed``.
        """
        reply = self.post("/acme/new-reg", {"resource": "new-reg", "colour": "blue"})
        self.assertProblem(reply, 400, "malformed", "colour")


class AuthorizationTests(FaceTestCase):
    """
    Errors of new-authz, authorization and challenge requests.
    """

    def test_bad_identifiers(self):
        """
        new-authz for an IP identifier, a malformed wildcard, a name with an
        empty label, or an empty name is a 400 ``malformed``, and no upstream
        order is made.
        """
        self.register()
        cases = [
            ({"type": "ip", "value": "192.0.2.1"}, "Invalid identifier type"),
            ({"type": "dns", "value": "a.*.example.test"}, "malformed wildcard label"),
            ({"type": "dns", "value": "*.*.example.test"}, "more than one wildcard"),
            ({"type": "dns", "value": "a..b"}, "not a valid DNS name"),
            ({"type": "dns", "value": ""}, "non-empty"),
            ({"type": "dns", "value": "192.0.2.1"}, "IP addresses"),
            ("www.example.test", "expected an object"),
        ]
        for identifier, detail in cases:
            reply = self.post("/acme/new-authz", {"resource": "new-authz", "identifier": identifier})
            self.assertProblem(reply, 400, "malformed", detail)
        self.assertEqual(self.ca.counts["newOrder"], 0)

    def test_unknown_objects(self):
        """
        Unknown authorization, challenge, certificate and issuer ids are 404
        ``malformed``.
        """
        self.assertProblem(self.get("/acme/authz/nope"), 404, "malformed", "authorization")
        self.assertProblem(self.get("/acme/challenge/nope/nope"), 404, "malformed")
        self.assertProblem(self.get("/acme/cert/nope"), 404, "malformed", "Certificate not found")
        self.assertProblem(self.get("/acme/issuer-cert/nope"), 404, "malformed", "Issuer")
        self.register()
        authz_url = self.new_authz().header("location")
        authz_id = authz_url.rsplit("/", 1)[1]
        self.assertProblem(self.get(f"/acme/challenge/{authz_id}/nope"), 404, "malformed", "No such challenge")
        reply = self.post(f"/acme/challenge/{authz_id}/nope", {"resource": "challenge", "type": "http-01"})
        self.assertProblem(reply, 404, "malformed", "No such challenge")
        reply = self.post("/acme/challenge/nope/nope", {"resource": "challenge", "type": "http-01"})
        self.assertProblem(reply, 404, "malformed", "authorization")

    def test_expired_authorization(self):
        """
        Once its expiry passes, an authorization (and its challenges) is a
        404 "Expired authorization", for reads and for answers.
        """
        self.register()
        reply = self.new_authz()
        authz_url = reply.header("location")
        challenge = reply.json()["challenges"][0]
        self.gateway.clock.advance(8 * 86400)
        self.assertProblem(self.resolve(self.client().get(authz_url)), 404, "malformed", "Expired authorization")
        self.assertProblem(self.resolve(self.client().get(challenge["uri"])), 404, "malformed",
                           "Expired authorization")
        answer = self.post(challenge["uri"], {"resource": "challenge", "type": challenge["type"]})
        self.assertProblem(answer, 404, "malformed", "Expired authorization")

    def test_authorization_gone_upstream(self):
        """
        An authorization the upstream answers with a bare 404 (Pebble's way
        of forgetting one) while the gateway follows it is a 404 "Expired
        authorization", and is stored as expired.  (A pending authorization
        nobody answered is not read upstream at all: tests/test_following.py.)
        """
        self.register()
        self.ca.validate_immediately = False
        reply = self.new_authz()
        authz_url = reply.header("location")
        challenge = reply.json()["challenges"][0]
        self.ca.fail_next("/authz/", 404)  # the gateway's next read of it
        answer = self.post(challenge["uri"], {"resource": "challenge", "type": challenge["type"]})
        self.assertEqual(answer.status, 202, answer.body)
        self.assertProblem(self.resolve(self.client().get(authz_url)), 404, "malformed", "Expired authorization")
        self.assertProblem(self.resolve(self.client().get(authz_url)), 404, "malformed", "Expired authorization")

    def test_wrong_key_authorization(self):
        """
        A challenge POST whose keyAuthorization is not token.thumbprint is a
        400 ``malformed``, and the challenge is not answered upstream.
        """
        self.register()
        challenge = self.new_authz().json()["challenges"][0]
        reply = self.post(challenge["uri"], {"resource": "challenge", "type": challenge["type"],
                                             "keyAuthorization": challenge["token"] + ".wrong"})
        self.assertProblem(reply, 400, "malformed", "key authorization")
        self.assertEqual(self.ca.counts["challenge"], 0)

    def test_wrong_challenge_type(self):
        """
        A challenge POST naming another type than the challenge's is a 400
        ``malformed``.
        """
        self.register()
        challenge = self.new_authz().json()["challenges"][0]
        reply = self.post(challenge["uri"], {"resource": "challenge", "type": "tls-sni-01"})
        self.assertProblem(reply, 400, "malformed", "tls-sni-01")

    def test_authz_post_other_status(self):
        """
        An authorization POST with any status but "deactivated" is a 400
        ``malformed`` "Invalid status value".
        """
        self.register()
        authz_url = self.new_authz().header("location")
        for payload in ({"resource": "authz", "status": "valid"}, {"resource": "authz"}):
            self.assertProblem(self.post(authz_url, payload), 400, "malformed", "Invalid status value")

    def test_other_accounts_authorization(self):
        """
        Answering or deactivating another account's authorization is a 403
        ``unauthorized``.
        """
        self.register(KEY)
        self.register(OTHER)
        reply = self.new_authz()
        authz_url = reply.header("location")
        challenge = reply.json()["challenges"][0]
        answer = self.post(challenge["uri"], {"resource": "challenge", "type": challenge["type"]}, key=OTHER)
        self.assertProblem(answer, 403, "unauthorized", "doesn't match")
        deactivate = self.post(authz_url, {"resource": "authz", "status": "deactivated"}, key=OTHER)
        self.assertProblem(deactivate, 403, "unauthorized", "doesn't match")

    def test_failed_validation(self):
        """
        A challenge the CA finds invalid shows the v1 ``unauthorized`` error
        (v2 ``incorrectResponse``) in the challenge and an invalid
        authorization.
        """
        self.ca.validator = lambda authorization, challenge, key_authorization: False
        self.register()
        authz_url, answered = self.authorize()
        self.assertEqual(answered.status, 202)
        challenge = answered.json()
        self.assertEqual(challenge["status"], "invalid")
        self.assertEqual(challenge["error"]["type"], "urn:acme:error:unauthorized")
        self.assertEqual(challenge["error"]["status"], 403)
        self.assertEqual(self.resolve(self.client().get(authz_url)).json()["status"], "invalid")


class IssuanceTests(FaceTestCase):
    """
    Errors of new-cert.
    """

    def test_garbage_csr(self):
        """
        A CSR that is not base64url, or not a CSR, is a 400 ``malformed``.
        """
        self.register()
        for csr in ("not base64url!", b64url(b"garbage"), ""):
            reply = self.post("/acme/new-cert", {"resource": "new-cert", "csr": csr})
            self.assertProblem(reply, 400, "malformed", "certificate request")
        self.assertEqual(self.ca.counts["newOrder"], 0)

    def test_csr_with_account_key(self):
        """
        A CSR for the account's own key is a 400 ``malformed``.
        """
        self.register()
        csr = make_csr([NAME], key=KEY.private_key)
        reply = self.post("/acme/new-cert", {"resource": "new-cert", "csr": b64url(csr)})
        self.assertProblem(reply, 400, "malformed", "different than account key")

    def test_names_without_authorizations(self):
        """
        new-cert for names the account holds no valid authorization for is
        a 403 ``unauthorized`` naming every such name.
        """
        self.register()
        self.authorize("ok.example.test")
        names = ["ok.example.test", "one.example.test", "two.example.test"]
        reply = self.post("/acme/new-cert", {"resource": "new-cert", "csr": b64url(make_csr(names))})
        problem = self.assertProblem(reply, 403, "unauthorized", "one.example.test, two.example.test")
        self.assertNotIn("ok.example.test", problem["detail"])
        self.assertEqual(self.ca.counts["finalize"], 0)


class RevocationTests(FaceTestCase):
    """
    Errors of revoke-cert.
    """

    def setUp(self):
        super().setUp()
        self.register()
        self.leaf = self.issue().body

    def revoke(self, key=KEY, **fields) -> Reply:
        return self.post("/acme/revoke-cert", dict({"resource": "revoke-cert",
                                                    "certificate": b64url(self.leaf)}, **fields), key=key)

    def test_bad_reason(self):
        """
        A reason Boulder did not accept (2, 6, a string) is a 400
        ``malformed`` and nothing is revoked.
        """
        for reason in (2, 6, "1"):
            self.assertProblem(self.revoke(reason=reason), 400, "malformed",
                               "unsupported revocation reason")
        self.assertIsNone(self.ca.certificates[0].revoked_reason)

    def test_garbage_certificate(self):
        """
        A certificate that does not parse is a 400 ``malformed``.
        """
        reply = self.post("/acme/revoke-cert", {"resource": "revoke-cert", "certificate": b64url(b"nope")})
        self.assertProblem(reply, 400, "malformed", "certificate")

    def test_already_revoked(self):
        """
        Revoking twice is a 409 ``malformed`` "Certificate already revoked".
        """
        self.assertEqual(self.revoke(reason=4).status, 200)
        self.assertProblem(self.revoke(), 409, "malformed", "Certificate already revoked")

    def test_already_revoked_upstream(self):
        """
        A certificate revoked upstream behind the gateway's back: the
        upstream ``alreadyRevoked`` becomes the same 409.
        """
        self.ca.certificates[0].revoked_reason = 1
        self.assertProblem(self.revoke(), 409, "malformed", "Certificate already revoked")

    def test_stranger(self):
        """
        A key that is neither in the store nor the certificate's is a 403
        ``unauthorized`` naming it.
        """
        self.assertProblem(self.revoke(key=STRANGER), 403, "unauthorized", STRANGER.thumbprint)

    def test_certificate_key_of_unknown_certificate(self):
        """
        Revocation signed by the key of a certificate the gateway never
        issued is a 404 "No such certificate".
        """
        leaf, _, leaf_key = make_chain(("foreign.example.test",))
        reply = self.post("/acme/revoke-cert", {
            "resource": "revoke-cert", "certificate": b64url(leaf.public_bytes(serialization.Encoding.DER))},
            key=AccountKey.from_private_key(leaf_key))
        self.assertProblem(reply, 404, "malformed", "No such certificate")

    def test_not_entitled(self):
        """
        Another account (whose key the gateway holds) may not revoke the
        certificate: 403 ``unauthorized``, and the certificate stays valid.
        """
        reply = self.revoke(key=OTHER)
        self.assertProblem(reply, 403, "unauthorized", "Revocation request must be signed")
        self.assertIsNone(self.ca.certificates[0].revoked_reason)


class KeyChangeTests(FaceTestCase):
    """
    Errors of key-change.
    """

    def test_new_key_not_in_store(self):
        """
        A rollover to a key the gateway does not hold is a 403
        ``unauthorized`` naming the new key; the account keeps its key.
        """
        reg_url = self.register()
        reply = self.post("/acme/key-change", self.key_change_payload(STRANGER, reg_url))
        self.assertProblem(reply, 403, "unauthorized", STRANGER.thumbprint)
        self.assertEqual(self.ca.counts["keyChange"], 0)
        self.assertEqual(self.ca.accounts[1].thumbprint, KEY.thumbprint)

    def test_mismatched_account_url(self):
        """
        An inner payload naming another registration URL is a 400
        ``malformed``.
        """
        self.register()
        reply = self.post("/acme/key-change", self.key_change_payload(NEW, self.url("/acme/reg/2")))
        self.assertProblem(reply, 400, "malformed", "Incorrect account URL")

    def test_inner_signer_is_not_new_key(self):
        """
        An inner JWS signed by another key than its ``newKey`` is a 400
        ``malformed``.
        """
        reg_url = self.register()
        reply = self.post("/acme/key-change", self.key_change_payload(NEW, reg_url, signer=OTHER))
        self.assertProblem(reply, 400, "malformed", "doesn't match key used to sign inner JWS")

    def test_same_key(self):
        """
        A rollover to the key already in use is a 400 ``malformed``.
        """
        reg_url = self.register()
        reply = self.post("/acme/key-change", self.key_change_payload(KEY, reg_url))
        self.assertProblem(reply, 400, "malformed", "same as the old key")

    def test_new_key_of_another_account(self):
        """
        Rolling over to a key another account already uses is a 409
        ``malformed``.
        """
        reg_url = self.register(KEY)
        self.register(OTHER)
        reply = self.post("/acme/key-change", self.key_change_payload(OTHER, reg_url))
        self.assertProblem(reply, 409, "malformed", "already in use")


class UpstreamFaultTests(FaceTestCase):
    """
    What a v1 client sees when the upstream CA fails or refuses, with
    new-authz (an upstream newOrder) as the example.
    """

    def setUp(self):
        super().setUp()
        self.register()

    def test_5xx_without_problem(self):
        """
        An upstream 500 HTML page is a 500 ``serverInternal`` saying the
        upstream failed.
        """
        self.ca.fail_next("/new-order", 500, b"<html>oops</html>")
        self.assertProblem(self.new_authz(), 500, "serverInternal", "upstream CA failed", "500")

    def test_5xx_with_retry_after(self):
        """
        An upstream 503 with Retry-After is a 503 ``serverInternal`` passing
        Retry-After on.
        """
        self.ca.fail_next("/new-order", 503, b"down for maintenance", {"Retry-After": "120"})
        reply = self.new_authz()
        self.assertProblem(reply, 503, "serverInternal", "upstream CA failed")
        self.assertEqual(reply.header("retry-after"), "120")

    def test_5xx_problem_document(self):
        """
        An upstream 500 problem document is a 500 ``serverInternal`` keeping
        the upstream detail.
        """
        self.ca.fail_next("/new-order", 500, {"type": "serverInternal", "detail": "database on fire"})
        self.assertProblem(self.new_authz(), 500, "serverInternal", "upstream CA failed", "database on fire")

    def test_garbage_success_body(self):
        """
        An upstream 201 whose body is not JSON is a 500 ``serverInternal``.
        """
        self.ca.fail_next("/new-order", 201, b"\x00garbage",
                          {"Content-Type": "application/json", "Location": self.ca.url("/order/x")})
        self.assertProblem(self.new_authz(), 500, "serverInternal", "upstream CA failed", "not JSON")

    def test_garbage_error_body(self):
        """
        An upstream 400 whose body is no problem document is a 500
        ``serverInternal``, not a v2 error.
        """
        self.ca.fail_next("/new-order", 400, b"nonsense")
        self.assertProblem(self.new_authz(), 500, "serverInternal", "upstream CA failed")

    def test_timeout(self):
        """
        An upstream that never answers: once the request timeout passes on
        the clock, the client gets a 500 ``serverInternal`` naming the
        timeout.
        """
        self.ca.hang_next("/new-order")
        pending = defer.Deferred.fromCoroutine(self.client().post(self.url("/acme/new-authz"), {
            "resource": "new-authz", "identifier": {"type": "dns", "value": NAME}}))
        self.assertNoResult(pending)
        self.gateway.advance(29)
        self.assertNoResult(pending)
        self.gateway.advance(2)
        reply = self.successResultOf(pending)
        self.assertProblem(reply, 500, "serverInternal", "upstream CA failed", "within 30s")
        self.assertEqual(len(self.ca.hanging), 1)

    def test_rate_limited(self):
        """
        An upstream ``rateLimited`` is a 429 ``rateLimited`` keeping the
        detail and Retry-After.
        """
        self.ca.fail_next("/new-order", 429, {"type": "rateLimited", "detail": "too many new orders recently"},
                          {"Retry-After": "3600"})
        reply = self.new_authz()
        self.assertProblem(reply, 429, "rateLimited", "too many new orders recently")
        self.assertEqual(reply.header("retry-after"), "3600")

    def test_rejected_identifier(self):
        """
        An upstream ``rejectedIdentifier`` is a 400 ``rejectedIdentifier``.
        """
        self.ca.fail_next("/new-order", 400, {"type": "rejectedIdentifier",
                                              "detail": "Error creating new order :: policy forbids"})
        self.assertProblem(self.new_authz(), 400, "rejectedIdentifier", "policy forbids")

    def test_compound(self):
        """
        An upstream ``compound`` error takes its first subproblem's type and
        lists the subproblems in the detail.
        """
        self.ca.fail_next("/new-order", 400, {
            "type": "compound", "detail": "several problems",
            "subproblems": [{"type": "urn:ietf:params:acme:error:rejectedIdentifier", "detail": "blocked",
                             "identifier": {"type": "dns", "value": NAME}}]})
        self.assertProblem(self.new_authz(), 400, "rejectedIdentifier", f"{NAME}: blocked")

    def test_upstream_bad_nonce_is_retried(self):
        """
        An upstream ``badNonce`` never reaches the client: the request is
        re-signed with a fresh nonce.
        """
        self.ca.fail_next("/new-order", 400, {"type": "badNonce"})
        self.assertEqual(self.new_authz().status, 201)
        self.assertEqual(self.ca.counts["newOrder"], 2)

    def test_directory_failure(self):
        """
        A gateway that cannot read the upstream directory answers its own
        directory with a 500 ``serverInternal``.
        """
        gateway = build_test_gateway([KEY])
        gateway.upstream.read_retries = 0
        gateway.ca.fail_next("/directory", 502, b"bad gateway")
        reply = self.resolve(V1TestClient(gateway.base_url, KEY, http=gateway.client).get(
            gateway.url("/directory")))
        self.assertProblem(reply, 500, "serverInternal", "upstream CA failed")

    def test_directory_read_is_retried(self):
        """
        One failed directory read is retried after a jittered backoff: the
        client gets the directory, and the CA saw two reads.
        """
        gateway = build_test_gateway([KEY])
        gateway.ca.fail_next("/directory", 502, b"bad gateway")
        pending = defer.ensureDeferred(V1TestClient(
            gateway.base_url, KEY, http=gateway.client).get(gateway.url("/directory")))
        gateway.advance(1.0)
        reply = self.successResultOf(pending)
        self.assertEqual(reply.status, 200)
        self.assertIn("new-reg", reply.json())
        self.assertEqual(gateway.ca.counts["directory"], 2)


async def _reply_of(response_deferred) -> Reply:
    return await _reply(await response_deferred)


class HappyPathTests(FaceTestCase):
    """
    The v1 flows once, end to end, through the FakeCA.
    """

    keys = (KEY, OTHER, NEW, RSA_KEY)

    def test_full_flow(self):
        """
        new-reg 201 (Location, Links), new-authz 201 (Location, Link next),
        challenge 202 (Link up), authz GET valid, new-cert 201 (DER,
        Location, Link up), the same bytes at the certificate URL, the
        issuer, and revocation 200.
        """
        reply = self.post("/acme/new-reg", {"resource": "new-reg", "contact": ["mailto:a@example.test"]},
                          key=RSA_KEY)
        self.assertEqual(reply.status, 201, reply.body)
        reg_url = reply.header("location")
        self.assertEqual(reg_url, self.url("/acme/reg/1"))
        self.assertEqual(reply.links("next"), [self.url("/acme/new-authz")])
        self.assertEqual(reply.links("terms-of-service"), [self.url("/terms")])
        self.assertEqual(reply.json()["key"], RSA_KEY.public_jwk_json)

        reply = self.new_authz(key=RSA_KEY)
        self.assertEqual(reply.status, 201, reply.body)
        authz_url = reply.header("location")
        self.assertTrue(authz_url.startswith(self.url("/acme/authz/")))
        self.assertEqual(reply.links("next"), [self.url("/acme/new-cert")])
        self.assertEqual({c["type"] for c in reply.json()["challenges"]}, {"http-01", "dns-01"})
        challenge = next(c for c in reply.json()["challenges"] if c["type"] == "http-01")

        answer = self.post(challenge["uri"], {"resource": "challenge", "type": "http-01",
                                              "keyAuthorization": RSA_KEY.key_authorization(challenge["token"])},
                           key=RSA_KEY)
        self.assertEqual(answer.status, 202, answer.body)
        self.assertEqual(answer.links("up"), [authz_url])
        self.assertEqual(answer.header("location"), challenge["uri"])
        authz = self.resolve(self.client().get(authz_url))
        self.assertEqual((authz.status, authz.json()["status"]), (200, "valid"))

        csr = make_csr([NAME])
        reply = self.post("/acme/new-cert", {"resource": "new-cert", "csr": b64url(csr)}, key=RSA_KEY)
        self.assertEqual(reply.status, 201, reply.body)
        self.assertEqual(reply.header("content-type"), "application/pkix-cert")
        leaf = x509.load_der_x509_certificate(reply.body)
        self.assertEqual(leaf.issuer, self.ca.intermediate.subject)
        cert_url = reply.header("location")
        issuer_url = reply.links("up")[0]
        self.assertEqual(self.ca.counts["newOrder"], 1, "one order for a single-name certificate")

        again = self.resolve(self.client().get(cert_url))
        self.assertEqual((again.status, again.body), (200, reply.body))
        issuer = self.resolve(self.client().get(issuer_url))
        self.assertEqual(issuer.status, 200)
        self.assertEqual(issuer.body, self.ca.intermediate.public_bytes(serialization.Encoding.DER))

        revoked = self.post("/acme/revoke-cert", {"resource": "revoke-cert", "certificate": b64url(reply.body),
                                                  "reason": 1}, key=RSA_KEY)
        self.assertEqual((revoked.status, revoked.body), (200, b""))
        self.assertEqual(self.ca.certificates[0].revoked_reason, 1)

    def test_multi_name_certificate(self):
        """
        A certificate for two separately authorized names is issued from one
        further order that reuses their valid authorizations.
        """
        self.register()
        reply = self.issue(names=("a.example.test", "b.example.test"))
        leaf = x509.load_der_x509_certificate(reply.body)
        names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        self.assertEqual(sorted(names.get_values_for_type(x509.DNSName)), ["a.example.test", "b.example.test"])

    def test_authorization_deactivation(self):
        """
        An authorization POST {"status": "deactivated"} answers 200 with the
        deactivated authorization, upstream too.
        """
        self.register()
        authz_url = self.new_authz().header("location")
        reply = self.post(authz_url, {"resource": "authz", "status": "deactivated"})
        self.assertEqual(reply.status, 200, reply.body)
        self.assertEqual(reply.json()["status"], "deactivated")
        self.assertEqual([a.status for a in self.ca.authorizations.values()], ["deactivated"])

    def test_migrating_client_without_new_reg(self):
        """
        A client registered at the old CA starts with new-authz: the gateway
        adopts its key (creating the upstream account) and serves it.
        """
        reply = self.new_authz()
        self.assertEqual(reply.status, 201, reply.body)
        self.assertEqual(len(self.ca.accounts), 1)

    def test_migrated_account_registration_shows_agreement(self):
        """
        A client that registered at the old CA and never sends new-reg to
        the gateway reads its registration (free_tls_certificates does, on
        every run): it shows the terms the gateway agreed to upstream on
        its behalf, as Boulder showed ``agreement`` for an account that had
        agreed; without ``--agree-to-terms`` there is none to show.
        """
        self.assertEqual(self.new_authz().status, 201)
        reply = self.post("/acme/reg/1", {"resource": "reg"})
        self.assertEqual(reply.status, 202, reply.body)
        self.assertEqual(reply.json()["agreement"], self.url("/terms"))

        # Without --agree-to-terms (and a CA that asks for none), only an
        # agreement the client sent is shown.
        ca = FakeCA(terms_of_service=None)
        gateway = build_test_gateway([KEY], ca=ca, policy=Policy(agree_to_terms=False))
        client = V1TestClient(gateway.base_url, KEY, http=gateway.client)
        reply = self.resolve(client.post(gateway.url("/acme/new-authz"), {
            "resource": "new-authz", "identifier": {"type": "dns", "value": NAME}}))
        self.assertEqual(reply.status, 201, reply.body)
        reply = self.resolve(client.post(gateway.url("/acme/reg/1"), {"resource": "reg"}))
        self.assertEqual(reply.status, 202, reply.body)
        self.assertNotIn("agreement", reply.json())

    def test_key_change(self):
        """
        key-change to a key the gateway holds: 200 with the new key, the
        store and the CA account hold it, the new key is served and the old
        key no longer reaches the account.
        """
        reg_url = self.register()
        reply = self.post("/acme/key-change", self.key_change_payload(NEW, reg_url))
        self.assertEqual(reply.status, 200, reply.body)
        self.assertEqual(reply.json()["key"], NEW.public_jwk_json)
        account = self.successResultOf(self.gateway.store.account_by_id(1))
        self.assertEqual(account.thumbprint, NEW.thumbprint)
        self.assertEqual(self.ca.accounts[1].thumbprint, NEW.thumbprint)
        self.assertEqual(self.post(reg_url, {"resource": "reg"}, key=NEW).status, 202)
        self.assertProblem(self.post(reg_url, {"resource": "reg"}, key=KEY), 403, "unauthorized")

    def test_old_key_refused_after_key_change(self):
        """
        After a key change the old key is retired: an account-bound request
        signed by it is a 403 ``unauthorized`` (Boulder: "No registration
        exists matching provided key"), and no new upstream account appears.
        """
        reg_url = self.register()
        self.assertEqual(self.post("/acme/key-change", self.key_change_payload(NEW, reg_url)).status, 200)
        self.assertProblem(self.new_authz(key=KEY), 403, "unauthorized")
        self.assertEqual(len(self.ca.accounts), 1)

    def test_terms_redirect(self):
        """
        /terms redirects to the upstream terms of service.
        """
        reply = self.resolve(_reply_of(self.gateway.client.get(self.url("/terms"), allow_redirects=False)))
        self.assertEqual(reply.status, 302)
        self.assertEqual(reply.header("location"), self.ca.terms_of_service)


class FakeCATests(SynchronousTestCase):
    """
    The FakeCA's own strictness and knobs, through the upstream client.
    """

    def setUp(self):
        self.ca = FakeCA()
        self.http = StubTreq(self.ca)
        self.client = UpstreamClient(self.ca.directory_url, self.http, self.ca.clock)

    def resolve(self, coroutine):
        return self.successResultOf(defer.Deferred.fromCoroutine(coroutine))

    def raw_post(self, path, body, content_type="application/jose+json"):
        async def send():
            response = await self.http.post(self.ca.url(path), data=body,
                                            headers={"Content-Type": [content_type]})
            return response.code, json.loads(await response.content() or b"{}")

        return self.resolve(send())

    def test_wildcard_order(self):
        """
        A wildcard name gets an authorization for the base name with
        ``wildcard: true`` and only a dns-01 challenge.
        """
        account = self.resolve(self.client.new_account(KEY))
        order = self.resolve(self.client.new_order(account, ["*.example.test", "example.test"]))
        authorizations = [self.resolve(self.client.get_authorization(account, url))
                          for url in order.authorizations]
        wildcard = next(a for a in authorizations if a.wildcard)
        plain = next(a for a in authorizations if not a.wildcard)
        self.assertEqual(wildcard.identifier, "example.test")
        self.assertEqual([c.type for c in wildcard.challenges], ["dns-01"])
        self.assertEqual({c.type for c in plain.challenges}, {"http-01", "dns-01"})

    def test_content_type_and_nonce(self):
        """
        A POST with another Content-Type is a 415; an unknown nonce is a
        ``badNonce``; a JWS ``url`` that is not the request URL is refused.
        """
        nonce = self.resolve(self.client._nonce())
        jws = sign_flattened(KEY, {}, {"nonce": nonce, "url": self.ca.url("/new-account"),
                                       "jwk": KEY.public_jwk_json})
        status, body = self.raw_post("/new-account", json.dumps(jws).encode(), "application/json")
        self.assertEqual((status, body["type"]), (415, "urn:ietf:params:acme:error:malformed"))
        jws = sign_flattened(KEY, {}, {"nonce": "made-up", "url": self.ca.url("/new-account"),
                                       "jwk": KEY.public_jwk_json})
        status, body = self.raw_post("/new-account", json.dumps(jws).encode())
        self.assertEqual((status, body["type"]), (400, "urn:ietf:params:acme:error:badNonce"))
        jws = sign_flattened(KEY, {}, {"nonce": self.resolve(self.client._nonce()),
                                       "url": self.ca.url("/new-order"), "jwk": KEY.public_jwk_json})
        status, body = self.raw_post("/new-account", json.dumps(jws).encode())
        self.assertEqual(status, 401)

    def test_validation_on_read(self):
        """
        With ``validate_immediately=False`` an answered challenge stays
        ``processing`` until the next read, where the validator decides it.
        """
        seen = []
        self.ca.validate_immediately = False
        self.ca.validator = lambda authorization, challenge, key_authorization: (
            seen.append(key_authorization) or True)
        account = self.resolve(self.client.new_account(KEY))
        order = self.resolve(self.client.new_order(account, ["a.example.test"]))
        authorization = self.resolve(self.client.get_authorization(account, order.authorizations[0]))
        challenge = authorization.challenge("http-01")
        answered = self.resolve(self.client.answer_challenge(account, challenge.url))
        self.assertEqual((answered.status, seen), ("processing", []))
        read = self.resolve(self.client.get_authorization(account, order.authorizations[0]))
        self.assertEqual(read.status, "valid")
        self.assertEqual(seen, [KEY.key_authorization(challenge.token)])
        self.assertEqual(self.resolve(self.client.get_order(account, order.url)).status, "ready")

    def test_only_return_existing_and_finalize_names(self):
        """
        onlyReturnExisting for an unknown key is ``accountDoesNotExist``;
        finalizing with a CSR for other names is 403 ``unauthorized``.
        """
        self.assertIsNone(self.resolve(self.client.find_account(KEY)))
        account = self.resolve(self.client.new_account(KEY))
        order = self.resolve(self.client.new_order(account, ["a.example.test"]))
        authorization = self.resolve(self.client.get_authorization(account, order.authorizations[0]))
        self.resolve(self.client.answer_challenge(account, authorization.challenge("http-01").url))
        failure = self.failureResultOf(defer.Deferred.fromCoroutine(
            self.client.finalize(account, order, make_csr(["b.example.test"]))), UpstreamProblem)
        self.assertEqual((failure.value.status, failure.value.code), (403, "unauthorized"))
        self.assertEqual(len(self.ca.orders), 1)
