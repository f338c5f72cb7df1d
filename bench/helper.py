"""
The benchmark's helper process (gateway venv, Twisted): three listeners on
127.0.0.1, all in one reactor.

- **Counting pass-through** (HTTPS): a TLS-terminating reverse proxy in front
  of Pebble.  The gateway and the native clients both reach Pebble through
  it, so the requests it counts are what the CA would see from each.  The
  client's ``Host`` header is forwarded unchanged, so every URL Pebble builds
  (directory, ``Location``, links) points back at the proxy, and the JWS
  ``url`` a client signs matches what Pebble reconstructs.
- **http-01 responder**: Pebble's ``httpPort``; serves
  ``/.well-known/acme-challenge/<token>`` from the files the clients write
  into a shared webroot.
- **Control** (plain HTTP): ``GET /counts`` returns the counters as JSON,
  ``GET /timeline`` the last requests passed through (kind, status,
  wall-clock start and end), to line up with the clients' steps.

Run by ``bench/run.py``; stopped by the PID it started.  Prints one JSON
line with the ports once everything listens.
"""

from __future__ import annotations

import argparse
import collections
import io
import json
import os
import re
import sys
import time

from twisted.internet import defer, endpoints, reactor, ssl
from twisted.web import client as web_client
from twisted.web import resource, server
from twisted.web.http_headers import Headers

HOP_BY_HOP = {
    b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization",
    b"te", b"trailers", b"transfer-encoding", b"upgrade", b"content-length",
}

#: Pebble's paths → the request kind counted.
KINDS = (
    (re.compile(r"^/dir$"), "directory"),
    (re.compile(r"^/nonce-plz$"), "newNonce"),
    (re.compile(r"^/sign-me-up$"), "newAccount"),
    (re.compile(r"^/order-plz$"), "newOrder"),
    (re.compile(r"^/authZ/"), "authorization"),
    (re.compile(r"^/chalZ/"), "challenge"),
    (re.compile(r"^/finalize-order/"), "finalize"),
    (re.compile(r"^/my-order/"), "order"),
    (re.compile(r"^/certZ/"), "certificate"),
    (re.compile(r"^/my-account/"), "account"),
    (re.compile(r"^/revoke-cert$"), "revokeCert"),
    (re.compile(r"^/rollover-account-key$"), "keyChange"),
)


def kind_of(path: str) -> str:
    for pattern, kind in KINDS:
        if pattern.match(path):
            return kind
    return "other"


#: Requests kept for ``/timeline``.
TIMELINE_KEPT = 50000


class Counts:
    def __init__(self):
        self.timeline = collections.deque(maxlen=TIMELINE_KEPT)  # [kind, status, start, end]
        self.requests = collections.Counter()  # kind -> requests
        self.statuses = collections.Counter()  # "kind status" -> responses
        self.orders_created = 0                # 201 answers to newOrder
        self.bad_nonce = 0

    def as_json(self) -> dict:
        return {
            "requests": dict(self.requests),
            "total": sum(self.requests.values()),
            "statuses": dict(self.statuses),
            "orders_created": self.orders_created,
            "bad_nonce": self.bad_nonce,
        }


class CountingProxy(resource.Resource):
    isLeaf = True

    def __init__(self, agent, upstream_base: str, counts: Counts):
        super().__init__()
        self.agent = agent
        self.upstream_base = upstream_base.rstrip("/")
        self.counts = counts

    def render(self, request):
        path = request.uri.split(b"?", 1)[0].decode("latin-1")
        kind = kind_of(path)
        self.counts.requests[kind] += 1
        started = time.time()
        headers = Headers()
        for name, values in request.requestHeaders.getAllRawHeaders():
            if name.lower() in HOP_BY_HOP:
                continue
            for value in values:
                headers.addRawHeader(name, value)
        body = request.content.read()
        producer = web_client.FileBodyProducer(io.BytesIO(body)) if body else None
        d = self.agent.request(request.method, (self.upstream_base + request.uri.decode("latin-1")).encode(),
                               headers, producer)
        d.addCallback(self._relay, request, kind, started)
        d.addErrback(self._fail, request)
        return server.NOT_DONE_YET

    def _relay(self, response, request, kind, started):
        self.counts.statuses[f"{kind} {response.code}"] += 1
        self.counts.timeline.append([kind, response.code, started, time.time()])
        if kind == "newOrder" and response.code == 201:
            self.counts.orders_created += 1
        request.setResponseCode(response.code)
        for name, values in response.headers.getAllRawHeaders():
            if name.lower() in HOP_BY_HOP:
                continue
            request.responseHeaders.setRawHeaders(name, values)
        d = web_client.readBody(response)

        def done(content):
            if response.code == 400 and b"badNonce" in content:
                self.counts.bad_nonce += 1
            if request.method != b"HEAD":
                request.write(content)
            request.finish()

        d.addCallback(done)
        d.addErrback(self._fail, request)
        return d

    def _fail(self, failure, request):
        self.counts.statuses["proxy-error"] += 1
        sys.stderr.write(f"proxy error: {failure.getErrorMessage()}\n")
        try:
            request.setResponseCode(502)
            request.finish()
        except Exception:
            pass


