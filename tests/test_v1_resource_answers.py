"""
What each endpoint of the v1 resource tree (`gateway.v1.resource`) answers a
v1 client beyond its body: status codes, ``Location``, ``Link`` and
``Content-Type`` as Boulder sent them, per endpoint and method; ``/terms``
for each form of the CA's ``termsOfService`` (a URL, a ``data:`` URI as
Pebble publishes, anything else); and key-change inner payloads that are no
JSON object.  Through whole in-memory gateways (`tests.test_v1_face.FaceTestCase`).
"""

from __future__ import annotations

from gateway.process.testing import FakeCA, build_test_gateway
from tests.support.v1_client import _reply
from tests.support.v1_signing import sign_jws
from tests.test_v1_face import NEW, FaceTestCase


class TermsTests(FaceTestCase):
    """
    ``/terms`` shows the CA's terms of service: a redirect to a URL, the
    content of a ``data:`` URI, a 404 for anything else.
    """

    def terms(self, terms_of_service: str, method: str = "GET"):
        self.gateway = build_test_gateway(self.keys, ca=FakeCA(terms_of_service=terms_of_service))

        async def send():
            return await _reply(await self.gateway.client.request(
                method, self.gateway.url("/terms"), allow_redirects=False))

        return self.resolve(send())

    def test_urls_are_redirects(self):
        for url in ("http://ca.test/terms", "https://ca.test/terms/v2.pdf"):
            reply = self.terms(url)
            self.assertEqual((reply.status, reply.body), (302, b""))
            self.assertEqual(reply.header("location"), url)
            self.assertTrue(reply.header("replay-nonce"))

    def test_pebbles_data_uri(self):
        """
        Pebble's terms (``data:text/plain,Do%20what%20thou%20wilt``) are
        served as the text they encode.
        """
        reply = self.terms("data:text/plain,Do%20what%20thou%20wilt")
        self.assertEqual(reply.status, 200, reply.body)
        self.assertEqual(reply.header("content-type"), "text/plain")
        self.assertEqual(reply.body, b"Do what thou wilt")

    def test_base64_data_uri_with_parameters_and_no_padding(self):
        reply = self.terms("data:text/html;charset=utf-8;base64,PGI+aGkhPC9iPg")
        self.assertEqual(reply.status, 200, reply.body)
        self.assertEqual(reply.header("content-type"), "text/html")
        self.assertEqual(reply.body, b"<b>hi!</b>")

    def test_head_of_data_uri_terms(self):
        reply = self.terms("data:text/plain,Do%20what%20thou%20wilt", method="HEAD")
        self.assertEqual((reply.status, reply.body), (200, b""))
        self.assertEqual(reply.header("content-length"), str(len(b"Do what thou wilt")))

    def test_data_uri_without_or_with_a_strange_media_type_is_text(self):
        """
        A ``data:`` URI without a media type is text (RFC 2397); one whose
        media type is no plain ``type/subtype`` is served as text too, so
        the CA cannot make the gateway send markup under an odd type; the
        data starts after the first comma.
        """
        for uri, body in (("data:,Hello%2C%20World", b"Hello, World"),
                          ("data:Text/HTML,<b>x</b>", b"<b>x</b>"),
                          ("data:text/html<script>;base64,eA", b"x"),
                          ("data:text/plain,a,b", b"a,b")):
            reply = self.terms(uri)
            self.assertEqual(reply.status, 200, (uri, reply.body))
            self.assertEqual(reply.header("content-type"), "text/plain", uri)
            self.assertEqual(reply.body, body, uri)

    def test_terms_that_are_neither(self):
        reply = self.terms("urn:example:terms")
        problem = self.assertProblem(reply, 404, "malformed")
        self.assertEqual(problem["detail"], "The upstream terms of service are not fetchable")

    def test_a_data_uri_whose_base64_is_broken_is_not_fetchable(self):
        """
        Base64 that cannot be decoded (one character past a multiple of
        four) is the CA's input: a 404 like other terms the gateway cannot
        serve, not a 500 logged as a bug of the gateway.
        """
        reply = self.terms("data:text/plain;base64,a")
        problem = self.assertProblem(reply, 404, "malformed")
        self.assertEqual(problem["detail"], "The upstream terms of service are not fetchable")


