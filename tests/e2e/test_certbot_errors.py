"""
Where an operator finds the gateway's error when certbot 1.32 hides it.

certbot 1.32 on Python 3.11 shows every ACME error that reaches its top
level as "An unexpected error occurred: AttributeError: can't set
attribute".  Why: Python 3.11's ``contextlib`` sets ``__traceback__`` on an
exception leaving a ``@contextmanager`` (certbot's ``make_displayer`` wraps
every subcommand), and ``acme.messages.Error`` is a josepy ``ImmutableMap``,
whose ``__setattr__`` refuses every attribute.  It happens for any problem
document (the ``acme`` library makes every one a ``messages.Error``), so no
shape of the gateway's problem documents avoids it.

This test makes the gateway refuse certbot for real (``--order-limit 1``:
the second name's ``new-authz`` gets the gateway's own 429 ``rateLimited``)
and checks each place the README and the demo send the operator to:
certbot's ``letsencrypt.log``, ``certbot --debug``, the gateway's log line
for the request, and the migration report.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.support.gateway_process import _child_env, gateway_command
from tests.support.legacy import Certbot, legacy_python

pytestmark = pytest.mark.e2e

NAMES = ["first.errors.example.test", "second.errors.example.test"]


def _legacy_python_version() -> tuple:
    result = subprocess.run([legacy_python(), "-c", "import sys; print(*sys.version_info[:2])"],
                            capture_output=True, text=True, timeout=60, check=True)
    return tuple(int(part) for part in result.stdout.split())


def test_certbot_hides_the_gateway_error_and_where_to_find_it(tmp_path, pebble, gateways):
    keys_dir = str(tmp_path / "keys")
    os.makedirs(keys_dir)
    gateway = gateways(pebble, keys_dir, start=False, extra_args=["--order-limit", "1"])
    certbot = Certbot(str(tmp_path / "certbot"), gateway.directory_url)
    account = certbot.seed_existing_account(rsa.generate_private_key(65537, 2048),
                                            regr_uri=f"{gateway.url}/acme/reg/1")
    shutil.copy(certbot.account_key_path(), os.path.join(keys_dir, f"certbot-{account}.json"))
    gateway.start()

    result = certbot.certonly_standalone(NAMES, pebble.http_port, check=False)
    assert result.returncode == 1, result.stderr
    if _legacy_python_version() >= (3, 11):
        # The documented symptom: the gateway's error is not on the screen.
        assert "An unexpected error occurred:\nAttributeError: can't set attribute" in result.stderr
        assert "rateLimited" not in result.stderr
    else:  # pragma: no cover - CI runs Debian bookworm's Python 3.11
        assert "urn:acme:error:rateLimited" in result.stderr

    # 1. certbot's log, on the acme.messages.Error line.
    with open(certbot.log_path) as f:
        log = f.read()
    error_lines = [line for line in log.splitlines() if line.startswith("acme.messages.Error: ")]
    assert error_lines and "urn:acme:error:rateLimited" in error_lines[-1]
    assert "--order-limit" in error_lines[-1]

    # 2. certbot --debug prints the whole chain, the gateway's error first.
    debug = certbot.certonly_standalone(NAMES, pebble.http_port, extra=["--debug"], check=False)
    assert debug.returncode == 1
    assert "acme.messages.Error: urn:acme:error:rateLimited" in debug.stderr
    assert "--order-limit" in debug.stderr

    # 3. the gateway's log line for the request.
    assert any("/acme/new-authz -> 429 urn:acme:error:rateLimited" in line and "--order-limit" in line
               for line in gateway.log().splitlines()), gateway.log()

    # 4. the migration report's last failure (once the gateway stopped: it
    # writes visits in batches, at the latest when it stops).
    gateway.stop()
    report = subprocess.run([*gateway_command(), "report", "--state", gateway.state],
                            env=_child_env(), capture_output=True, text=True, timeout=60, check=True)
    assert "new-authz 429 urn:acme:error:rateLimited" in report.stdout, report.stdout
