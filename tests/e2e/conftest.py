"""
Fixtures of the end-to-end tests: gateway processes started through the
command line, stopped (and their output shown) when each test ends, and the
test's own Pebble under each kind of noise Pebble makes (`NOISE`).
"""

import os

import attrs
import pytest

from tests.support.gateway_process import GatewayProcess
from tests.support.stack import REPO_ROOT, free_port


@pytest.fixture
def gateways(tmp_path):
    """
    ``gateways(pebble, keys_dir)`` starts an ``acme-gateway serve`` process
    (``start=False``: only prepares one, whose ``url`` is already known);
    every one is stopped when the test ends, and its output is printed (so a
    failing test shows it).
    """
    started = []

    def make(pebble, keys_dir, start=True, **kwargs):
        os.makedirs(keys_dir, exist_ok=True)
        workdir = tmp_path / f"gateway-{len(started)}"
        process = GatewayProcess(str(workdir), pebble, keys_dir, **kwargs)
        started.append(process)
        return process.start() if start else process

    yield make
    for process in started:
        process.stop()
        print(f"--- acme-gateway output ({process.log_path}) ---\n{process.log()}")


# --------------------------------------------------------------------------
# Pebble's noise: authorization reuse and nonce rejection
# --------------------------------------------------------------------------

@attrs.frozen
class Noise:
    """
    How a test's Pebble behaves: how often it reuses a valid authorization
    in a new order (``PEBBLE_AUTHZREUSE``, percent) and rejects a good nonce
    (``PEBBLE_WFE_NONCEREJECT``).  ``PEBBLE_VA_NOSLEEP=1`` stays on (Pebble's
    random 0–15 s validation delays would only make the suite slow).
    """

    name: str
    authz_reuse: int
    nonce_reject: int

    @property
    def env(self) -> dict:
        return {"PEBBLE_AUTHZREUSE": str(self.authz_reuse),
                "PEBBLE_WFE_NONCEREJECT": str(self.nonce_reject)}

    @property
    def always_reuses(self) -> bool:
        """
        Whether a multi-name flow can do without a means: the order
        ``new-cert`` finalizes is ready only when the CA reuses the
        authorizations the client validated through ``new-authz``.
        """
        return self.authz_reuse >= 100


#: The noise the e2e tier runs under: reuse always (as Let's Encrypt within
#: its reuse window), never (outside it; Pebble still reuses 1 % of the
#: time), and Pebble's own defaults (5 % nonces rejected, 50 % reuse).
NOISE = (
    Noise("reuse-100", 100, 0),
    Noise("reuse-0", 0, 0),
    Noise("pebble-defaults", 50, 5),
)


@pytest.fixture(params=NOISE, ids=[n.name for n in NOISE])
def noise(request) -> Noise:
    return request.param


@pytest.fixture
def upstream(pebble_factory, noise):
    """
    A Pebble of the test's own under each `Noise` in turn; nothing listens
    on its http-01 port (``http_port``) yet.  ``upstream.noise`` says which.
    """
    pebble = pebble_factory(env=noise.env, http_port=free_port())
    pebble.noise = noise
    return pebble


#: The gateway's --dns01-hook script of the tests (it publishes in the test
#: DNS server through its API).
DNS01_HOOK = os.path.join(REPO_ROOT, "tests", "support", "hooks", "gateway-dns01-hook.sh")


def multi_name_means(pebble, dns_server, workdir, kind: str = "dns-01") -> list:
    """
    The gateway flags a multi-name flow needs when ``pebble`` may not reuse
    authorizations (none otherwise): its dns-01 hook into the test DNS
    server, or (``kind="http-01"``) its HTTP-01 responder on Pebble's
    validation port, for tests where nothing else listens there.
    """
    if pebble.noise.always_reuses:
        return []
    if kind == "http-01":
        return ["--http01-listen", f"tcp:{pebble.http_port}:interface=127.0.0.1"]
    return ["--dns01-hook", f"{DNS01_HOOK} {dns_server.api_url} {os.path.join(str(workdir), 'dns01-hook.log')}"]


def assert_means_used_as_needed(gateway, pebble) -> None:
    """
    Without reuse the gateway revalidated (the means was needed and used);
    with reuse always it never did.  Under Pebble's defaults either may be.
    """
    if pebble.noise.authz_reuse == 0:
        assert "revalidating" in gateway.log()
    elif pebble.noise.always_reuses:
        assert "revalidating" not in gateway.log()
