"""
A small closed-loop HTTP/1.1 load generator, the fallback when neither
Debian's ``wrk`` nor ``hey`` is installed: ``connections`` keep-alive
connections, each sending one request at a time for ``duration`` seconds.

It knows the method it sent, so it reads ``HEAD`` responses (which carry no
body and, from Twisted, no ``Content-Length``) correctly -- ``wrk``'s parser
cannot.  Being Python, it needs a good part of a core itself: on a 2-core
machine its numbers are pessimistic next to ``wrk``'s or ``hey``'s, and the
report says which generator produced each row.
"""

from __future__ import annotations

import asyncio
import time
import urllib.parse


async def _one_connection(host, port, request: bytes, head: bool, stop_at: float, latencies, errors):
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError:
        errors.append("connect")
        return
    try:
        while time.perf_counter() < stop_at:
            started = time.perf_counter()
            writer.write(request)
            header = await reader.readuntil(b"\r\n\r\n")
            status = int(header.split(b" ", 2)[1])
            length = 0
            chunked = False
            for line in header.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value.strip())
                elif name == b"transfer-encoding" and b"chunked" in value.lower():
                    chunked = True
            if not head:
                if chunked:
                    while True:
                        size = int((await reader.readuntil(b"\r\n")).strip().split(b";")[0], 16)
                        await reader.readexactly(size + 2)
                        if size == 0:
                            break
                elif length:
                    await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
            if status >= 400:
                errors.append(status)
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as error:
        errors.append(type(error).__name__)
    finally:
        writer.close()


async def _run(url: str, method: str, connections: int, duration: float):
    parts = urllib.parse.urlsplit(url)
    host, port = parts.hostname, parts.port or 80
    path = parts.path or "/"
    request = (f"{method} {path} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
               f"User-Agent: acme-gateway-bench-loadgen\r\n\r\n").encode()
    latencies: list = []
    errors: list = []
    started = time.perf_counter()
    stop_at = started + duration
    await asyncio.gather(*[
        _one_connection(host, port, request, method == "HEAD", stop_at, latencies, errors)
        for _ in range(connections)
    ])
    elapsed = time.perf_counter() - started
    return latencies, errors, elapsed


def run(url: str, method: str = "GET", connections: int = 64, duration: float = 10.0) -> dict:
    """
    Load ``url`` and return ``{"requests", "rps", "p50_ms", "p99_ms", "errors"}``.
    """
    latencies, errors, elapsed = asyncio.run(_run(url, method, connections, duration))
    latencies.sort()

    def quantile(q):
        if not latencies:
            return None
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000

    return {
        "tool": "python-loadgen",
        "requests": len(latencies),
        "rps": len(latencies) / elapsed if elapsed else 0.0,
        "p50_ms": quantile(0.50),
        "p99_ms": quantile(0.99),
        "errors": len(errors),
    }


if __name__ == "__main__":  # pragma: no cover
    import json
    import sys

    print(json.dumps(run(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "GET",
                         int(sys.argv[3]) if len(sys.argv) > 3 else 64,
                         float(sys.argv[4]) if len(sys.argv) > 4 else 5.0)))
