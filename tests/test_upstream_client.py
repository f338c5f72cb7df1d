"""
Unit tests of the upstream ACME v2 client against a scripted in-memory CA
(``treq.testing.StubTreq``) and a fake clock: signing, nonce pool, badNonce
retries, Retry-After, polling and the error types.
"""

import email.utils
import json

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web import resource, server
from treq.testing import StubTreq

from gateway.keys.jose import AccountKey, b64url_decode
from gateway.upstream.client import JOSE_CONTENT_TYPE, PollPolicy, UpstreamClient
from gateway.upstream.errors import (
    PollTimeout,
    UpstreamProblem,
    UpstreamProtocolError,
    UpstreamUnavailable,
)
from gateway.upstream.messages import (
    Authorization,
    Order,
    order_is_ready,
    parse_links,
    parse_retry_after,
    split_pem_chain,
)

BASE = "https://ca.test"
DIRECTORY = {
    "newNonce": BASE + "/nonce",
    "newAccount": BASE + "/new-acct",
    "newOrder": BASE + "/new-order",
    "revokeCert": BASE + "/revoke",
    "keyChange": BASE + "/key-change",
    "meta": {"termsOfService": "data:text/plain,tos"},
}


class ScriptedCA(resource.Resource):
    """
    A fake CA: answers from per-path queues of scripted responses and records
    every request (method, path, headers, decoded JWS).
    """

    isLeaf = True

    def __init__(self):
        super().__init__()
        self.scripts = {}
        self.requests = []
        self.nonce_counter = 0
        self.hang = set()

    def script(self, path, status=200, body=None, headers=None, nonce=True):
        self.scripts.setdefault(path, []).append((status, body, headers or {}, nonce))

    def _nonce(self):
        self.nonce_counter += 1
        return f"nonce-{self.nonce_counter}"

    def render(self, request):
        path = request.path.decode()
        body = request.content.read()
        record = {
            "method": request.method.decode(),
            "path": path,
            "content_type": request.getHeader("content-type"),
            "user_agent": request.getHeader("user-agent"),
        }
        if body:
            jws = json.loads(body)
            record["jws"] = jws
            record["protected"] = json.loads(b64url_decode(jws["protected"]))
            record["payload"] = b64url_decode(jws["payload"])
        self.requests.append(record)
        if path in self.hang:
            return server.NOT_DONE_YET
        if path == "/directory":
            request.setHeader("content-type", "application/json")
            return json.dumps(DIRECTORY).encode()
        if path == "/nonce":
            request.setHeader("replay-nonce", self._nonce())
            return b""
        status, payload, headers, nonce = self.scripts[path].pop(0)
        request.setResponseCode(status)
        if nonce:
            request.setHeader("replay-nonce", self._nonce())
        for name, value in headers.items():
            request.responseHeaders.addRawHeader(name, value)
        if isinstance(payload, (dict, list)):
            if not request.responseHeaders.hasHeader("content-type"):
                request.setHeader(
                    "content-type",
                    "application/problem+json" if status >= 400 else "application/json",
                )
            return json.dumps(payload).encode()
        return payload or b""

    def posts(self):
        return [r for r in self.requests if r["method"] == "POST"]


def rsa_key():
    return AccountKey.from_private_key(rsa.generate_private_key(65537, 2048))


EC_KEY = AccountKey.from_private_key(ec.generate_private_key(ec.SECP256R1()))


