"""
The http-01 "port 80" of every name in the legacy-client matrix, as a child
process: ``GET …/.well-known/acme-challenge/<token>`` answers the file
``<token>`` of one challenge directory, whatever the host, and also in
absolute form (``GET http://name/.well-known/…``), so that a client that
checks its own file over HTTP before answering the challenge (acme-tiny
3.0, free_tls_certificates) can be pointed at this server with
``http_proxy`` instead of resolving the name.  Everything else is a 404.

    python -m tests.support.webroot_server --port PORT --directory DIR
"""

import argparse
import os
import re
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_CHALLENGE = re.compile(r"/\.well-known/acme-challenge/([A-Za-z0-9_-]+)$")


def make_handler(directory: str):
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            found = _CHALLENGE.search(self.path.split("?", 1)[0])
            path = os.path.join(directory, found.group(1)) if found else None
            if path is None or not os.path.isfile(path):
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            with open(path, "rb") as f:
                body = f.read()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format, *args):  # noqa: A002 - the stdlib's name
            print(f"{self.address_string()} {format % args}", flush=True)

    return Handler


def main():
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--directory", required=True, help="the acme-challenge directory")
    args = parser.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), make_handler(os.path.abspath(args.directory)))
    print(f"serving {args.directory} on 127.0.0.1:{args.port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