class HeadersTests(FaceTestCase):
    """
    ``Location`` for what an answer created, ``Link`` to what comes next
    or above, per endpoint.
    """

    def setUp(self):
        super().setUp()
        self.reg_url = self.register()

    def assertRegistrationLinks(self, reply):
        """
        The Link headers word for word: relations in lower case, quoted
        (clients look them up by exact name, as ``requests``' ``links``).
        """
        self.assertEqual(reply.headers["link"], [
            '<http://gateway.test/acme/new-authz>;rel="next"',
            '<http://gateway.test/terms>;rel="terms-of-service"'])

    def test_registration_update(self):
        reply = self.post(self.reg_url, {"resource": "reg"})
        self.assertEqual(reply.status, 202, reply.body)
        self.assertEqual(reply.header("content-type"), "application/json")
        self.assertIsNone(reply.header("location"))
        self.assertRegistrationLinks(reply)

    def test_key_change(self):
        """
        key-change answers 200 with the registration under its new key, its
        agreement (the terms the gateway agreed to) and the registration
        Links.
        """
        payload = self.key_change_payload(NEW, self.reg_url)
        reply = self.post("/acme/key-change", payload)
        self.assertEqual(reply.status, 200, reply.body)
        self.assertEqual(reply.json()["agreement"], self.url("/terms"))
        self.assertRegistrationLinks(reply)

    def test_key_change_of_an_adopted_account_shows_the_gateways_agreement(self):
        """
        An account adopted at its first new-authz (the client registered at
        the old CA) sent no agreement: after a key change it shows the terms
        the gateway agreed to upstream on its behalf, as a read does.
        """
        gateway = build_test_gateway(self.keys)
        self.gateway, self.ca, self.clients = gateway, gateway.ca, {}
        self.assertEqual(self.new_authz().status, 201)
        reply = self.post("/acme/key-change", self.key_change_payload(NEW, self.url("/acme/reg/1")))
        self.assertEqual(reply.status, 200, reply.body)
        self.assertEqual(reply.json()["agreement"], self.url("/terms"))

    def test_new_reg_of_a_registered_key(self):
        reply = self.post("/acme/new-reg", {"resource": "new-reg"})
        problem = self.assertProblem(reply, 409, "malformed")
        self.assertEqual(problem["detail"], "Registration key is already in use")
        self.assertEqual(reply.header("location"), self.reg_url)

    def test_authorization_reads_and_deactivation(self):
        """
        An authorization is created at its Location (201); reading it, or
        deactivating it, answers 200 with no Location, each with the Link to
        new-cert.
        """
        created = self.new_authz()
        authz_url = created.header("location")
        self.assertEqual(created.headers["link"], ['<http://gateway.test/acme/new-cert>;rel="next"'])
        read = self.resolve(self.client().get(authz_url))
        self.assertEqual(read.status, 200, read.body)
        self.assertIsNone(read.header("location"))
        self.assertEqual(read.headers["link"], ['<http://gateway.test/acme/new-cert>;rel="next"'])
        self.assertEqual(read.json(), created.json())
        deactivated = self.post(authz_url, {"resource": "authz", "status": "deactivated"})
        self.assertEqual(deactivated.status, 200, deactivated.body)
        self.assertIsNone(deactivated.header("location"))
        self.assertEqual(deactivated.links("next"), [self.url("/acme/new-cert")])

    def test_challenge_read(self):
        """
        A challenge read answers as Boulder did, 202, at its own Location,
        with the Link up to its authorization.
        """
        created = self.new_authz()
        authz_url = created.header("location")
        challenge = created.json()["challenges"][0]
        reply = self.resolve(self.client().get(challenge["uri"]))
        self.assertEqual(reply.status, 202, reply.body)
        self.assertEqual(reply.header("location"), challenge["uri"])
        self.assertEqual(reply.links("up"), [authz_url])
        self.assertEqual(reply.json(), challenge)

    def test_failed_challenge_read(self):
        """
        A challenge the CA found invalid shows its v1 error when read.
        """
        self.ca.validator = lambda authorization, challenge, key_authorization: False
        _, answered = self.authorize()
        reply = self.resolve(self.client().get(answered.header("location")))
        self.assertEqual(reply.json()["error"]["type"], "urn:acme:error:unauthorized")
        self.assertEqual(reply.json(), answered.json())

    def test_certificate_reads(self):
        """
        new-cert answers 201 at the certificate's Location; reading it
        answers 200 with the same DER and the same Link up to the issuer,
        without a Location; the issuer is DER too.
        """
        created = self.issue()
        read = self.resolve(self.client().get(created.header("location")))
        self.assertEqual((read.status, read.body), (200, created.body))
        self.assertEqual(read.header("content-type"), "application/pkix-cert")
        self.assertIsNone(read.header("location"))
        self.assertEqual(read.links("up"), created.links("up"))
        self.assertEqual(len(read.links("up")), 1)
        issuer = self.resolve(self.client().get(read.links("up")[0]))
        self.assertEqual(issuer.status, 200, issuer.body)
        self.assertEqual(issuer.header("content-type"), "application/pkix-cert")


class KeyChangeInnerPayloadTests(FaceTestCase):
    """
    A key-change whose inner JWS carries no JSON object is a 400
    ``malformed`` saying so, and the account keeps its key.
    """

    def inner(self, payload: bytes) -> dict:
        jws = sign_jws(NEW.sign, {"alg": NEW.algorithm.name, "jwk": NEW.public_jwk_json}, payload)
        return dict(jws, resource="key-change")

    def test_inner_payload_not_json(self):
        self.register()
        reply = self.post("/acme/key-change", self.inner(b"not json"))
        problem = self.assertProblem(reply, 400, "malformed")
        self.assertEqual(problem["detail"], "Inner JWS payload is not JSON")
        self.assertEqual(self.ca.counts["keyChange"], 0)

    def test_inner_payload_not_an_object(self):
        self.register()
        reply = self.post("/acme/key-change", self.inner(b'["account"]'))
        problem = self.assertProblem(reply, 400, "malformed")
        self.assertEqual(problem["detail"], "Inner JWS payload is not a JSON object")
        self.assertEqual(self.ca.counts["keyChange"], 0)
