"""
``acme-gateway demo`` as a user runs it: the process starts Debian's Pebble
(which reuses no authorization) and the gateway, and prints the certbot
commands to run; certbot 1.32 runs them exactly as printed — one
``certonly``, then ``renew --force-renewal`` twice — and every run issues a
new certificate.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import time

import pytest
from cryptography import x509

from tests.support.gateway_process import _child_env, gateway_command
from tests.support.legacy import _run, clean_env, legacy_venv
from tests.support.stack import certificate_names, free_port

pytestmark = pytest.mark.e2e


class Demo:
    """
    ``acme-gateway demo`` in a session of its own, so that it and the Pebble
    it starts are stopped together, by the process group this test made.
    """

    def __init__(self, workdir: str, certbot: str):
        self.workdir = workdir
        self.log_path = os.path.join(workdir, "demo-output.log")
        self.command = [*gateway_command(), "demo", "--workdir", workdir,
                        "--port", str(free_port()), "--http01-port", str(free_port()),
                        "--certbot", certbot]
        self.process = None

    def start(self, timeout: float = 60) -> list:
        """
        Start the demo and return the commands it printed (each split as a
        shell would).
        """
        os.makedirs(self.workdir, exist_ok=True)
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(self.command, env=_child_env(), stdin=subprocess.DEVNULL,
                                            stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            output = self.output()
            commands = [line.strip() for line in output.splitlines()
                        if line.startswith("  ") and " --config-dir " in line]
            if len(commands) == 2:
                return [shlex.split(c) for c in commands]
            if self.process.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError(f"the demo printed no certbot commands:\n{self.output()}")

    def output(self) -> str:
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def stop(self) -> None:
        """
        SIGTERM to the group (Ctrl-C's SIGINT may be ignored when the suite
        itself runs in the background); killed if it lingers.
        """
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def test_demo_issues_and_renews_every_time(tmp_path):
    certbot = os.path.join(legacy_venv(), "bin", "certbot")
    demo = Demo(str(tmp_path / "demo"), certbot)
    try:
        certonly, renew = demo.start()
        assert certonly[:2] == [certbot, "certonly"] and renew[:2] == [certbot, "renew"]
        config_dir = certonly[certonly.index("--config-dir") + 1]
        live = os.path.join(config_dir, "live", "demo.example.test")
        serials = []
        for run, command in (("certonly", certonly), ("renew 1", renew), ("renew 2", renew)):
            _run(command, env=clean_env(), timeout=120, check=True, what=f"certbot {run}")
            with open(os.path.join(live, "cert.pem"), "rb") as f:
                leaf = x509.load_pem_x509_certificate(f.read())
            with open(os.path.join(live, "chain.pem"), "rb") as f:
                issuer = x509.load_pem_x509_certificates(f.read())[0]
            leaf.verify_directly_issued_by(issuer)
            assert certificate_names(leaf) == {"demo.example.test"}
            serials.append(leaf.serial_number)
        assert len(set(serials)) == 3, "each run issued a new certificate"
    finally:
        demo.stop()
        print(f"--- acme-gateway demo output ---\n{demo.output()}")
    assert demo.output().count("cost 1 upstream order(s)") == 3
