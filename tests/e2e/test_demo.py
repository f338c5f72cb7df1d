"""
``acme-gateway demo`` as the README's quick start runs it (``./scripts/demo``
runs ``acme-gateway demo --certbot .venvs/certbot1/bin/certbot``): the
commands its banner prints get a certificate with certbot 1.32 and renew
it at once; a second demo on the same work directory refuses to start and
leaves the running one's files alone; its text log carries no Twisted
connection chatter; and what it writes is ignored by git.  Its Pebble reuses
no authorization, and certbot 1.32 running the printed commands (``certonly``,
then ``renew --force-renewal`` twice) gets a new certificate every time.
"""

from __future__ import annotations

import json
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
from tests.support.stack import REPO_ROOT, certificate_names, free_port

pytestmark = pytest.mark.e2e

_COMMAND = re.compile(r"^\s+(\S*certbot (?:certonly|renew) .*)$", re.MULTILINE)


def _wait_for_text(path: str, text: str, process: subprocess.Popen, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while True:
        with open(path, errors="replace") as f:
            content = f.read()
        if text in content:
            return content
        if process.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"the demo never printed {text!r}:\n{content}")
        time.sleep(0.1)


def test_the_demo_as_the_quick_start_runs_it(tmp_path):
    """
    The banner's certonly and renew commands, run as printed, succeed (the
    renew at once: it carries ``--no-random-sleep-on-renew``); a second
    demo in the same directory exits 1 naming the running one and changes
    none of its files.
    """
    workdir = str(tmp_path / "demo")
    certbot = os.path.join(legacy_venv(), "bin", "certbot")
    command = [*gateway_command(), "demo", "--workdir", workdir, "--port", str(free_port()),
               "--http01-port", str(free_port()), "--certbot", certbot]
    log_path = str(tmp_path / "demo.log")
    with open(log_path, "wb") as log:
        demo = subprocess.Popen(command, env=_child_env(), stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT)
    try:
        banner = _wait_for_text(log_path, "acme-gateway demo is running", demo)
        banner = _wait_for_text(log_path, "with certbot --debug", demo)
        pebble_config = os.path.join(workdir, "pebble.json")
        with open(pebble_config, "rb") as f:
            config_before = f.read()

        second = subprocess.run(
            [*gateway_command(), "demo", "--workdir", workdir, "--port", str(free_port()),
             "--http01-port", str(free_port())],
            env=_child_env(), stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
        assert second.returncode == 1, second.stderr
        assert f"another demo is running in {workdir} (pid {demo.pid})" in second.stderr
        with open(pebble_config, "rb") as f:
            assert f.read() == config_before
        assert demo.poll() is None

        commands = _COMMAND.findall(banner)
        assert [c.split()[1] for c in commands] == ["certonly", "renew"], banner
        assert "--no-random-sleep-on-renew" in commands[1].split()
        outputs = []
        for line in commands:
            # Without --no-random-sleep-on-renew this renew would sleep for
            # minutes first and run out of its time.
            result = subprocess.run(shlex.split(line), env=clean_env(), stdin=subprocess.DEVNULL,
                                    capture_output=True, text=True, timeout=180)
            assert result.returncode == 0, f"{line}\n{result.stdout}\n{result.stderr}"
            outputs.append(result.stdout)
        assert "Successfully received certificate" in outputs[0]
        assert "Congratulations, all renewals succeeded" in outputs[1], outputs[1]
    finally:
        demo.terminate()
        demo.wait(30)
    with open(log_path, errors="replace") as f:
        output = f.read()
    assert "new-cert -> 201" in output or "/acme/new-cert -> 201" in output, output
    assert "_HTTP11ClientFactory" not in output
    assert demo.returncode == 0, output
    # certonly (after the demo stopped: visits are written in batches) and renew: one client in the migration report, two variants.
    report = subprocess.run(
        [*gateway_command(), "report", "--json", "--state",
         os.path.join(workdir, "acme-gateway.sqlite3")],
        env=_child_env(), capture_output=True, text=True, timeout=60, check=True)
    (certbot_client,) = [c for c in json.loads(report.stdout)["clients"]
                         if c["user_agent"].startswith("CertbotACMEClient/")]
    assert certbot_client["user_agent"] == "CertbotACMEClient/1.32.0"
    assert certbot_client["certificates"] == 2
    variants = sorted(v["user_agent"].split("(")[-1] for v in certbot_client["variants"])
    assert [v.split(";")[0] for v in variants] == ["certonly", "renew"], variants


def test_demo_files_are_ignored_by_git():
    """
    ``./demo`` (the demo's default work directory) holds a private key and
    state: git ignores it.
    """
    if not os.path.isdir(os.path.join(REPO_ROOT, ".git")) and not os.path.isfile(
            os.path.join(REPO_ROOT, ".git")):
        pytest.skip("not a git checkout")
    paths = ["demo/keys/demo-account.pem", "demo/acme-gateway.sqlite3", "demo/pebble.json"]
    result = subprocess.run(["git", "-C", REPO_ROOT, "check-ignore", "--no-index", *paths],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == paths


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
