"""
What every v1 request costs the gateway's HTTP front, counted (never
timed): the work a profile of ``HEAD /directory`` at 64 connections showed
and that was removed, each test counting that it stays removed while the
answers stay exactly what they were.  (The listener's timers are counted
in ``tests/security/test_listener_limits.py``.)
"""

from __future__ import annotations

from twisted.internet import defer
from twisted.trial.unittest import SynchronousTestCase

from gateway.process.testing import FakeCA, build_test_gateway
from gateway.v1 import messages, resource
from tests.support.v1_client import _reply
from tests.test_v1_face import KEY


class WebsiteCA(FakeCA):
    """
    A FakeCA whose directory ``meta`` names a website, which can change.
    """

    website = "https://ca.test/about"

    def _directory(self):
        directory = super()._directory()
        directory["meta"]["website"] = self.website
        return directory


class DirectoryBuiltOncePerBase(SynchronousTestCase):
    """
    The directory document is built and encoded once per base URL, not per
    request (`gateway.v1.resource.Directory`).
    """

    def setUp(self):
        self.builds = []
        build = messages.directory

        def counting(urls, meta):
            self.builds.append(urls.base)
            return build(urls, meta)

        self.patch(messages, "directory", counting)

    def request(self, gateway, url, method="GET"):
        return self.successResultOf(defer.Deferred.fromCoroutine(
            self._request(gateway, url, method)))

    @staticmethod
    async def _request(gateway, url, method):
        return await _reply(await gateway.client.request(method, url))

    def test_one_build_for_many_requests(self):
        """
        Twenty GETs and HEADs of the directory (both paths) build it once;
        every GET gets the same document, every answer its own nonce.
        """
        gateway = build_test_gateway([KEY])
        replies = [self.request(gateway, gateway.base_url + path, method)
                   for _ in range(5) for path in ("/directory", "/directory/")
                   for method in ("GET", "HEAD")]
        self.assertEqual(self.builds, [gateway.base_url])
        self.assertEqual({reply.status for reply in replies}, {200})
        bodies = {reply.body for reply in replies if reply.body}
        self.assertEqual(len(bodies), 1)
        self.assertEqual(replies[0].json()["new-reg"], gateway.base_url + "/acme/new-reg")
        self.assertEqual({reply.body for reply in replies[1::2]}, {b""})  # the HEADs
        nonces = {reply.header("replay-nonce") for reply in replies}
        self.assertEqual(len(nonces), len(replies))

    def test_rebuilt_when_the_upstream_directory_is_fetched_again(self):
        """
        A new upstream directory (its ``meta``) is shown at once.
        """
        ca = WebsiteCA()
        gateway = build_test_gateway([KEY], ca=ca)
        url = gateway.base_url + "/directory"
        self.assertEqual(self.request(gateway, url).json()["meta"]["website"], ca.website)
        ca.website = "https://ca.test/about-v2"
        self.successResultOf(defer.Deferred.fromCoroutine(
            gateway.gateway.context.upstream.directory(refresh=True)))
        for _ in range(3):
            self.assertEqual(self.request(gateway, url).json()["meta"]["website"],
                             "https://ca.test/about-v2")
        self.assertEqual(len(self.builds), 2)

    def test_one_build_per_host_and_a_bounded_number_kept(self):
        """
        Without ``--base-url`` each ``Host`` gets its own links, built once;
        a client cycling through hosts never makes the gateway keep more
        than `DIRECTORY_ANSWERS_KEPT` answers.
        """
        gateway = build_test_gateway([KEY], base_url="")
        for _ in range(3):
            for host in ("a.test", "b.test:8443"):
                reply = self.request(gateway, f"http://{host}/directory")
                self.assertEqual(reply.json()["new-cert"], f"http://{host}/acme/new-cert")
        self.assertEqual(self.builds, ["http://a.test", "http://b.test:8443"])
        kept = resource.DIRECTORY_ANSWERS_KEPT
        for index in range(kept * 3):
            self.request(gateway, f"http://h{index}.test/directory")
        directory = gateway.gateway.face.tree.children[b"directory"]
        self.assertEqual(len(directory._answers), kept)
        self.assertEqual(len(self.builds), 2 + kept * 3)