class UpstreamClientTests(SynchronousTestCase):
    """
    The client's protocol behaviour, one exchange at a time.
    """

    def setUp(self):
        self.ca = ScriptedCA()
        self.clock = Clock()
        self.client = UpstreamClient(
            BASE + "/directory",
            StubTreq(self.ca),
            self.clock,
            poll_policy=PollPolicy(initial=1.0, factor=2.0, maximum=8.0, timeout=60.0),
        )
        self.account_url = BASE + "/acct/1"

    def resolve(self, coroutine):
        return self.successResultOf(defer.Deferred.fromCoroutine(coroutine))

    def fail_with(self, coroutine, kind):
        return self.failureResultOf(defer.Deferred.fromCoroutine(coroutine), kind).value

    def account(self, key=EC_KEY):
        from gateway.upstream.messages import UpstreamAccount

        return UpstreamAccount(key=key, url=self.account_url)

    def test_directory_is_fetched_once(self):
        """
        The directory is cached: two calls, one GET.
        """
        first = self.resolve(self.client.directory())
        second = self.resolve(self.client.directory())
        self.assertIs(first, second)
        self.assertEqual(first.new_order, BASE + "/new-order")
        self.assertEqual(sum(r["path"] == "/directory" for r in self.ca.requests), 1)

    def test_new_account_signs_with_jwk_and_exact_headers(self):
        """
        newAccount is signed with ``jwk`` (no ``kid``), ``url`` is the exact
        newAccount URL, the Content-Type is exactly application/jose+json and
        a User-Agent is sent.
        """
        self.ca.script("/new-acct", 201, {"status": "valid"}, {"location": self.account_url})
        account = self.resolve(self.client.new_account(EC_KEY, contact=["mailto:a@b.test"]))
        self.assertEqual(account.url, self.account_url)
        post = self.ca.posts()[0]
        self.assertEqual(post["content_type"], JOSE_CONTENT_TYPE)
        self.assertTrue(post["user_agent"].startswith("acme-gateway/"))
        self.assertEqual(post["protected"]["url"], BASE + "/new-acct")
        self.assertEqual(post["protected"]["jwk"], EC_KEY.public_jwk_json)
        self.assertNotIn("kid", post["protected"])
        self.assertEqual(post["protected"]["alg"], "ES256")
        self.assertEqual(
            json.loads(post["payload"]),
            {"termsOfServiceAgreed": True, "contact": ["mailto:a@b.test"]},
        )

    def test_signature_verifies(self):
        """
        The JWS the client sends verifies with the account's public key.
        """
        key = rsa_key()
        self.ca.script("/new-acct", 201, {}, {"location": self.account_url})
        self.resolve(self.client.new_account(key))
        jws = self.ca.posts()[0]["jws"]
        signing_input = f"{jws['protected']}.{jws['payload']}".encode()
        self.assertTrue(
            key.algorithm.verify(
                key.private_key.public_key(), signing_input, b64url_decode(jws["signature"])
            )
        )

    def test_kid_for_everything_but_new_account(self):
        """
        An order is requested with ``kid`` = account URL and no ``jwk``.
        """
        self.ca.script(
            "/new-order", 201,
            {"status": "pending", "identifiers": [{"type": "dns", "value": "a.test"}],
             "authorizations": [BASE + "/authz/1"], "finalize": BASE + "/fin/1"},
            {"location": BASE + "/order/1"},
        )
        order = self.resolve(self.client.new_order(self.account(), ["a.test"]))
        self.assertEqual(order.url, BASE + "/order/1")
        protected = self.ca.posts()[0]["protected"]
        self.assertEqual(protected["kid"], self.account_url)
        self.assertNotIn("jwk", protected)

    def test_post_as_get_payload_is_empty_and_challenge_answer_is_empty_object(self):
        """
        Reads send the empty payload; a challenge answer sends ``{}``.
        """
        self.ca.script("/chall/1", 200, {"url": BASE + "/chall/1", "type": "http-01",
                                         "status": "pending", "token": "t"})
        self.ca.script("/chall/1", 200, {"url": BASE + "/chall/1", "type": "http-01",
                                         "status": "processing", "token": "t"})
        self.resolve(self.client.get_challenge(self.account(), BASE + "/chall/1"))
        challenge = self.resolve(self.client.answer_challenge(self.account(), BASE + "/chall/1"))
        self.assertEqual(challenge.status, "processing")
        payloads = [p["payload"] for p in self.ca.posts()]
        self.assertEqual(payloads, [b"", b"{}"])

    def test_nonce_pool_avoids_new_nonce(self):
        """
        The first POST fetches a nonce with HEAD newNonce; the next one uses
        the ``Replay-Nonce`` of the previous response.
        """
        for _ in range(2):
            self.ca.script("/new-acct", 200, {}, {"location": self.account_url})
        self.resolve(self.client.find_account(EC_KEY))
        self.resolve(self.client.find_account(EC_KEY))
        heads = [r for r in self.ca.requests if r["path"] == "/nonce"]
        self.assertEqual(len(heads), 1)
        self.assertEqual(heads[0]["method"], "HEAD")
        nonces = [p["protected"]["nonce"] for p in self.ca.posts()]
        self.assertEqual(nonces, ["nonce-1", "nonce-2"])

    def test_bad_nonce_is_retried_with_the_error_nonce(self):
        """
        ``badNonce`` is retried with the nonce that came with the error.
        """
        self.ca.script("/new-acct", 400, {"type": "urn:ietf:params:acme:error:badNonce",
                                          "detail": "bad"})
        self.ca.script("/new-acct", 200, {}, {"location": self.account_url})
        account = self.resolve(self.client.find_account(EC_KEY))
        self.assertEqual(account.url, self.account_url)
        nonces = [p["protected"]["nonce"] for p in self.ca.posts()]
        self.assertEqual(nonces, ["nonce-1", "nonce-2"])

    def test_bad_nonce_retries_are_bounded(self):
        """
        After ``max_nonce_retries`` re-signs, the badNonce problem is raised.
        """
        client = UpstreamClient(BASE + "/directory", StubTreq(self.ca), self.clock,
                                max_nonce_retries=2)
        for _ in range(3):
            self.ca.script("/new-acct", 400, {"type": "urn:ietf:params:acme:error:badNonce"})
        problem = self.fail_with(client.find_account(EC_KEY), UpstreamProblem)
        self.assertEqual(problem.code, "badNonce")
        self.assertEqual(len(self.ca.posts()), 3)

    def test_account_does_not_exist_is_none(self):
        """
        ``onlyReturnExisting`` for an unknown key yields ``None``.
        """
        self.ca.script("/new-acct", 400, {"type": "urn:ietf:params:acme:error:accountDoesNotExist"})
        self.assertIsNone(self.resolve(self.client.find_account(EC_KEY)))
        self.assertEqual(json.loads(self.ca.posts()[0]["payload"]), {"onlyReturnExisting": True})

    def test_problem_document_becomes_typed_exception(self):
        """
        A problem document's type, detail, status, subproblems and
        Retry-After all reach the exception.
        """
        self.ca.script(
            "/new-order", 429,
            {"type": "urn:ietf:params:acme:error:rateLimited", "detail": "too many new orders",
             "subproblems": [{"type": "urn:ietf:params:acme:error:rejectedIdentifier",
                              "detail": "nope", "identifier": {"type": "dns", "value": "x.test"}}]},
            {"retry-after": "120"},
        )
        problem = self.fail_with(self.client.new_order(self.account(), ["x.test"]), UpstreamProblem)
        self.assertEqual(
            (problem.code, problem.detail, problem.status, problem.retry_after),
            ("rateLimited", "too many new orders", 429, 120.0),
        )
        self.assertEqual(problem.subproblems[0].code, "rejectedIdentifier")
        self.assertEqual(problem.subproblems[0].identifier["value"], "x.test")

    def test_bare_404_is_a_problem(self):
        """
        Pebble's bare 404 (no body) is a problem of type ``about:blank``.
        """
        self.ca.script("/authz/9", 404, b"")
        problem = self.fail_with(
            self.client.get_authorization(self.account(), BASE + "/authz/9"), UpstreamProblem
        )
        self.assertEqual((problem.status, problem.type), (404, "about:blank"))

    def test_5xx_without_problem_is_unavailable(self):
        """
        An HTML 502 page is `UpstreamUnavailable`, with its Retry-After.
        """
        self.client.read_retries = 0
        self.ca.script("/order/1", 503, b"<html>down</html>", {"retry-after": "30",
                                                              "content-type": "text/html"})
        error = self.fail_with(
            self.client.get_order(self.account(), BASE + "/order/1"), UpstreamUnavailable
        )
        self.assertEqual(error.retry_after, 30.0)

    def test_reads_are_retried_with_bounded_jittered_backoff(self):
        """
        A read that meets 5xx is retried after a delay within the jitter
        bounds (0.5-1.5 x base, doubling), at most ``read_retries`` times;
        then the last failure is raised.
        """
        self.client.read_retries = 2
        self.client.retry_base_delay = 1.0
        for _ in range(3):
            self.ca.script("/order/1", 502, b"down", {"content-type": "text/plain"})
        result = defer.Deferred.fromCoroutine(self.client.get_order(self.account(), BASE + "/order/1"))
        self.assertEqual(len(self.ca.posts()), 1)
        self.clock.advance(0.49)
        self.assertEqual(len(self.ca.posts()), 1)
        self.clock.advance(1.01)
        self.assertEqual(len(self.ca.posts()), 2)
        self.clock.advance(3.0)
        self.assertEqual(len(self.ca.posts()), 3)
        self.failureResultOf(result, UpstreamUnavailable)

    def test_writes_are_not_retried(self):
        """
        A new order (not idempotent) that meets 5xx fails at once: retrying
        it could create two orders.
        """
        self.ca.script("/new-order", 502, b"down", {"content-type": "text/plain"})
        self.fail_with(self.client.new_order(self.account(), ["a.test"]), UpstreamUnavailable)
        self.assertEqual(len(self.ca.posts()), 1)

    def test_account_recovery_when_the_ca_forgot_the_account(self):
        """
        ``accountDoesNotExist`` for a known kid (a CA that lost its state)
        calls the recovery hook once and retries with the URL it returns.
        """
        calls = []

        async def recover(upstream, key, stale):
            calls.append((upstream, stale))
            return BASE + "/acct/2"

        self.client = UpstreamClient(BASE + "/directory", StubTreq(self.ca), self.clock,
                                     account_recovery=recover)
        self.ca.script("/order/1", 400, {"type": "urn:ietf:params:acme:error:accountDoesNotExist"})
        self.ca.script("/order/1", 200, {"status": "pending", "identifiers": [], "authorizations": [],
                                         "finalize": BASE + "/fin/1"})
        order = self.resolve(self.client.get_order(self.account(), BASE + "/order/1"))
        self.assertEqual(order.status, "pending")
        self.assertEqual(calls, [(self.client, self.account_url)])
        self.assertEqual([p["protected"]["kid"] for p in self.ca.posts()],
                         [self.account_url, BASE + "/acct/2"])

    def test_non_json_success_body_is_protocol_error(self):
        """
        A 200 whose body is not JSON where JSON is required is a protocol
        error, not a crash.
        """
        self.ca.script("/order/1", 200, b"not json", {"content-type": "application/json"})
        self.fail_with(self.client.get_order(self.account(), BASE + "/order/1"),
                       UpstreamProtocolError)

    def test_timeout_is_unavailable_not_a_hang(self):
        """
        A CA that never answers gives `UpstreamUnavailable` once the request
        timeout passes on the clock.
        """
        self.client.read_retries = 0
        self.ca.hang.add("/order/1")
        result = defer.Deferred.fromCoroutine(self.client.get_order(self.account(), BASE + "/order/1"))
        self.assertNoResult(result)
        self.clock.advance(31)
        error = self.failureResultOf(result, UpstreamUnavailable).value
        self.assertIn("within 30s", str(error))

    def test_poll_authorization_honours_retry_after(self):
        """
        Polling waits the CA's Retry-After (seconds form, then date form)
        before reading again.
        """
        url = BASE + "/authz/1"
        body = lambda status: {"status": status, "identifier": {"type": "dns", "value": "a.test"},
                               "challenges": []}
        self.ca.script("/authz/1", 200, body("pending"), {"retry-after": "5"})
        date = email.utils.formatdate(self.clock.seconds() + 5 + 3, usegmt=True)
        self.ca.script("/authz/1", 200, body("pending"), {"retry-after": date})
        self.ca.script("/authz/1", 200, body("valid"))
        result = defer.Deferred.fromCoroutine(self.client.poll_authorization(self.account(), url))
        self.assertEqual(len(self.ca.posts()), 1)
        self.clock.advance(4.9)
        self.assertEqual(len(self.ca.posts()), 1)
        self.clock.advance(0.1)
        self.assertEqual(len(self.ca.posts()), 2)
        self.clock.advance(2.5)
        self.assertEqual(len(self.ca.posts()), 2)
        self.clock.advance(1)
        self.assertEqual(self.successResultOf(result).status, "valid")

    def test_poll_without_retry_after_backs_off_and_times_out(self):
        """
        Without Retry-After the delays grow 1, 2, 4, 8, 8 ... and polling
        ends with `PollTimeout` at the policy's timeout.
        """
        url = BASE + "/authz/1"
        for _ in range(20):
            self.ca.script("/authz/1", 200, {"status": "pending", "challenges": [],
                                             "identifier": {"type": "dns", "value": "a.test"}})
        result = defer.Deferred.fromCoroutine(self.client.poll_authorization(self.account(), url))
        times = []
        for _ in range(70):
            before = len(self.ca.posts())
            self.clock.advance(1.0)
            if len(self.ca.posts()) != before:
                times.append(round(self.clock.seconds(), 1))
        self.assertEqual(times[:5], [1.0, 3.0, 7.0, 15.0, 23.0])
        failure = self.failureResultOf(result, PollTimeout)
        self.assertEqual(failure.value.last_status, "pending")

    def test_download_splits_chain_and_lists_alternates(self):
        """
        A PEM chain becomes DER certificates, leaf first; ``alternate`` links
        are exposed.
        """
        from tests.support.certs import make_chain_pem

        pem, ders = make_chain_pem()
        self.ca.script("/cert/1", 200, pem, {
            "content-type": "application/pem-certificate-chain",
            "link": f'<{BASE}/cert/1/alt/1>;rel="alternate", <{BASE}/dir>;rel="index"',
        })
        chain = self.resolve(self.client.download_certificate(self.account(), BASE + "/cert/1"))
        self.assertEqual(chain.certificates, ders)
        self.assertEqual(chain.leaf, ders[0])
        self.assertEqual(chain.alternates, (BASE + "/cert/1/alt/1",))

    def test_key_change_inner_jws(self):
        """
        The keyChange inner JWS is signed by the new key, carries its jwk and
        the outer url, no nonce, and names the account and the old key.
        """
        new = rsa_key()
        self.ca.script("/key-change", 200, b"")
        rolled = self.resolve(self.client.change_key(self.account(), new))
        self.assertIs(rolled.key, new)
        outer = self.ca.posts()[0]
        self.assertEqual(outer["protected"]["kid"], self.account_url)
        inner = json.loads(outer["payload"])
        inner_protected = json.loads(b64url_decode(inner["protected"]))
        self.assertEqual(inner_protected["jwk"], new.public_jwk_json)
        self.assertEqual(inner_protected["url"], BASE + "/key-change")
        self.assertNotIn("nonce", inner_protected)
        self.assertEqual(
            json.loads(b64url_decode(inner["payload"])),
            {"account": self.account_url, "oldKey": EC_KEY.public_jwk_json},
        )

    def test_revoke_by_certificate_key_uses_jwk(self):
        """
        Revocation by certificate key carries that key's jwk, not a kid.
        """
        cert_key = rsa_key()
        self.ca.script("/revoke", 200, b"")
        self.resolve(self.client.revoke_certificate(b"\x30\x00", reason=1, certificate_key=cert_key))
        post = self.ca.posts()[0]
        self.assertEqual(post["protected"]["jwk"], cert_key.public_jwk_json)
        self.assertEqual(json.loads(post["payload"]), {"certificate": "MAA", "reason": 1})


