"""
What a v1 client sees of the face itself (`gateway.v1.face.V1Face`) over
HTTP, whatever the endpoint: the headers every answer carries, the routes
(query strings, trailing slashes, a ``--base-url`` with a path), links derived from ``Host`` and the scheme when no base URL
is set, the other faces mounted on the v1 listener, and the log lines and
answers of failures — a problem document every time, never a traceback.

Synchronous, through in-memory gateways (`tests.test_v1_face.FaceTestCase`);
request lines no HTTP client library sends go through the production site
as raw bytes (`tests.security.harness.Harness.raw`).
"""

from __future__ import annotations

from treq.testing import StubTreq

from gateway.operations.metrics import Metrics
from gateway.process.testing import build_test_gateway
from gateway.v1.face import V1Face
from tests.security.harness import Harness, assert_v1_problem
from tests.support.logs import LogLines
from tests.support.v1_client import Reply, _reply
from tests.test_operations_face import samples
from tests.test_v1_face import KEY, PROBLEM, FaceTestCase

#: The log namespace of the face's own events (twisted's Logger, named
#: after the class it is an attribute of).
FACE_LOG = "gateway.v1.face.V1Face"


async def _reply_of(response_deferred) -> Reply:
    return await _reply(await response_deferred)


class EveryAnswerTests(FaceTestCase):
    """
    Headers every v1 answer carries, successes and problems alike.
    """

    def test_answers_are_not_cached(self):
        """
        Every answer says ``Cache-Control: public, max-age=0, no-cache``
        (Boulder's), so no proxy hands one client's nonce to another.
        """
        for reply in (self.get("/directory"), self.get("/acme/no-such-thing"),
                      self.get("/directory", method="HEAD")):
            self.assertEqual(reply.header("cache-control"), "public, max-age=0, no-cache")

    def test_problem_details_are_exact(self):
        """
        The details of the face's own refusals, as a client shows them.
        """
        problem = self.assertProblem(self.get("/acme/no-such-thing"), 404, "malformed")
        self.assertEqual(problem["detail"], "Not found")


class RouteTests(FaceTestCase):
    """
    Which request targets reach which endpoint.
    """

    def test_a_query_string_is_not_part_of_the_path(self):
        """
        ``/directory?x=1`` is the directory, and so is ``/directory?x=1?y``
        (the query starts at the first ``?``).
        """
        for path in ("/directory?x=1", "/directory?x=1?y"):
            reply = self.get(path)
            self.assertEqual(reply.status, 200, (path, reply.body))
            self.assertEqual(reply.json()["new-reg"], self.url("/acme/new-reg"))

    def test_segments_below_what_does_not_exist(self):
        """
        Segments below a name the tree does not have, or below an id that is
        no id, are a 404 like the name itself.
        """
        for path in ("/no/such/path", "/acme/no-such-thing/1", "/acme/authz/bad!id/more",
                     "/acme/challenge/bad!id/1"):
            self.assertProblem(self.get(path), 404, "malformed", "Not found")

    def test_trailing_slash_only_where_boulder_took_one(self):
        """
        ``/directory/`` (and ``/``) is the directory; a trailing slash
        anywhere else is a 404.
        """
        for path in ("/directory/", "/"):
            reply = self.get(path)
            self.assertEqual(reply.status, 200, (path, reply.body))
            self.assertIn("new-authz", reply.json())
        self.assertProblem(self.get("/terms/"), 404, "malformed", "Not found")
        self.assertProblem(self.post_raw("/acme/new-reg/", b"{}"), 404, "malformed", "Not found")

    def test_head_where_get_is_answered(self):
        """
        HEAD is answered wherever GET is, with the GET's status and headers
        and no body (an authorization answers GET and POST).
        """
        self.register()
        authz_url = self.new_authz().header("location")
        got = self.resolve(self.client().get(authz_url))
        head = self.resolve(self.client().get(authz_url, method="HEAD"))
        self.assertEqual((head.status, head.body), (200, b""))
        self.assertEqual(head.header("content-type"), "application/json")
        self.assertEqual(head.header("content-length"), str(len(got.body)))
        self.assertEqual(head.links("next"), [self.url("/acme/new-cert")])

    def test_a_method_no_endpoint_answers(self):
        """
        A PUT to an endpoint that answers GET only is a 405 with ``Allow:
        GET`` (HEAD is implied, never listed).
        """
        reply = self.resolve(self.client().get(self.url("/acme/cert/1"), method="PUT"))
        self.assertProblem(reply, 405, "malformed", "Method not allowed")
        self.assertEqual(reply.header("allow"), "GET")


