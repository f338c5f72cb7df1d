"""
A real ``acme-gateway serve`` process under the connection floods of issue
18 items 3 and 4, on real loopback sockets: its file descriptors limited to
1,024 (the common default), with a v1 port, an HTTP-01 responder and an
admin listener.

1,100 trickling connections to the HTTP-01 port once used every file
descriptor, and the v1 port then reset every connection; a chunked POST of
any size to the HTTP-01 or admin port was read to its end.  Now each
listener holds at most ``--max-connections`` (256 by default) and answers
one more with 503, a body above its limit is refused as it arrives, and a
request head must arrive within ``--header-timeout``.
"""

from __future__ import annotations

import os
import socket
import time
import urllib.request

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from tests.support.gateway_process import GatewayProcess
from tests.support.matrix import write_pem_key
from tests.support.stack import free_port

pytestmark = pytest.mark.e2e

#: The file descriptors the gateway process may open (``ulimit -n``).
FD_LIMIT = 1024

#: ``--header-timeout``'s default (seconds): a request head must arrive within it.
HEADER_TIMEOUT = 10


class LimitedGateway(GatewayProcess):
    """
    The gateway started under ``ulimit -n FD_LIMIT``.
    """

    def command(self) -> list:
        return ["sh", "-c", f'ulimit -n {FD_LIMIT} && exec "$@"', "sh", *super().command()]


@pytest.fixture(scope="module")
def gateway(tmp_path_factory, pebble):
    workdir = tmp_path_factory.mktemp("listener-limits")
    keys_dir = str(workdir / "keys")
    write_pem_key(os.path.join(keys_dir, "account.pem"), ec.generate_private_key(ec.SECP256R1()))
    http01, admin = free_port(), free_port()
    process = LimitedGateway(str(workdir / "gateway"), pebble, keys_dir, extra_args=[
        "--http01-listen", f"tcp:{http01}:interface=127.0.0.1",
        "--admin-listen", f"tcp:{admin}:interface=127.0.0.1",
    ])
    process.http01_port, process.admin_port = http01, admin
    process.start()
    yield process
    process.stop()
    print(f"--- acme-gateway output ---\n{process.log()[-4000:]}")


def fetch(url: str) -> int:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def test_flooded_http01_port_leaves_the_v1_port_serving(gateway):
    """
    1,100 connections trickling request heads into the HTTP-01 port: while
    they are open, the v1 port and the admin listener keep answering; the
    HTTP-01 port answers those beyond its cap with 503 at once, and the
    others with 408 once ``--header-timeout`` (10 s) has passed — none is
    left hanging, none is reset.
    """
    held = []
    opening_started = time.monotonic()
    try:
        for _ in range(1100):
            connection = socket.create_connection(("127.0.0.1", gateway.http01_port), timeout=10)
            connection.sendall(b"GET /.well-known/acme-challenge/x HTTP/1.1\r\nX-Slow: a")
            held.append(connection)
        opening_took = time.monotonic() - opening_started
        # The flood is on: the other ports serve.
        assert fetch(gateway.directory_url) == 200
        assert fetch(f"http://127.0.0.1:{gateway.admin_port}/healthz") == 200
        for connection in held:
            connection.setblocking(False)
        answers: dict = {}
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(answers) < len(held):
            for index, connection in enumerate(held):
                if index in answers:
                    continue
                try:
                    answers[index] = connection.recv(4096)[:12]
                except BlockingIOError:
                    continue
                except OSError as error:
                    answers[index] = repr(error).encode()
            time.sleep(0.1)
        kinds = {data: sum(1 for d in answers.values() if d == data) for data in answers.values()}
        assert len(answers) == len(held), kinds
        assert set(kinds) <= {b"HTTP/1.1 503", b"HTTP/1.1 408"}, kinds
        # At most 256 connections are held at once; one that times out
        # (408, after 10 s) frees its place for a later one.  On a loaded
        # machine opening 1,100 connections can take longer than one header
        # timeout, so each 10 s the opening took lets another 256 in.
        windows = 2 + int(opening_took // HEADER_TIMEOUT)
        assert kinds.get(b"HTTP/1.1 408", 0) <= windows * 256, (kinds, opening_took)
        assert kinds.get(b"HTTP/1.1 503", 0) >= 1100 - windows * 256, (kinds, opening_took)
    finally:
        for connection in held:
            connection.close()


@pytest.mark.parametrize("port", ["http01_port", "admin_port"])
def test_chunked_body_refused_while_it_is_sent(gateway, port):
    """
    A chunked POST of 100 MiB to the HTTP-01 or the admin port is answered
    413 and cut off long before its end (it used to be written to a
    temporary file in full, then answered 405).
    """
    total, sent = 100 * 1024 * 1024, 0
    chunk = b"10000\r\n" + b"x" * 0x10000 + b"\r\n"
    connection = socket.create_connection(("127.0.0.1", getattr(gateway, port)), timeout=10)
    try:
        connection.sendall(b"POST /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                           b"Transfer-Encoding: chunked\r\n\r\n")
        try:
            while sent < total:
                connection.sendall(chunk)
                sent += 0x10000
        except OSError:
            pass  # the gateway closed the connection: what it should do
        connection.settimeout(10)
        try:
            answer = connection.recv(4096)
        except OSError:
            answer = b""
    finally:
        connection.close()
    assert sent < total // 4, f"{sent} of {total} bytes were taken"
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