class PureParsingTests(SynchronousTestCase):
    """
    Retry-After, Link, chains and readiness, without any I/O.
    """

    def test_retry_after_forms(self):
        """
        Delta-seconds, an HTTP date in the future or past, and garbage.
        """
        now = 1_800_000_000.0
        self.assertEqual(parse_retry_after("17", now), 17.0)
        self.assertEqual(parse_retry_after(email.utils.formatdate(now + 90, usegmt=True), now), 90.0)
        self.assertEqual(parse_retry_after(email.utils.formatdate(now - 90, usegmt=True), now), 0.0)
        self.assertIsNone(parse_retry_after("soon", now))
        self.assertIsNone(parse_retry_after("-5", now))
        self.assertIsNone(parse_retry_after(None, now))

    def test_links(self):
        """
        Several links in one value and across values, quoted and bare rels.
        """
        links = parse_links(['<https://a/1>;rel="alternate", <https://a/2>; rel=alternate',
                             '<https://a/dir>;rel="index"'])
        self.assertEqual(links["alternate"], ["https://a/1", "https://a/2"])
        self.assertEqual(links["index"], ["https://a/dir"])

    def test_split_chain_rejects_garbage(self):
        """
        A chain body with no certificate is a protocol error.
        """
        with pytest.raises(UpstreamProtocolError):
            split_pem_chain(b"hello")

    def test_pending_order_with_valid_authorizations_is_ready(self):
        """
        ``pending`` with every authorization valid counts as ready (2018 Let's
        Encrypt); with one pending it does not.
        """
        order = Order.from_json("u", {"status": "pending", "identifiers": [], "authorizations": ["a"],
                                      "finalize": "f"})
        valid = Authorization.from_json("a", {"status": "valid", "challenges": [],
                                              "identifier": {"type": "dns", "value": "x"}})
        pending = Authorization.from_json("a", {"status": "pending", "challenges": [],
                                                "identifier": {"type": "dns", "value": "x"}})
        self.assertTrue(order_is_ready(order, [valid]))
        self.assertFalse(order_is_ready(order, [valid, pending]))
        self.assertFalse(order_is_ready(order, []))

    def test_malformed_objects_are_protocol_errors(self):
        """
        Untrusted JSON of the wrong shape is refused cleanly.
        """
        for document in (None, [], {"status": 3}, {"status": "valid", "identifiers": "x"}):
            with pytest.raises(UpstreamProtocolError):
                Order.from_json("u", document)