class BaseURLWithPathTests(FaceTestCase):
    """
    ``--base-url https://host/prefix``: links carry the prefix, requests
    are answered with or without it (a proxy may strip it first).
    """

    def setUp(self):
        self.gateway = build_test_gateway(self.keys, base_url="https://gateway.test/v1gw/")
        self.ca = self.gateway.ca
        self.base = "https://gateway.test"
        self.clients = {}

    def test_links_and_paths_under_the_prefix(self):
        reply = self.get("/v1gw/directory")
        self.assertEqual(reply.status, 200, reply.body)
        self.assertEqual(reply.json()["new-reg"], "https://gateway.test/v1gw/acme/new-reg")
        reply = self.post("/v1gw/acme/new-reg", {"resource": "new-reg"})
        self.assertEqual(reply.status, 201, reply.body)
        self.assertEqual(reply.header("location"), "https://gateway.test/v1gw/acme/reg/1")

    def test_a_proxy_that_strips_the_prefix(self):
        reply = self.get("/directory")
        self.assertEqual(reply.status, 200, reply.body)
        self.assertEqual(reply.json()["new-authz"], "https://gateway.test/v1gw/acme/new-authz")

    def test_a_longer_first_segment_is_not_the_prefix(self):
        """
        ``/v1gwx/directory`` does not start with the prefix ``/v1gw``: 404.
        """
        self.assertProblem(self.get("/v1gwx/directory"), 404, "malformed", "Not found")


class LinksFromHostTests(FaceTestCase):
    """
    Without ``--base-url`` links come from the request: its scheme and its
    ``Host`` (a name or an IP literal, with a port or not); any other Host
    is a 400.
    """

    def setUp(self):
        super().setUp()
        gateway = self.gateway
        self.face = V1Face(gateway.face.tree, gateway.nonces, gateway.clock, base_url=None,
                           max_body=gateway.face.max_body)
        self.http = StubTreq(self.face)

    def directory(self, url: str) -> Reply:
        async def send():
            return await _reply(await self.http.get(url))

        return self.resolve(send())

    def test_scheme_and_host(self):
        for base in ("http://gateway.test", "https://gateway.test", "http://gateway.test:4000",
                     "http://127.0.0.1:4000"):
            reply = self.directory(base + "/directory")
            self.assertEqual(reply.status, 200, (base, reply.body))
            self.assertEqual(reply.json()["new-reg"], base + "/acme/new-reg")

    def test_an_ipv6_literal(self):
        exchange = Harness(self.gateway).raw(
            b"GET /directory HTTP/1.1\r\nHost: [::1]:4443\r\n\r\n", face=self.face)
        self.assertEqual(exchange.reply.status, 200, exchange.reply.body)
        self.assertEqual(exchange.reply.json()["new-reg"], "http://[::1]:4443/acme/new-reg")

    def test_a_host_that_is_no_host(self):
        harness = Harness(self.gateway)
        for host in (b"gateway.test:123456", b"gateway.test/x", b"[gateway.test]", b"g\xe4teway.test"):
            exchange = harness.raw(b"GET /directory HTTP/1.1\r\nHost: " + host + b"\r\n\r\n", face=self.face)
            problem = assert_v1_problem(exchange.reply, 400, "malformed")
            self.assertEqual(problem["detail"], "Invalid Host header", host)


class BaseURLSlashesTests(FaceTestCase):

    def test_only_trailing_slashes_are_left_out(self):
        gateway = build_test_gateway(self.keys, base_url="https://gateway.test/ACME-X//")
        reply = self.resolve(_reply_of(gateway.client.get("https://gateway.test/ACME-X/directory")))
        self.assertEqual(reply.status, 200, reply.body)
        self.assertEqual(reply.json()["new-reg"], "https://gateway.test/ACME-X/acme/new-reg")


