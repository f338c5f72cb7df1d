#!/usr/bin/env python3
"""
A small round-robin HTTP load balancer on loopback, for the replica tests:
every request — not every connection — goes to the next backend in turn,
so one client's requests (a nonce fetched from one replica, signed and
posted to the next, its authorization polled at a third) are spread over
all of them.  A backend that refuses the connection is skipped (as a real
balancer's passive health check would, once a replica is killed); a request
whose backend fails after it was sent gets a 502, as from any balancer.

It runs as a process of its own (``python tests/support/balancer.py
--listen PORT --backend 127.0.0.1:P1 --backend …``), printing ``listening``
once it accepts; ``GET /_balancer`` answers its counts per backend as JSON
(never forwarded).  `Balancer` starts and stops one from a test.
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import List, Optional, Sequence

#: Request headers not forwarded (hop by hop).
_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer",
        "upgrade"}


def serve(port: int, backends: Sequence[str]) -> None:
    rotation = itertools.cycle(range(len(backends)))
    lock = threading.Lock()
    counts = {backend: 0 for backend in backends}
    refused = {backend: 0 for backend in backends}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format, *args):
            pass

        def _forward(self) -> None:
            if self.path == "/_balancer":
                body = json.dumps({"requests": counts, "refused": refused}).encode()
                self._reply(200, [("Content-Type", "application/json")], body)
                return
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
            for _ in range(len(backends)):
                with lock:
                    backend = backends[next(rotation)]
                host, _, backend_port = backend.rpartition(":")
                connection = http.client.HTTPConnection(host, int(backend_port), timeout=120)
                try:
                    connection.connect()
                except OSError:
                    with lock:
                        refused[backend] += 1
                    connection.close()
                    continue
                with lock:
                    counts[backend] += 1
                try:
                    connection.request(self.command, self.path, body=body, headers=headers)
                    response = connection.getresponse()
                    data = response.read()
                except (OSError, http.client.HTTPException) as error:
                    self._reply(502, [("Content-Type", "text/plain")],
                                f"backend {backend} failed: {error}\n".encode())
                    return
                finally:
                    connection.close()
                out = [(k, v) for k, v in response.getheaders()
                       if k.lower() not in _HOP and k.lower() != "content-length"]
                self._reply(response.status, out, data)
                return
            self._reply(502, [("Content-Type", "text/plain")], b"no backend answers\n")

        def _reply(self, status: int, headers, body: bytes) -> None:
            self.send_response_only(status)
            for key, value in headers:
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        do_GET = do_POST = do_HEAD = do_PUT = do_DELETE = _forward

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    print("listening", flush=True)
    server.serve_forever()


class Balancer:
    """
    A balancer process in front of ``backends`` (``host:port``), on
    ``port``; stopped by the PID it was started with.
    """

    def __init__(self, port: int, backends: Sequence[str], log_path: str) -> None:
        self.port = port
        self.backends = list(backends)
        self.log_path = log_path
        self.process: Optional[subprocess.Popen] = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "Balancer":
        command = [sys.executable, os.path.abspath(__file__), "--listen", str(self.port)]
        for backend in self.backends:
            command += ["--backend", backend]
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log,
                                        stdin=subprocess.DEVNULL)
        log.close()
        assert self.process.stdout is not None
        line = self.process.stdout.readline().decode().strip()
        if line != "listening":
            self.stop()
            raise RuntimeError(f"balancer did not start: {line!r}")
        return self

    def counts(self) -> dict:
        import urllib.request

        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(self.url + "/_balancer", timeout=10) as response:
            return json.loads(response.read())

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--listen", type=int, required=True)
    parser.add_argument("--backend", action="append", required=True)
    args = parser.parse_args(argv)
    serve(args.listen, args.backend)


if __name__ == "__main__":
    main()
