"""
What both faces show of the upstream CA's directory ``meta``
(`gateway.translate.directory.upstream_meta`): its website, CAA identities
and terms of service in the v1 and v2 directories, the v1 ``/terms``
redirect to the CA's terms, and a CA directory that cannot be read.
Through whole in-memory gateways over a FakeCA whose ``meta`` says more.
"""

from __future__ import annotations

from twisted.internet import defer
from twisted.trial.unittest import SynchronousTestCase

from gateway.process.testing import FakeCA, build_test_gateway
from tests.support.v1_client import _reply
from tests.test_v1_face import KEY

WEBSITE = "https://ca.test/about"
CAA = ["ca.test", "other-ca.test"]
TERMS = "https://ca.test/terms/v7.pdf"


class MetaCA(FakeCA):
    """
    A FakeCA whose directory ``meta`` also names a website and CAA
    identities.
    """

    def _directory(self):
        directory = super()._directory()
        directory["meta"].update({"website": WEBSITE, "caaIdentities": list(CAA)})
        return directory


class UpstreamMetaTests(SynchronousTestCase):

    def build(self, ca):
        self.gateway = build_test_gateway([KEY], ca=ca)

    def get(self, path):
        async def send():
            return await _reply(await self.gateway.client.get(self.gateway.url(path),
                                                              allow_redirects=False))

        done = []
        defer.Deferred.fromCoroutine(send()).addBoth(done.append)
        self.assertTrue(done, "the request did not complete")
        if isinstance(done[0], Exception):
            raise done[0]
        return done[0]

    def test_the_v2_directory_shows_the_cas_meta(self):
        self.build(MetaCA(terms_of_service=TERMS))
        reply = self.get("/v2/directory")
        self.assertEqual(reply.status, 200, reply.body)
        self.assertEqual(reply.json()["meta"], {
            "termsOfService": TERMS, "website": WEBSITE, "caaIdentities": CAA})

    def test_the_v1_directory_shows_the_cas_website_and_caa_identities(self):
        self.build(MetaCA(terms_of_service=TERMS))
        reply = self.get("/directory")
        self.assertEqual(reply.status, 200, reply.body)
        self.assertEqual(reply.json()["meta"], {
            "terms-of-service": self.gateway.url("/terms"), "website": WEBSITE,
            "caaIdentities": CAA})

    def test_v1_terms_redirect_to_the_cas_terms(self):
        self.build(MetaCA(terms_of_service=TERMS))
        reply = self.get("/terms")
        self.assertEqual(reply.status, 302, reply.body)
        self.assertEqual(reply.header("location"), TERMS)

    def test_v1_terms_of_a_ca_without_terms_are_not_found(self):
        self.build(FakeCA(terms_of_service=None))
        reply = self.get("/terms")
        self.assertEqual(reply.status, 404, reply.body)
        self.assertEqual(reply.json()["type"], "urn:acme:error:malformed")
        self.assertEqual(reply.json()["detail"], "The upstream CA publishes no terms of service")
        self.assertEqual(self.get("/v2/directory").json()["meta"], {})

    def test_the_directory_is_read_once(self):
        """
        The upstream directory is fetched once and then cached: the v1
        and v2 directories and terms cost the CA one directory read.
        """
        self.build(MetaCA(terms_of_service=TERMS))
        before = self.gateway.ca.counts["directory"]
        for path in ("/directory", "/v2/directory", "/terms", "/directory"):
            self.get(path)
        self.assertLessEqual(self.gateway.ca.counts["directory"] - before, 1)

    def test_a_directory_the_ca_refuses_is_a_v2_problem(self):
        """
        The CA refuses its directory (a problem document, never retried):
        the v2 directory is a ``serverInternal`` problem, not a crash.
        """
        self.build(MetaCA(terms_of_service=TERMS))
        self.gateway.upstream.read_retries = 0
        self.gateway.ca.fail_next("/directory", 502, b"bad gateway")
        reply = self.get("/v2/directory")
        self.assertEqual(reply.status, 500, reply.body)
        self.assertEqual(reply.header("content-type"), "application/problem+json")
        self.assertEqual(reply.json()["type"], "urn:ietf:params:acme:error:serverInternal")
