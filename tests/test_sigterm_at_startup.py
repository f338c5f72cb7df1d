"""
SIGTERM while ``serve`` is still starting (issue 18 item 8): with the
upstream directory fetch pending — a CA that accepts connections and never
answers — the process used to log "Main loop terminated" and never exit,
the store's thread keeping it alive.  It now stops what it opened and
exits 0, as SIGTERM after start-up does.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import time
import urllib.request

from cryptography.hazmat.primitives.asymmetric import ec

from tests.support.gateway_process import _child_env, gateway_command
from tests.support.matrix import write_pem_key
from tests.support.stack import free_port


def _healthz(port: int) -> bool:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def test_sigterm_while_the_directory_fetch_is_pending(tmp_path):
    silent_ca = socket.socket()
    silent_ca.bind(("127.0.0.1", 0))
    silent_ca.listen(16)  # accepts (the kernel does), never answers
    keys = tmp_path / "keys"
    write_pem_key(str(keys / "account.pem"), ec.generate_private_key(ec.SECP256R1()))
    admin = free_port()
    log = tmp_path / "gateway.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [*gateway_command(), "serve",
             "--upstream", f"http://127.0.0.1:{silent_ca.getsockname()[1]}/dir",
             "--keys", str(keys), "--state", str(tmp_path / "state.sqlite3"),
             "--listen", f"tcp:{free_port()}:interface=127.0.0.1",
             "--admin-listen", f"tcp:{admin}:interface=127.0.0.1",
             "--request-timeout", "600"],
            env=_child_env(), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    try:
        for _ in range(600):
            if _healthz(admin) or process.poll() is not None:
                break
            time.sleep(0.05)
        assert process.poll() is None, log.read_text()
        text = log.read_text()
        assert "v1 directory at" not in text, "start-up finished: nothing pending to test"
        process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(60)
        except subprocess.TimeoutExpired:
            raise AssertionError("SIGTERM during start-up left a process that does not exit:\n"
                                 + log.read_text())
        assert code == 0, log.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        silent_ca.close()


def test_sigterm_as_start_up_begins(tmp_path):
    """
    SIGTERM as soon as the key store is reported (the state opening, or
    the reactor not yet running): whenever it lands, the process exits —
    0 once the reactor handles it, or by the signal before that.
    """
    keys = tmp_path / "keys"
    write_pem_key(str(keys / "account.pem"), ec.generate_private_key(ec.SECP256R1()))
    for attempt in range(3):
        log = tmp_path / f"gateway-{attempt}.log"
        with open(log, "wb") as out:
            process = subprocess.Popen(
                [*gateway_command(), "serve",
                 "--upstream", f"http://127.0.0.1:{free_port()}/dir",
                 "--keys", str(keys), "--state", str(tmp_path / f"state-{attempt}.sqlite3"),
                 "--listen", f"tcp:{free_port()}:interface=127.0.0.1"],
                env=_child_env(), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        try:
            for _ in range(1200):
                if "account key(s) loaded" in log.read_text() or process.poll() is not None:
                    break
                time.sleep(0.005)
            time.sleep(0.02 * attempt)
            process.send_signal(signal.SIGTERM)
            try:
                code = process.wait(60)
            except subprocess.TimeoutExpired:
                raise AssertionError("SIGTERM at start-up left a process that does not exit:\n"
                                     + log.read_text())
            assert code in (0, -signal.SIGTERM), (code, log.read_text())
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(10)
