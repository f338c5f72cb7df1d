"""
Fixtures shared by the whole suite: the real test stack (a loopback DNS
server and Debian's Pebble), started once per session on free ports.

Tests that need Pebble with other settings (nonce rejection, authorization
reuse) start their own through ``pebble_factory``; each is stopped by the
PID it was started with.
"""

import os
import shutil

import pytest

from tests.support.stack import DNSServer, Pebble, current_pebble, free_port


def pytest_configure(config):
    # Never let a machine-wide CA bundle override what tests choose to trust.
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE"):
        os.environ.pop(name, None)


@pytest.fixture(scope="session")
def stack_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("stack"))


@pytest.fixture(scope="session")
def dns_server(stack_dir):
    server = DNSServer(os.path.join(stack_dir, "dns")).start()
    yield server
    server.stop()


def _require_pebble():
    if shutil.which("pebble") is None and not os.path.exists("/usr/bin/pebble"):
        pytest.fail("Debian's pebble is not installed: run ./scripts/test (it installs it)")


@pytest.fixture(scope="session")
def pebble(stack_dir, dns_server):
    """
    The session's Pebble: no VA sleeps, no random nonce rejection, no
    authorization reuse.  Its http-01 port is free for a responder a test
    starts in-process.
    """
    _require_pebble()
    instance = Pebble(os.path.join(stack_dir, "pebble"), dns_server.address, http_port=free_port()).start()
    yield instance
    instance.stop()


@pytest.fixture
def pebble_factory(stack_dir, dns_server):
    """
    Start extra Pebbles with their own settings: ``pebble_factory(env={...},
    http_port=..., current=False, config=None)`` (``current=True``: today's
    Pebble instead of Debian's 2.4; ``config``: settings merged into its
    config file, such as profiles or External Account Binding); all are
    stopped when the test ends.
    """
    _require_pebble()
    started = []

    def start(env=None, http_port=None, current=False, config=None):
        instance = Pebble(
            os.path.join(stack_dir, "pebble"), dns_server.address,
            http_port=http_port or free_port(), env=env,
            binary=current_pebble() if current else None, config=config,
        ).start()
        started.append(instance)
        return instance

    yield start
    for instance in started:
        instance.stop()


@pytest.fixture(scope="session")
def postgres_cluster():
    """
    The session's throwaway PostgreSQL cluster (`tests.support.postgres`),
    started on first use.
    """
    from tests.support.postgres import PostgresCluster

    cluster = PostgresCluster().start()
    yield cluster
    cluster.stop()


@pytest.fixture
def postgres_state(postgres_cluster):
    """
    A fresh database of the session's cluster: ``(cluster, database name)``.
    """
    return postgres_cluster, postgres_cluster.create_database()