class WellKnown(resource.Resource):
    isLeaf = True
    PREFIX = b"/.well-known/acme-challenge/"

    def __init__(self, webroot: str):
        super().__init__()
        self.directory = os.path.join(webroot, ".well-known", "acme-challenge")
        self.served = 0
        self.missing = 0

    def render_GET(self, request):
        if request.path.startswith(self.PREFIX):
            token = request.path[len(self.PREFIX):].decode("ascii", "replace")
            if token and all(c.isalnum() or c in "-_" for c in token):
                try:
                    with open(os.path.join(self.directory, token), "rb") as f:
                        body = f.read()
                except OSError:
                    pass
                else:
                    self.served += 1
                    request.setHeader(b"content-type", b"text/plain")
                    return body
        self.missing += 1
        request.setResponseCode(404)
        return b"not found"


class Control(resource.Resource):
    isLeaf = True

    def __init__(self, counts: Counts, well_known: WellKnown):
        super().__init__()
        self.counts = counts
        self.well_known = well_known

    def render_GET(self, request):
        request.setHeader(b"content-type", b"application/json")
        if request.path == b"/timeline":
            return json.dumps(list(self.counts.timeline)).encode()
        body = self.counts.as_json()
        body["http01_served"] = self.well_known.served
        body["http01_missing"] = self.well_known.missing
        return json.dumps(body).encode()


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--upstream", required=True, help="Pebble base URL, https://localhost:PORT")
    parser.add_argument("--upstream-ca", required=True)
    parser.add_argument("--tls-cert", required=True)
    parser.add_argument("--tls-key", required=True)
    parser.add_argument("--proxy-port", type=int, default=0)
    parser.add_argument("--http01-port", type=int, required=True)
    parser.add_argument("--webroot", required=True)
    args = parser.parse_args(argv)

    from gateway.upstream.client import trust_root

    counts = Counts()
    pool = web_client.HTTPConnectionPool(reactor, persistent=True)
    pool.maxPersistentPerHost = 128
    pool.retryAutomatically = False
    policy = web_client.BrowserLikePolicyForHTTPS(trustRoot=trust_root(args.upstream_ca))
    agent = web_client.Agent(reactor, contextFactory=policy, pool=pool)

    with open(args.tls_cert) as c, open(args.tls_key) as k:
        certificate = ssl.PrivateCertificate.loadPEM(c.read() + k.read())
    proxy_site = server.Site(CountingProxy(agent, args.upstream, counts))
    proxy_site.noisy = False
    proxy_site.log = lambda request: None
    proxy_port = reactor.listenSSL(args.proxy_port, proxy_site, certificate.options(), interface="127.0.0.1")

    well_known = WellKnown(args.webroot)
    files_site = server.Site(well_known)
    files_site.noisy = False
    files_site.log = lambda request: None
    reactor.listenTCP(args.http01_port, files_site, interface="127.0.0.1")

    control_site = server.Site(Control(counts, well_known))
    control_site.noisy = False
    control_site.log = lambda request: None
    control_port = reactor.listenTCP(0, control_site, interface="127.0.0.1")

    print(json.dumps({"proxy_port": proxy_port.getHost().port,
                      "control_port": control_port.getHost().port}), flush=True)
    reactor.run()


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    main()
