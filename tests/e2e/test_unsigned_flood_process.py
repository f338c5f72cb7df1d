"""
The soak of issue 18 item 2 against a real ``acme-gateway serve`` process
and a real Pebble: 10,000 unauthenticated requests with distinct
User-Agents.  Once 50,000 of them made 50,003 report rows, a 38 MB state
file and a 37 MB ``/status`` page, and a real ``new-authz`` during the
flood took 10 s.  Now no row is written for a request without a valid JWS:
the state file stays under 1 MB, ``/status`` stays small, and a signed
``new-authz`` during the flood is served.

(Its latency is printed, not asserted: speed belongs in ``bench/``.)
"""

from __future__ import annotations

import http.client
import json
import os
import threading
import time
import urllib.request

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from gateway.keys.jose import AccountKey
from tests.support.gateway_process import GatewayProcess
from tests.support.matrix import write_pem_key
from tests.support.stack import free_port
from tests.support.v1_signing import sign_v1

pytestmark = pytest.mark.e2e

FLOOD = 10_000
CONNECTIONS = 4


def _state_bytes(state: str) -> int:
    return sum(os.path.getsize(state + suffix) for suffix in ("", "-wal", "-journal")
               if os.path.exists(state + suffix))


def _flood(port: int, first: int, count: int, statuses: list) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        for index in range(first, first + count):
            connection.request("HEAD", "/directory",
                               headers={"User-Agent": f"flood-client/{index} (distinct)"})
            response = connection.getresponse()
            response.read()
            statuses.append(response.status)
            if response.will_close:
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    finally:
        connection.close()


def _new_authz(base: str, key: AccountKey, name: str):
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(urllib.request.Request(base + "/directory", method="HEAD"),
                     timeout=30) as response:
        nonce = response.headers["Replay-Nonce"]
    body = sign_v1(key, {"resource": "new-authz",
                         "identifier": {"type": "dns", "value": name}}, nonce)
    started = time.monotonic()
    try:
        with opener.open(urllib.request.Request(base + "/acme/new-authz", data=body,
                                                method="POST"), timeout=60) as response:
            return response.status, time.monotonic() - started
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def test_ten_thousand_unsigned_requests(tmp_path, pebble):
    keys_dir = str(tmp_path / "keys")
    private = ec.generate_private_key(ec.SECP256R1())
    write_pem_key(os.path.join(keys_dir, "account.pem"), private)
    key = AccountKey.from_private_key(private)
    admin = free_port()
    gateway = GatewayProcess(str(tmp_path / "gateway"), pebble, keys_dir, extra_args=[
        "--admin-listen", f"tcp:{admin}:interface=127.0.0.1"])
    gateway.start()
    try:
        base = gateway.directory_url.rsplit("/directory", 1)[0]
        port = int(base.rsplit(":", 1)[1])
        assert _new_authz(base, key, "warm.example.test")[0] == 201
        statuses: list = []
        share = FLOOD // CONNECTIONS
        workers = [threading.Thread(target=_flood, args=(port, i * share, share, statuses))
                   for i in range(CONNECTIONS)]
        for worker in workers:
            worker.start()
        during = [_new_authz(base, key, f"during-{i}.example.test") for i in range(20)]
        for worker in workers:
            worker.join(600)
        assert len(statuses) == FLOOD and set(statuses) == {200}, set(statuses)
        assert [status for status, _ in during] == [201] * len(during), during
        latencies = sorted(seconds for _, seconds in during)
        print(f"new-authz during the flood: median {latencies[len(latencies) // 2] * 1000:.0f} ms, "
              f"max {latencies[-1] * 1000:.0f} ms")
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(f"http://127.0.0.1:{admin}/status.json", timeout=30) as response:
            page = response.read()
        assert len(page) < 100_000, len(page)
        assert "flood-client" not in page.decode(), "an unsigned User-Agent reached the report"
        json.loads(page)
    finally:
        gateway.stop()
    # Stopped, the gateway has checkpointed its write-ahead log (whose size
    # while running is page churn of the signed requests, not rows).
    after = _state_bytes(gateway.state)
    print(f"state file after the flood and {len(during) + 1} new-authz: {after} bytes")
    assert after < 1_000_000, after
