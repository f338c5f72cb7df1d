"""
Operating the gateway, checked against a running ``acme-gateway serve``
process after a real certbot 1.32 v1 issuance through it: the admin
listener's metrics and migration report (also rendered by headless
Chromium), the JSON logs and their request ids, and the ``report`` and
``healthcheck`` commands an operator (or a container runtime) runs beside it.

One issuance serves every test of the module (a module fixture), so the
checks cost seconds, not an issuance each.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import urllib.request

import attrs
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from prometheus_client.parser import text_string_to_metric_families

from gateway.keys.jose import AccountKey
from tests.support.gateway_process import GatewayProcess, _child_env, gateway_command
from tests.support.legacy import Certbot
from tests.support.stack import free_port

pytestmark = pytest.mark.e2e

NAME = "operating.example.test"
CERTBOT_UA = "CertbotACMEClient/1.32.0"


@attrs.frozen
class Issued:
    gateway: GatewayProcess
    admin: str
    admin_endpoint: str
    certbot: Certbot
    thumbprint: str


@pytest.fixture(scope="module")
def issued(tmp_path_factory, pebble):
    """
    A gateway process with an admin listener and JSON logs, through which a
    migrating certbot (an account it already had) got a certificate for
    NAME over http-01.
    """
    workdir = tmp_path_factory.mktemp("operating")
    keys_dir = str(workdir / "keys")
    os.makedirs(keys_dir)
    key = rsa.generate_private_key(65537, 2048)
    admin_endpoint = f"tcp:{free_port()}:interface=127.0.0.1"
    gateway = GatewayProcess(str(workdir / "gateway"), pebble, keys_dir, extra_args=[
        "--admin-listen", admin_endpoint, "--log-format", "json"])
    certbot = Certbot(str(workdir / "certbot"), gateway.directory_url)
    account_id = certbot.seed_existing_account(key, regr_uri=f"{gateway.url}/acme/reg/4711")
    shutil.copy(certbot.account_key_path(), os.path.join(keys_dir, f"certbot-{account_id}.json"))
    gateway.start()
    try:
        certbot.certonly_standalone([NAME], pebble.http_port)
        port = admin_endpoint.split(":")[1]
        yield Issued(gateway, f"http://127.0.0.1:{port}", admin_endpoint, certbot,
                     AccountKey.from_private_key(key).thumbprint)
    finally:
        gateway.stop()
        print(f"--- acme-gateway output ({gateway.log_path}) ---\n{gateway.log()}")


def fetch(url: str, accept: str = "") -> tuple:
    request = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=10) as response:
            return response.status, response.headers, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read().decode()


def certbot_rows(report: dict) -> list:
    """
    certbot's rows of a JSON report (the harness's own directory polls are
    unsigned, so they make none).
    """
    return [c for c in report["clients"] if c["user_agent"].startswith(CERTBOT_UA)]


def test_metrics_show_the_request_and_the_certificate(issued):
    """
    After the issuance, ``/metrics`` counts certbot's new-cert (201), one
    certificate issued, the upstream order and finalize, with latencies.
    """
    status, _, body = fetch(issued.admin + "/metrics")
    assert status == 200
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in text_string_to_metric_families(body) for s in f.samples}
    assert samples[("acme_gateway_v1_requests_total", (("endpoint", "new-cert"), ("status", "201")))] == 1
    assert samples[("acme_gateway_v1_requests_total", (("endpoint", "new-authz"), ("status", "201")))] == 1
    assert samples[("acme_gateway_certificates_issued_total", ())] == 1
    assert samples[("acme_gateway_orders_created_total", ())] == 1
    assert samples[("acme_gateway_upstream_requests_total", (("kind", "finalize"), ("status", "200")))] == 1
    assert samples[("acme_gateway_upstream_request_duration_seconds_count", (("kind", "finalize"),))] == 1
    # certbot only: the harness's unsigned directory polls make no row
    # (no stored row without a valid JWS)
    assert samples[("acme_gateway_legacy_clients", (("state", "active"),))] == 1
    assert ("acme_gateway_pending_authorizations", ()) in samples


def test_status_lists_certbot_with_its_user_agent(issued):
    """
    ``/status`` names certbot by its User-Agent; ``/status.json`` has its
    account thumbprint, the name it asked for and its certificate.
    """
    status, headers, page = fetch(issued.admin + "/status")
    assert status == 200 and headers["Content-Type"] == "text/html; charset=utf-8"
    assert CERTBOT_UA in page
    status, _, body = fetch(issued.admin + "/status.json")
    (client,) = certbot_rows(json.loads(body))
    assert client["user_agent"].startswith(CERTBOT_UA)
    assert client["address"] == "127.0.0.1"
    assert client["state"] == "active"
    assert client["thumbprints"] == [issued.thumbprint]
    assert client["names"] == [NAME]
    assert client["certificates"] == 1
    assert client["failures"] == 0


def test_status_page_renders_in_headless_chromium(issued, tmp_path):
    """
    Debian's Chromium renders ``/status`` and the rendered DOM shows the
    client's User-Agent and its state.
    """
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail("Debian's chromium is not installed: run ./scripts/setup (it installs it)")
    profile = tempfile.mkdtemp(dir=tmp_path)
    result = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run",
         "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--dump-dom",
         issued.admin + "/status"],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=90,
        env={**_child_env(), "HOME": profile},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    dom = result.stdout
    assert "<table>" in dom and CERTBOT_UA in dom, dom[:2000]
    assert "1 legacy client: 1 active, 0 failing, 0 migrated away." in dom


def test_json_logs_carry_the_request_id_across_v1_and_upstream(issued):
    """
    Every line the gateway wrote is one JSON object; certbot's new-cert
    event and the upstream finalize it caused share one request id; the
    account appears by thumbprint and no key material appears at all.
    """
    lines = [line for line in issued.gateway.log().splitlines()
             if line.strip() and not line.startswith("=== ")]
    events = [json.loads(line) for line in lines]
    (new_cert,) = [e for e in events if e.get("endpoint") == "new-cert"]
    assert new_cert["status"] == 201 and new_cert["user_agent"].startswith(CERTBOT_UA)
    assert new_cert["thumbprint"] == issued.thumbprint
    request_id = new_cert["request_id"]
    kinds = {e.get("kind") for e in events
             if e.get("request_id") == request_id and e["namespace"] == "gateway.upstream.client.UpstreamClient"}
    assert {"finalize", "certificate"} <= kinds
    assert all(e["request_id"] != request_id for e in events
               if e.get("endpoint") not in (None, "new-cert"))
    with open(issued.certbot.account_key_path()) as f:
        private_jwk = json.load(f)
    text = issued.gateway.log()
    for member in ("d", "p", "q"):
        assert private_jwk[member] not in text
    assert "PRIVATE KEY" not in text


def test_report_command_beside_the_running_gateway(issued):
    """
    ``acme-gateway report --json`` reads the running gateway's state and
    lists certbot; the text form says it is active.
    """
    command = [*gateway_command(), "report", "--state", issued.gateway.state]
    result = subprocess.run(command + ["--json"], env=_child_env(), capture_output=True,
                            text=True, timeout=60, check=True)
    (client,) = certbot_rows(json.loads(result.stdout))
    assert client["user_agent"].startswith(CERTBOT_UA) and client["certificates"] == 1
    result = subprocess.run(command, env=_child_env(), capture_output=True, text=True,
                            timeout=60, check=True)
    assert f"ACTIVE  127.0.0.1  {CERTBOT_UA}" in result.stdout


def test_healthcheck_command(issued):
    """
    ``acme-gateway healthcheck`` (a container's HEALTHCHECK) exits 0 for a
    healthy and for a ready gateway, finding it through the same
    ``ACME_GATEWAY_ADMIN_LISTEN`` the gateway was configured with.
    """
    env = {**_child_env(), "ACME_GATEWAY_ADMIN_LISTEN": issued.admin_endpoint}
    for extra in ([], ["--ready"]):
        result = subprocess.run([*gateway_command(), "healthcheck", *extra], env=env,
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
    assert fetch(issued.admin + "/readyz")[0] == 200
