"""
A loopback DNS server for the test stack, run as its own process.

Pebble resolves every name it validates through ``-dnsserver``; this server
answers every A query with 127.0.0.1 (so http-01 reaches a responder on
loopback), no AAAA (Pebble would otherwise dial ``[::1]``), and TXT records
that tests and hook scripts set over a tiny HTTP API compatible with
``pebble-challtestsrv``:

- ``POST /set-txt``   ``{"host": "_acme-challenge.example.test.", "value": "..."}``
  (appends: a base domain and its wildcard need two values on one name)
- ``POST /clear-txt`` ``{"host": "_acme-challenge.example.test."}``
- ``GET /records``    every TXT record, as JSON

It refuses to bind anything but loopback.  Usage::

    python -m tests.support.dnsserver --dns-port 0 --api-port 0 --ready-file F

With port 0 the chosen ports are written to the ready file as JSON.
"""

import argparse
import json
import os
import sys

from twisted.web import resource, server as webserver

from gateway.process.devstack import LoopbackZone, listen_dns


class TXTApi(resource.Resource):
    """
    The HTTP API that sets and clears TXT records.
    """

    isLeaf = True

    def __init__(self, zone):
        super().__init__()
        self.zone = zone

    def render_GET(self, request):
        request.setHeader(b"content-type", b"application/json")
        return json.dumps(self.zone.txt).encode()

    def render_POST(self, request):
        try:
            body = json.loads(request.content.read() or b"{}")
            host = str(body["host"])
        except (ValueError, KeyError, TypeError):
            request.setResponseCode(400)
            return b"bad request\n"
        if request.path == b"/set-txt":
            self.zone.set_txt(host, str(body.get("value")))
        elif request.path == b"/clear-txt":
            self.zone.clear_txt(host)
        else:
            request.setResponseCode(404)
            return b"not found\n"
        return b"ok\n"


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--interface", default="127.0.0.1")
    parser.add_argument("--dns-port", type=int, default=0)
    parser.add_argument("--api-port", type=int, default=0)
    parser.add_argument("--ready-file")
    args = parser.parse_args(argv)
    if not (args.interface.startswith("127.") or args.interface == "::1"):
        parser.error("loopback only")

    from twisted.internet import reactor

    zone = LoopbackZone()
    udp, _ = listen_dns(reactor, zone, args.dns_port, args.interface)
    dns_port = udp.getHost().port
    site = webserver.Site(TXTApi(zone))
    site.noisy = False
    api = reactor.listenTCP(args.api_port, site, interface=args.interface)
    info = {"dns_port": dns_port, "api_port": api.getHost().port}
    if args.ready_file:
        tmp = args.ready_file + ".tmp"
        with open(tmp, "w") as f:
            json.dump(info, f)
        os.replace(tmp, args.ready_file)
    else:
        print(json.dumps(info), flush=True)
    reactor.run()


if __name__ == "__main__":
    sys.exit(main())
