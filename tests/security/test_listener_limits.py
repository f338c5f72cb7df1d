"""
The adversarial corpus of connections, for every listener: the v1 face,
the HTTP-01 responder and the admin listener (issue 18 items 3 and 4).

A chunked 300 MiB POST to the HTTP-01 port was written in full to a
temporary file before its 405, and 100 MiB to the admin port; 1,100
trickling connections to the HTTP-01 port used every file descriptor, and
the v1 port then reset every connection — there was no cap on
connections, and each trickled header line reset the idle timeout.

Each case runs on the site the gateway serves that listener with
(`gateway.process.wiring.build_gateway`), with the default limits, over
in-memory connections on a ``task.Clock``: bodies above the listener's
limit are refused as they arrive (``Content-Length`` or chunked), a
connection beyond ``--max-connections`` is answered 503 and closed, and a
request's head must arrive within ``--header-timeout`` of its first byte,
a request begin and a body arrive within ``--idle-timeout`` — however the
bytes trickle in.  The flags themselves are checked at the end, and
``tests/e2e/test_listener_limits_process.py`` floods a real gateway
process.
"""

from __future__ import annotations

import json
from typing import Any, Callable, List, Optional

import attrs
import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.web import server

from gateway.process import cli
from gateway.process.config import Layers, use_layers
from gateway.process.wiring import ServeConfig, build_gateway
from tests.security.harness import HELD_KEYS, Harness, parse_raw_response

#: The defaults ``serve --help`` states.
HEADER_TIMEOUT = 10.0
IDLE_TIMEOUT = 30.0
MAX_CONNECTIONS = 256
#: What the HTTP-01 responder and the admin listener read of a body.
NO_BODY = 1024
V1_MAX_BODY = 64 * 1024


@attrs.define
class Listener:
    """
    One listener's production site, on the test's clock.

    :ivar request_head: a request it answers (the head, up to the blank line).
    :ivar max_body: the largest body it reads.
    :ivar problem: whether its refusals are v1 problem documents.
    """

    name: str
    site: Any
    clock: Any
    request_head: bytes
    max_body: int
    problem: bool


def _sites() -> dict:
    """
    The three listeners of one gateway built as ``serve`` builds it (with
    an HTTP-01 responder and an admin listener), over a fake CA.
    """
    harness = Harness.fresh()
    gateway = harness.gateway
    config = ServeConfig(upstream=gateway.ca.directory_url, keys="",
                         http01_listen="tcp:0:interface=127.0.0.1",
                         admin_listen="tcp:0:interface=127.0.0.1")
    built = build_gateway(config, clock=gateway.clock, keys=gateway.keys, store=gateway.store,
                          http_for=lambda url: gateway.upstream._http)
    # (An older gateway built the HTTP-01 and admin sites in serve.py.)
    http01 = getattr(built, "http01_site", None) or server.Site(built.http01)
    admin = getattr(built, "admin_site", None) or built.admin.site()
    return {"v1": (built.site, built.clock), "http-01": (http01, built.clock),
            "admin": (admin, built.clock), "http01-resource": built.http01}


LISTENERS = ("v1", "http-01", "admin")


@pytest.fixture(params=LISTENERS)
def listener(request) -> Listener:
    sites = _sites()
    site, clock = sites[request.param]
    if request.param == "v1":
        return Listener("v1", site, clock, b"GET /directory HTTP/1.1\r\nHost: gateway.test\r\n",
                        V1_MAX_BODY, True)
    if request.param == "http-01":
        return Listener("http-01", site, clock,
                        b"GET /.well-known/acme-challenge/x HTTP/1.1\r\nHost: a.example.test\r\n",
                        NO_BODY, False)
    return Listener("admin", site, clock, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n",
                    NO_BODY, False)


