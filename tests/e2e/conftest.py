"""
Fixtures of the end-to-end tests: gateway processes started through the
command line, stopped (and their output shown) when each test ends.
"""

import os

import pytest

from tests.support.gateway_process import GatewayProcess


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