class ObservedTests(FaceTestCase):
    """
    A gateway wired as ``serve`` wires it logs, counts and records every
    answer (`gateway.operations.observe`).
    """

    def setUp(self):
        self.metrics = Metrics(process=False)
        self.gateway = build_test_gateway(self.keys, metrics=self.metrics)
        self.ca = self.gateway.ca
        self.base = self.gateway.base_url
        self.clients = {}

    def test_access_log_line(self):
        with LogLines(FACE_LOG) as logs:
            self.get("/directory")
            self.get("/acme/new-reg", method="HEAD")
        self.assertIn("GET /directory -> 200", logs.lines)
        self.assertTrue(any(line.startswith("HEAD /acme/new-reg -> 405") for line in logs.lines), logs.lines)

    def test_answers_are_counted_and_clients_recorded(self):
        self.get("/directory")
        self.register()
        found = samples(self.metrics)
        self.assertEqual(found[("acme_gateway_v1_requests_total",
                                (("endpoint", "directory"), ("status", "200")))], 1)
        self.assertEqual(found[("acme_gateway_v1_requests_total",
                                (("endpoint", "new-reg"), ("status", "201")))], 1)
        self.gateway.advance(1.0)  # the recorder writes its batch every second
        (client,) = self.successResultOf(self.gateway.store.list_clients())
        self.assertEqual(client.thumbprints, (KEY.thumbprint,))
        self.assertGreaterEqual(client.successes, 1)


class MountedFaceTests(FaceTestCase):
    """
    The v2 face shares the v1 listener: its paths get its answers.
    """

    def test_v2_paths_reach_the_v2_face(self):
        reply = self.get("/v2/directory")
        self.assertEqual(reply.status, 200, reply.body)
        self.assertEqual(reply.json()["newAccount"], self.url("/v2/new-acct"))


class BrokenMetrics:
    def v1_response(self, endpoint: str, status: int) -> None:
        raise RuntimeError("metrics exploded")


class FailureTests(FaceTestCase):
    """
    A bug is logged with its traceback and answered with a v1
    ``serverInternal`` problem; an upstream refusal is logged as such.
    """

    def test_a_bug_in_an_endpoint(self):
        class BrokenStore:
            def __getattr__(self, name):
                raise RuntimeError("secret internals")

        self.gateway = build_test_gateway(self.keys, store=BrokenStore())
        with LogLines(FACE_LOG) as logs:
            reply = self.post("/acme/new-reg", {"resource": "new-reg"})
        problem = self.assertProblem(reply, 500, "serverInternal")
        self.assertEqual(problem["detail"], "The gateway failed to serve this request")
        failures = [e for e in logs.events if e.get("log_failure") is not None
                    and e.get("log_namespace") == FACE_LOG]
        self.assertEqual(len(failures), 1, logs.lines)
        self.assertIn("error serving POST /acme/new-reg", logs.lines)
        self.assertIsInstance(failures[0]["log_failure"].value, RuntimeError)
        self.flushLoggedErrors(RuntimeError)

    def test_a_bug_after_the_answer_was_made(self):
        """
        Even a failure outside the endpoint (here the metrics) is a v1
        ``serverInternal`` problem document, with a nonce.
        """
        self.gateway.face.metrics = BrokenMetrics()
        reply = self.get("/directory")
        problem = self.assertProblem(reply, 500, "serverInternal")
        self.assertEqual(problem["detail"], "Internal error")
        self.assertEqual(reply.header("content-type"), PROBLEM)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_an_upstream_refusal_is_logged_with_its_reason(self):
        self.register()
        self.ca.fail_next("/new-order", 500, {"type": "serverInternal", "detail": "database on fire"})
        with LogLines(FACE_LOG) as logs:
            reply = self.new_authz()
        self.assertProblem(reply, 500, "serverInternal", "database on fire")
        refused = [line for line in logs.lines if line.startswith("upstream refused or failed: ")]
        self.assertEqual(len(refused), 1, logs.lines)
        self.assertIn("database on fire", refused[0])

    def test_an_unusable_upstream_is_logged_with_its_reason(self):
        self.register()
        self.ca.fail_next("/new-order", 500, b"<html>oops</html>")
        with LogLines(FACE_LOG) as logs:
            reply = self.new_authz()
        self.assertProblem(reply, 500, "serverInternal", "upstream CA failed")
        refused = [line for line in logs.lines if line.startswith("upstream refused or failed: ")]
        self.assertEqual(len(refused), 1, logs.lines)
        self.assertIn("500", refused[0])