@attrs.define
class Connection:
    """
    An in-memory connection to a site.
    """

    protocol: Any
    transport: StringTransport

    @classmethod
    def open(cls, site, port: int = 40000) -> "Connection":
        protocol = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", port))
        transport = StringTransport(hostAddress=IPv4Address("TCP", "127.0.0.1", 4000),
                                    peerAddress=IPv4Address("TCP", "127.0.0.1", port))
        protocol.makeConnection(transport)
        return cls(protocol, transport)

    def send(self, data: bytes) -> None:
        self.protocol.dataReceived(data)

    @property
    def closed(self) -> bool:
        return self.transport.disconnecting

    def replies(self) -> List[Any]:
        """
        Every response written so far, in order.
        """
        written, replies = self.transport.value(), []
        while written:
            one, written = _one_response(written)
            replies.append(parse_raw_response(one))
        return replies

    def close(self) -> None:
        if not self.closed:
            self.transport.loseConnection()
        self.protocol.connectionLost(Failure(ConnectionError("test done")))


def _one_response(data: bytes):
    """
    The first HTTP/1.1 response of ``data`` (with ``Content-Length``, chunked,
    or to the end), and what follows it.
    """
    head, _, rest = data.partition(b"\r\n\r\n")
    headers = head.lower()
    if b"transfer-encoding: chunked" in headers:
        end = 0
        while True:
            size_line, _, _ = rest[end:].partition(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            end += len(size_line) + 2 + size + 2
            if size == 0:
                break
        return head + b"\r\n\r\n" + rest[:end], rest[end:]
    for line in headers.split(b"\r\n"):
        if line.startswith(b"content-length:"):
            length = int(line.split(b":")[1])
            return head + b"\r\n\r\n" + rest[:length], rest[length:]
    return data, b""


def assert_refusal(listener: Listener, reply, status: int, *fragments: str) -> None:
    """
    ``reply`` is the listener's refusal: ``status``, and a v1 problem
    document (with a nonce) on the v1 port, plain text elsewhere.
    """
    assert reply is not None and reply.status == status, reply
    text = reply.body.decode()
    if listener.problem:
        assert reply.header("content-type") == "application/problem+json"
        assert reply.header("replay-nonce")
        problem = json.loads(text)
        assert problem["type"].startswith("urn:acme:error:") and problem["status"] == status
        text = problem["detail"]
    for fragment in fragments:
        assert fragment in text, (fragment, text)


# -- bodies -------------------------------------------------------------------------


def test_announced_body_over_the_limit_refused_before_it_arrives(listener):
    """
    A ``Content-Length`` of 300 MiB is answered 413 as soon as the headers
    are in, and the connection closed: not a byte of the body is read.
    """
    connection = Connection.open(listener.site)
    head = listener.request_head.replace(b"GET ", b"POST ", 1)
    connection.send(head + b"Content-Length: %d\r\n\r\n" % (300 * 1024 * 1024))
    (reply,) = connection.replies()
    assert_refusal(listener, reply, 413, f"the limit is {listener.max_body} bytes")
    assert connection.closed


def test_chunked_body_cut_off_at_the_limit(listener, monkeypatch):
    """
    A chunked body is refused the moment it passes the limit, and what the
    request buffered never exceeds it (a 300 MiB chunked POST went to a
    temporary file in full).
    """
    from twisted.web.http import Request

    buffered = []
    original = Request.handleContentChunk

    def spy(self, data):
        original(self, data)
        buffered.append(self.content.tell() if self.content is not None else 0)

    monkeypatch.setattr(Request, "handleContentChunk", spy)
    connection = Connection.open(listener.site)
    head = listener.request_head.replace(b"GET ", b"POST ", 1)
    connection.send(head + b"Transfer-Encoding: chunked\r\n\r\n")
    chunk = b"4000\r\n" + b"x" * 0x4000 + b"\r\n"
    for _ in range((listener.max_body // 0x4000) + 8):
        if connection.closed:
            break
        connection.send(chunk)
    assert connection.closed, "the body was read on past the limit"
    (reply,) = connection.replies()
    assert_refusal(listener, reply, 413, f"the limit is {listener.max_body} bytes")
    assert max(buffered, default=0) <= listener.max_body


# -- connections ----------------------------------------------------------------------


def test_connections_beyond_the_cap_are_refused(listener):
    """
    With `MAX_CONNECTIONS` connections open (trickling, say), one more is
    answered 503 and closed at once; once one closes, the next is served.
    """
    held = [Connection.open(listener.site, 41000 + i) for i in range(MAX_CONNECTIONS)]
    for connection in held:
        connection.send(b"G")
    extra = Connection.open(listener.site, 40999)
    assert extra.closed, "a connection beyond the cap was accepted"
    (reply,) = extra.replies()
    assert_refusal(listener, reply, 503, "--max-connections")
    held.pop().close()
    served = Connection.open(listener.site, 40998)
    served.send(listener.request_head + b"\r\n")
    assert served.replies()[0].status in (200, 404), served.replies()
    for connection in held + [served]:
        connection.close()


# -- time -------------------------------------------------------------------------------


def test_trickled_head_cut_at_the_header_timeout(listener):
    """
    A request head trickled a byte a second is answered 408 and closed
    `HEADER_TIMEOUT` seconds after its first byte: each byte used to
    restart the (12-hour) idle timer.
    """
    connection = Connection.open(listener.site)
    head = listener.request_head + b"X-Slow: " + b"a" * 100
    for second, byte in enumerate(head):
        if connection.closed:
            break
        connection.send(bytes([byte]))
        listener.clock.advance(1)
    assert connection.closed, "trickling kept the connection open"
    assert second <= HEADER_TIMEOUT + 1
    (reply,) = connection.replies()
    assert_refusal(listener, reply, 408, "--header-timeout")


def test_head_trickled_after_an_idle_wait_cut_at_the_header_timeout(listener):
    """
    A head that starts late in the idle wait is still cut `HEADER_TIMEOUT`
    after its first byte, not when the (later) idle wait would have ended:
    the connection's one timer is never armed past a deadline set later.
    """
    connection = Connection.open(listener.site)
    listener.clock.advance(IDLE_TIMEOUT - 5)
    connection.send(listener.request_head[:1])
    listener.clock.advance(HEADER_TIMEOUT - 0.5)
    assert not connection.closed
    listener.clock.advance(0.5)
    assert connection.closed
    (reply,) = connection.replies()
    assert_refusal(listener, reply, 408, "--header-timeout")


def test_silent_connection_closed_at_the_idle_timeout(listener):
    """
    A connection that never sends a byte is closed `IDLE_TIMEOUT` seconds
    after it opened, with nothing written.
    """
    connection = Connection.open(listener.site)
    listener.clock.advance(IDLE_TIMEOUT - 1)
    assert not connection.closed
    listener.clock.advance(1)
    assert connection.closed
    assert connection.transport.value() == b""


def test_trickled_body_cut_at_the_idle_timeout(listener):
    """
    A body announced within the limit but trickled a byte every few seconds
    is answered 408 once `IDLE_TIMEOUT` has passed since the headers.
    """
    connection = Connection.open(listener.site)
    head = listener.request_head.replace(b"GET ", b"POST ", 1)
    connection.send(head + b"Content-Length: 500\r\n\r\n")
    for _ in range(500):
        if connection.closed:
            break
        connection.send(b"x")
        listener.clock.advance(3)
    assert connection.closed, "trickling kept the connection open"
    (reply,) = connection.replies()
    assert_refusal(listener, reply, 408, "--idle-timeout")


def test_kept_alive_connection_closed_when_idle(listener):
    """
    A request answered at once keeps its connection for the next request
    — `IDLE_TIMEOUT` seconds, in all, however the client trickles
    keep-alive noise.
    """
    connection = Connection.open(listener.site)
    connection.send(listener.request_head + b"\r\n")
    assert connection.replies()[0].status in (200, 404)
    assert not connection.closed
    listener.clock.advance(IDLE_TIMEOUT - 1)
    assert not connection.closed
    connection.send(listener.request_head + b"\r\n")
    assert len(connection.replies()) == 2
    listener.clock.advance(IDLE_TIMEOUT + 1)
    assert connection.closed


def test_prompt_requests_unaffected(listener):
    """
    Requests that arrive in time, on one kept-alive connection, are
    answered one after the other, however long the whole connection lasts.
    """
    connection = Connection.open(listener.site)
    for _ in range(5):
        connection.send(listener.request_head + b"\r\n")
        listener.clock.advance(HEADER_TIMEOUT)
    assert not connection.closed
    assert [reply.status for reply in connection.replies()] in ([200] * 5, [404] * 5)
    connection.close()


def test_prompt_requests_schedule_no_timers(listener, monkeypatch):
    """
    The deadlines cost nothing per request: 50 requests answered at once on
    one kept-alive connection schedule one timer, the connection's (each
    used to schedule two and cancel two: 10 % of the gateway's CPU under
    ``HEAD /directory`` load was the reactor's timer heap).
    """
    scheduled = []
    schedule = listener.clock.callLater

    def counting(delay, function, *args, **kwargs):
        scheduled.append(function)
        return schedule(delay, function, *args, **kwargs)

    monkeypatch.setattr(listener.clock, "callLater", counting)
    connection = Connection.open(listener.site)
    for _ in range(50):
        connection.send(listener.request_head + b"\r\n")
    assert [reply.status for reply in connection.replies()] in ([200] * 50, [404] * 50)
    timers = [f for f in scheduled if getattr(f, "__self__", None) is connection.protocol]
    assert len(timers) == 1, timers
    connection.close()


# -- the flags ------------------------------------------------------------------------------


def _serve_config(argv: list, environ: Optional[dict] = None) -> Any:
    use_layers(Layers(environ=environ or {}))
    parser = cli.build_parser()
    return cli.serve_config(parser, parser.parse_args(argv))


@pytest.fixture
def serve_args(tmp_path):
    (tmp_path / "keys").mkdir()
    return ["serve", "--upstream", "https://ca.test/dir", "--keys", str(tmp_path / "keys"),
            "--state", str(tmp_path / "state.sqlite3")]


def test_limit_flags(serve_args):
    """
    ``--max-connections``, ``--header-timeout`` and ``--idle-timeout`` (and
    their variables) set every listener's limits; the defaults are those
    above.
    """
    config = _serve_config(serve_args)
    assert (config.max_connections, config.header_timeout, config.idle_timeout) == (
        MAX_CONNECTIONS, HEADER_TIMEOUT, IDLE_TIMEOUT)
    config = _serve_config(serve_args + ["--max-connections", "50", "--header-timeout", "2.5"],
                           {"ACME_GATEWAY_IDLE_TIMEOUT": "7"})
    assert (config.max_connections, config.header_timeout, config.idle_timeout) == (50, 2.5, 7)
    gateway = build_gateway(
        config, clock=Harness.fresh().gateway.clock, keys=Harness.fresh().gateway.keys,
        store=Harness.fresh().gateway.store, http_for=lambda url: None)
    assert gateway.site.limits.max_connections == gateway.admin_site.limits.max_connections == 50
    assert gateway.site.limits.header_timeout == gateway.admin_site.limits.header_timeout == 2.5


@pytest.mark.parametrize("flag, value", [
    ("--max-connections", "0"), ("--max-connections", "many"), ("--header-timeout", "0"),
    ("--header-timeout", "-1"), ("--idle-timeout", "soon"),
])
def test_limit_flags_bad_values(serve_args, capsys, flag, value):
    """
    A limit that is not a positive number fails at start-up, naming its flag.
    """
    with pytest.raises(SystemExit):
        _serve_config(serve_args + [flag, value])
    assert f"{flag}: expected" in capsys.readouterr().err
