"""
The gateway's CPU per upstream request, alone: ``UpstreamClient.post_as_get``
(an ES256 JWS with ``kid``, the exchange, the response read) against a CA
stand-in in another process that answers every request at once, measured as
this process's CPU time (``time.process_time``), which other processes'
load on the machine changes far less than it changes wall time.

    python bench/upstream_cpu.py [--requests N] [--rounds R] [--gateway-src DIR]

``--gateway-src`` imports the ``gateway`` package from DIR (a checkout of an
earlier commit), for a before/after pair.  Prints one line per round and
the median, in microseconds per request.  The stand-in speaks plain HTTP on
127.0.0.1: TLS costs both sides of a pair the same and is left out.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

SERVER = r"""
import json, sys
from twisted.internet import reactor
from twisted.web import resource, server

class CA(resource.Resource):
    isLeaf = True
    def render(self, request):
        request.setHeader(b"Replay-Nonce", b"bm9uY2Utbm9uY2Utbm9uY2U")
        request.setHeader(b"Content-Type", b"application/json")
        if request.path == b"/dir":
            base = "http://127.0.0.1:%d" % port.getHost().port
            return json.dumps({"newNonce": base + "/nonce", "newAccount": base + "/acct",
                               "newOrder": base + "/order"}).encode()
        if request.method == b"HEAD":
            return b""
        return json.dumps({"status": "pending", "identifier": {"type": "dns", "value": "a.test"},
                           "challenges": []}).encode()

port = reactor.listenTCP(0, server.Site(CA()), interface="127.0.0.1")
print(port.getHost().port, flush=True)
reactor.run()
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--gateway-src", default=None)
    args = parser.parse_args()
    if args.gateway_src:
        sys.path.insert(0, os.path.abspath(args.gateway_src))

    from cryptography.hazmat.primitives.asymmetric import ec
    from twisted.internet import defer, task

    import gateway
    from gateway.keys.jose import AccountKey
    from gateway.upstream.client import UpstreamClient
    from gateway.upstream.messages import UpstreamAccount

    ca = subprocess.Popen([sys.executable, "-c", SERVER], stdout=subprocess.PIPE, text=True)
    try:
        port = int(ca.stdout.readline())
        base = f"http://127.0.0.1:{port}"

        async def run(reactor) -> None:
            client = UpstreamClient.create(reactor, base + "/dir")
            key = AccountKey.from_private_key(ec.generate_private_key(ec.SECP256R1()))
            account = UpstreamAccount(key=key, url=base + "/acct/1")
            url = base + "/authz/hKn0xd6CdP0Hjiu_9pJB-8Df_Y-StjjwlCNRI-M5IcY"
            for _ in range(200):  # warm-up: the directory, a kept connection
                await client.post_as_get(account, url)
            figures = []
            for _ in range(args.rounds):
                started = time.process_time()
                for _ in range(args.requests):
                    await client.post_as_get(account, url)
                figures.append((time.process_time() - started) / args.requests * 1e6)
                print(f"{figures[-1]:.1f} us CPU per upstream request", flush=True)
            print(f"median {statistics.median(figures):.1f} us ({os.path.dirname(gateway.__file__)})")
            await client._http._agent._pool.closeCachedConnections()

        task.react(lambda reactor: defer.ensureDeferred(run(reactor)))
    finally:
        ca.terminate()
        ca.wait()


if __name__ == "__main__":
    main()
