"""
The v1 face's operational hooks, through whole in-memory gateways
(`gateway.process.testing.build_test_gateway`): request ids on v1 and upstream log
events, the metrics each answer moves, and the migration report's record
of each client.  Synchronous: ``StubTreq`` answers at once.
"""

from __future__ import annotations

import io
import json

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import defer
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from gateway.keys.jose import AccountKey, b64url
from gateway.operations.logs import observer_for
from gateway.operations.metrics import Metrics
from gateway.operations.report import ClientRecorder
from gateway.operations.scope import current
from gateway.process.testing import build_test_gateway
from tests.support.v1_client import V1TestClient

KEY = AccountKey.from_private_key(ec.generate_private_key(ec.SECP256R1()))
STRANGER = AccountKey.from_private_key(ec.generate_private_key(ec.SECP256R1()))
USER_AGENT = "CertbotACMEClient/1.32.0 (certbot; test) Authenticator/standalone Py/3.11"


def make_csr(names) -> bytes:
    """
    A DER CSR for ``names`` (CN = the first), with a fresh P-256 key.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.DER)


class _WithHeaders:
    """
    A ``StubTreq`` that sends a User-Agent (and any other fixed headers), as
    a real legacy client does.
    """

    def __init__(self, http, headers):
        self._http = http
        self._headers = headers

    def request(self, method, url, **kwargs):
        return self._http.request(method, url, headers=dict(self._headers), **kwargs)

    def post(self, url, data=None, **kwargs):
        return self._http.post(url, data=data, headers=dict(self._headers), **kwargs)


def samples(metrics: Metrics) -> dict:
    """
    Every sample of ``metrics`` in the text exposition, keyed by name and
    sorted labels.
    """
    body, _ = metrics.render(None)
    found = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


class OperationsTestCase(SynchronousTestCase):
    """
    A gateway holding KEY, with metrics, a migration report recorder and a
    JSON log observer.
    """

    def setUp(self):
        self.gateway = build_test_gateway([KEY])
        self.metrics = Metrics(process=False)
        self.gateway.face.metrics = self.metrics
        self.gateway.upstream.metrics = self.metrics
        self.gateway.face.recorder = ClientRecorder(self.gateway.store)
        self.log_lines = io.StringIO()
        observer = observer_for("json", "debug", self.log_lines)
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)

    def client(self, key=KEY, headers=None) -> V1TestClient:
        http = _WithHeaders(self.gateway.client, headers or {"User-Agent": USER_AGENT})
        return V1TestClient(self.gateway.base_url, key, http=http)

    def resolve(self, coroutine):
        return self.successResultOf(defer.Deferred.fromCoroutine(coroutine))

    def events(self) -> list:
        return [json.loads(line) for line in self.log_lines.getvalue().splitlines()]

    def issue(self, client: V1TestClient, name: str = "ops.example.test"):
        directory = self.resolve(client.directory())
        reply = self.resolve(client.post(directory["new-authz"], {
            "resource": "new-authz", "identifier": {"type": "dns", "value": name}}))
        self.assertEqual(reply.status, 201, reply.body)
        challenge = next(c for c in reply.json()["challenges"] if c["type"] == "http-01")
        answered = self.resolve(client.post(challenge["uri"], {
            "resource": "challenge", "type": "http-01",
            "keyAuthorization": KEY.key_authorization(challenge["token"])}))
        self.assertEqual(answered.status, 202, answered.body)
        csr = make_csr([name])
        reply = self.resolve(client.post(directory["new-cert"], {"resource": "new-cert", "csr": b64url(csr)}))
        self.assertEqual(reply.status, 201, reply.body)
        return directory, reply


class RequestIdTests(OperationsTestCase):
    """
    Every v1 request has an id, answered in ``X-Request-Id`` and carried by
    its own log events and those of the upstream calls it caused.
    """

    def test_v1_and_upstream_events_share_the_request_id(self):
        """
        The first directory GET makes an upstream directory GET; both log
        events carry the id the response announced, as named JSON fields.
        """
        reply = self.resolve(self.client().get(self.gateway.url("/directory")))
        request_id = reply.header("x-request-id")
        self.assertRegex(request_id, r"^[0-9a-f]{16}$")
        events = [e for e in self.events() if e.get("request_id") == request_id]
        v1 = [e for e in events if e.get("endpoint") == "directory"]
        upstream = [e for e in events if e.get("kind") == "directory"]
        self.assertEqual(len(v1), 1, events)
        self.assertEqual(v1[0]["status"], 200)
        self.assertEqual(v1[0]["user_agent"], USER_AGENT)
        self.assertEqual(len(upstream), 1, events)
        self.assertEqual(upstream[0]["url"], self.gateway.ca.directory_url)
        self.assertIsNone(current.get(), "the request scope must not leak into the caller's context")

    def test_every_upstream_call_of_new_cert_carries_its_id(self):
        """
        new-cert causes several upstream calls (finalize, order polls, the
        certificate download); each log event names the new-cert's id, and
        no other request's.
        """
        _, reply = self.issue(self.client())
        request_id = reply.header("x-request-id")
        kinds = {e["kind"] for e in self.events() if e.get("request_id") == request_id and "kind" in e}
        self.assertIn("finalize", kinds)
        self.assertIn("certificate", kinds)
        ids = {e.get("request_id") for e in self.events() if e.get("kind") == "finalize"}
        self.assertEqual(ids, {request_id})

    def test_a_proxy_request_id_is_adopted_when_sane(self):
        """
        A front proxy's ``X-Request-Id`` follows the request; one that is not
        a plain token is replaced by the gateway's own.
        """
        client = self.client(headers={"User-Agent": USER_AGENT, "X-Request-Id": "edge-4f2a9c1d"})
        reply = self.resolve(client.get(self.gateway.url("/directory")))
        self.assertEqual(reply.header("x-request-id"), "edge-4f2a9c1d")
        client = self.client(headers={"User-Agent": USER_AGENT, "X-Request-Id": "bad id\u00e9"})
        reply = self.resolve(client.get(self.gateway.url("/directory")))
        self.assertRegex(reply.header("x-request-id"), r"^[0-9a-f]{16}$")

    def test_logs_carry_thumbprints_never_key_material(self):
        """
        A whole issuance logs the signer's thumbprint, and no private (or
        even public) key member appears in any event.
        """
        self.issue(self.client())
        text = self.log_lines.getvalue()
        self.assertIn(KEY.thumbprint, text)
        private = KEY.private_key.private_numbers().private_value
        jwk_d = b64url(private.to_bytes(32, "big"))
        self.assertNotIn(jwk_d, text)
        self.assertNotIn("PRIVATE KEY", text)
        self.assertNotIn(KEY.public_jwk_json["x"], text)


class MetricsTests(OperationsTestCase):
    """
    What the face and the upstream client count.
    """

    def test_issuance_is_counted(self):
        """
        An issuance counts its v1 requests by endpoint and status, one upstream
        order created, one certificate issued, and upstream requests by kind
        with latencies.
        """
        self.issue(self.client())
        found = samples(self.metrics)
        self.assertEqual(found[("acme_gateway_v1_requests_total",
                                (("endpoint", "new-cert"), ("status", "201")))], 1)
        self.assertEqual(found[("acme_gateway_v1_requests_total",
                                (("endpoint", "new-authz"), ("status", "201")))], 1)
        self.assertEqual(found[("acme_gateway_certificates_issued_total", ())], 1)
        self.assertEqual(found[("acme_gateway_orders_created_total", ())], 1)
        self.assertEqual(found[("acme_gateway_upstream_requests_total",
                                (("kind", "newOrder"), ("status", "201")))], 1)
        self.assertEqual(found[("acme_gateway_upstream_request_duration_seconds_count",
                                (("kind", "finalize"),))], 1)
        self.assertEqual(found[("acme_gateway_certificates_revoked_total", ())], 0)

    def test_revocation_is_counted(self):
        """
        A revoke-cert answered 200 counts a revoked certificate.
        """
        client = self.client()
        directory, reply = self.issue(client)
        revoked = self.resolve(client.post(directory["revoke-cert"], {
            "resource": "revoke-cert", "certificate": b64url(reply.body)}))
        self.assertEqual(revoked.status, 200, revoked.body)
        self.assertEqual(samples(self.metrics)[("acme_gateway_certificates_revoked_total", ())], 1)

    def test_unknown_paths_share_one_label(self):
        """
        Paths the face does not serve are counted as endpoint ``unknown``, so
        a scanner cannot grow the label set.
        """
        for path in ("/wp-login.php", "/a/b/c", "/acme/nope"):
            self.resolve(self.client().get(self.gateway.url(path)))
        found = samples(self.metrics)
        self.assertEqual(found[("acme_gateway_v1_requests_total",
                                (("endpoint", "unknown"), ("status", "404")))], 3)


class FilledFamiliesTests(OperationsTestCase):
    """
    The families the README once called "empty until a later feature" are
    filled: revalidations by outcome, and the budget left per account.
    """

    def test_revalidations_are_counted(self):
        """
        A two-name new-cert whose order the CA did not give the client's
        authorizations (no reuse) is revalidated by the gateway's own
        HTTP-01 responder: two revalidations, both valid.
        """
        from gateway.validation.http01 import HTTP01Responder
        from gateway.translate.revalidation import Validators

        self.gateway = build_test_gateway([KEY], metrics=self.metrics,
                                          validators=Validators({"http-01": HTTP01Responder()}))
        self.gateway.ca.reuse_authorizations = False
        client = self.client()
        names = ["one.example.test", "two.example.test"]
        directory = self.resolve(client.directory())
        for name in names:
            reply = self.resolve(client.post(directory["new-authz"], {
                "resource": "new-authz", "identifier": {"type": "dns", "value": name}}))
            challenge = next(c for c in reply.json()["challenges"] if c["type"] == "http-01")
            self.resolve(client.post(challenge["uri"], {
                "resource": "challenge", "type": "http-01",
                "keyAuthorization": KEY.key_authorization(challenge["token"])}))
        reply = self.resolve(client.post(directory["new-cert"], {
            "resource": "new-cert", "csr": b64url(make_csr(names))}))
        self.assertEqual(reply.status, 201, reply.body)
        found = samples(self.metrics)
        self.assertEqual(found[("acme_gateway_revalidations_total", (("outcome", "valid"),))], 2)

    def test_budget_left_is_a_gauge_per_account(self):
        """
        After one issuance, a scrape of the admin listener's ``/metrics``
        shows the orders the account may still create: the limit less one.
        """
        from gateway.operations.admin import Admin, Readiness

        self.issue(self.client())
        context = self.gateway.context
        readiness = Readiness(self.gateway.upstream, self.gateway.store, self.gateway.clock,
                              metrics=self.metrics)
        admin = Admin(self.gateway.store, self.gateway.clock, self.metrics, readiness,
                      budget=context.budget)

        class Scrape:
            def getHeader(self, name):
                return None

        self.resolve(admin.metrics_page(Scrape()))
        limit = context.budget.limits.orders
        self.assertEqual(samples(self.metrics)[("acme_gateway_rate_limit_budget_remaining",
                                                (("account", KEY.thumbprint),))], limit - 1)


class ReportRecordingTests(OperationsTestCase):
    """
    The migration report's record of each client.
    """

    def test_issuing_client_is_recorded(self):
        """
        A client that issued is recorded with its User-Agent, address,
        account thumbprint, the name it asked for, and its counts.
        """
        self.issue(self.client())
        (client,) = self.successResultOf(self.gateway.store.list_clients())
        self.assertEqual(client.user_agent, USER_AGENT)
        self.assertEqual(client.thumbprints, (KEY.thumbprint,))
        self.assertEqual(client.names, ("ops.example.test",))
        self.assertEqual(client.certificates, 1)
        self.assertEqual(client.failures, 0)
        # Its signed requests and the unsigned ones after the first (the
        # directory and the nonce before it make no row: nothing yet says
        # who sent them).
        self.assertGreaterEqual(client.successes, 3)
        self.assertIsNone(client.last_failure_reason)

    def test_new_cert_names_come_from_its_csr(self):
        """
        A new-cert records the CSR's names (wildcard included), parsed once
        by the issuance flow — also when the request is then refused.
        """
        client = self.client()
        reply = self.resolve(client.post(self.gateway.url("/acme/new-cert"), {
            "resource": "new-cert",
            "csr": b64url(make_csr(["x.csr.example.test", "*.y.example.test"]))}))
        self.assertEqual(reply.status, 403)
        (recorded,) = self.successResultOf(self.gateway.store.list_clients())
        self.assertEqual(set(recorded.names), {"x.csr.example.test", "*.y.example.test"})

    def test_failure_is_recorded_with_its_reason(self):
        """
        A correctly signed request by a key the gateway lacks is recorded as
        a failure, with the endpoint, status and problem type.
        """
        client = self.client(STRANGER, headers={"User-Agent": "dehydrated/0.7.0 curl/7.88"})
        directory = self.resolve(client.directory())
        reply = self.resolve(client.post(directory["new-authz"], {
            "resource": "new-authz", "identifier": {"type": "dns", "value": "x.example.test"}}))
        self.assertEqual(reply.status, 403)
        (recorded,) = self.successResultOf(self.gateway.store.list_clients())
        self.assertEqual(recorded.user_agent, "dehydrated/0.7.0 curl/7.88")
        self.assertEqual(recorded.failures, 1)
        self.assertEqual(recorded.thumbprints, (STRANGER.thumbprint,))
        self.assertIn("new-authz 403 urn:acme:error:unauthorized", recorded.last_failure_reason)
        self.assertIn(STRANGER.thumbprint, recorded.last_failure_reason)
