"""
``acme-gateway serve --workers 2`` (issue 15, item 3): one listener served
by two processes on one state — an SQLite file (WAL, ``BEGIN IMMEDIATE``, a
busy timeout) or a PostgreSQL database — with real clients and a real
Pebble.  Each worker is killed with SIGKILL in turn while clients run: the
other serves on, the supervisor starts the dead one again, and the
restarted one serves (so each of the processes did serve the one port).
SIGTERM to the supervisor stops every worker, and it exits with status 0.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess

import pytest
import pytest_twisted
from twisted.internet import defer

from tests.e2e.test_legacy_clients import write_pem
from tests.support.gateway_process import GatewayProcess
from tests.support.legacy import off_reactor
from tests.support.stack import free_port
from tests.support.v1_flows import new_account_key, obtain, pause

pytestmark = pytest.mark.e2e

_STARTED = re.compile(r"acme-gateway: worker (\d+) started \(pid (\d+)\)")


def worker_pids(gateway: GatewayProcess) -> dict:
    """
    The newest pid of each worker index, from the supervisor's output.
    """
    pids = {}
    for index, pid in _STARTED.findall(gateway.log()):
        pids[int(index)] = int(pid)
    return pids


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize("engine", ["sqlite", "postgresql"])
@pytest_twisted.ensureDeferred
async def test_two_workers_serve_one_port_and_survive_each_other(
        engine, tmp_path, pebble_factory, request):
    pebble = pebble_factory(http_port=free_port())
    keys_dir = str(tmp_path / "keys")
    clients = [new_account_key() for _ in range(3)]
    for index, key in enumerate(clients):
        write_pem(os.path.join(keys_dir, f"client-{index}.pem"), key.private_key)
    state = None
    env = {}
    if engine == "postgresql":
        cluster = request.getfixturevalue("postgres_cluster")
        state = cluster.uri(cluster.create_database())
        env["ACME_GATEWAY_STATE_PASSWORD"] = cluster.password
    gateway = GatewayProcess(
        str(tmp_path / "gateway"), pebble, keys_dir, state=state, env=env,
        extra_args=["--workers", "2",
                    "--http01-listen", f"tcp:{pebble.http_port}:interface=127.0.0.1"])
    await off_reactor(gateway.start)
    try:
        issued, wrong_keys = [], []

        async def round_of_clients(tag: str) -> None:
            async def one(index, key):
                names = [f"workers-{engine}-{tag}-{index}.example.test"]
                for _ in range(30):
                    try:
                        outcome = await obtain(gateway.url, key, names,
                                               authorize=index % 2 == 0)
                    except Exception:
                        outcome = None
                    if outcome is not None and outcome.ok:
                        if outcome.leaf_key() != outcome.csr_key:
                            wrong_keys.append(names)
                        issued.append(names[0])
                        return
                    await pause(0.3)
                raise AssertionError(f"client {index} stranded in round {tag}")

            await defer.gatherResults([defer.ensureDeferred(one(i, k))
                                       for i, k in enumerate(clients)], consumeErrors=True)

        await round_of_clients("both")
        for victim in (0, 1):
            before = worker_pids(gateway)
            assert set(before) == {0, 1} and all(alive(pid) for pid in before.values())
            os.kill(before[victim], signal.SIGKILL)
            # Only the other worker is alive now: it serves this round.
            await round_of_clients(f"without-{victim}")
            for _ in range(100):
                if worker_pids(gateway)[victim] != before[victim]:
                    break
                await pause(0.1)
            restarted = worker_pids(gateway)[victim]
            assert restarted != before[victim] and alive(restarted)
            assert f"worker {victim} (pid {before[victim]}) exited" in gateway.log()
        # The second kill left only the restarted worker 0 at first.
        assert len(issued) == 9 and wrong_keys == []

        pids = list(worker_pids(gateway).values())
        supervisor = gateway.process
        supervisor.send_signal(signal.SIGTERM)
        assert await off_reactor(supervisor.wait, 60) == 0
        gateway.process = None
        for pid in pids:
            for _ in range(50):
                if not alive(pid):
                    break
                await pause(0.1)
            assert not alive(pid), f"worker {pid} outlived the supervisor"
    finally:
        await off_reactor(gateway.stop)
        print(gateway.log())


def test_workers_refuse_a_listener_they_cannot_share(tmp_path):
    """
    ``--workers`` shares tcp:, tcp6: and ssl: listeners; a unix: one is
    refused at start-up, naming the flag.
    """
    from tests.support.gateway_process import _child_env, gateway_command

    keys = tmp_path / "keys"
    keys.mkdir()
    result = subprocess.run(
        [*gateway_command(), "serve", "--upstream", "https://ca.invalid/dir", "--keys",
         str(keys), "--unknown-keys", "managed", "--http01-listen", "tcp:0",
         "--managed-keys", str(tmp_path / "managed"), "--allow-names", "*.example.test",
         "--state", str(tmp_path / "state.sqlite3"), "--workers", "2",
         "--listen", f"unix:{tmp_path}/v1.sock"],
        env=_child_env(), capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert result.returncode == 2
    assert "--listen" in result.stderr and "tcp:, tcp6: and ssl:" in result.stderr
