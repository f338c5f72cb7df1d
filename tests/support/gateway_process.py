"""
The gateway as a real process, started through its command line exactly as
an operator would (``acme-gateway serve …``), for the end-to-end tests.

Synchronous and blocking like `tests.support.stack`: use it from fixtures or
plain tests, or through ``off_reactor`` from an ``async def`` test.  The
process is stopped by the PID this module started, nothing else.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from typing import Optional, Sequence

from tests.support.stack import REPO_ROOT, free_port

_READY = re.compile(r"acme-gateway: v1 directory at (\S+)")


def gateway_command() -> list:
    """
    ``<repo>/.venv/bin/acme-gateway`` when installed there, else ``python -m
    gateway`` with the interpreter running the tests.
    """
    script = os.path.join(REPO_ROOT, ".venv", "bin", "acme-gateway")
    if os.access(script, os.X_OK):
        return [script]
    return [sys.executable, "-m", "gateway"]


def _child_env() -> dict:
    """
    The test's environment without anything that could change how the
    gateway trusts Pebble or routes to it, nor ``ACME_GATEWAY_*`` defaults:
    the command line says everything.
    """
    scrubbed = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE", "SSL_CERT_DIR",
                "http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY")
    env = {k: v for k, v in os.environ.items()
           if k not in scrubbed and not k.startswith("ACME_GATEWAY_")}
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost,::1"
    return env


class GatewayProcess:
    """
    ``acme-gateway serve`` in front of ``pebble`` on a free loopback port.

    :param workdir: where the log (and, by default, the state file) go.
    :param pebble: a `tests.support.stack.Pebble` (its directory URL and CA
        bundle are the upstream settings).
    :param keys_dir: the ``--keys`` directory.
    :param state: the ``--state`` SQLite file (default
        ``workdir/state.sqlite3``) or PostgreSQL URI.
    :param extra_args: more ``serve`` arguments.
    :param port: the loopback port to listen on; by default a free one,
        chosen here so that `url` is known before `start` (a client's stored
        configuration may have to name it first).
    :ivar env: variables added to the process's scrubbed environment at
        each `start` (``ACME_GATEWAY_CRASH_AT`` for a crash test); change it
        between starts.
    """

    def __init__(self, workdir: str, pebble, keys_dir: str, state: Optional[str] = None,
                 extra_args: Sequence[str] = (), port: Optional[int] = None,
                 env: Optional[dict] = None):
        self.env = dict(env or {})
        self.workdir = os.path.abspath(workdir)
        os.makedirs(self.workdir, exist_ok=True)
        self.pebble = pebble
        self.keys_dir = os.path.abspath(keys_dir)
        # A PostgreSQL URI is passed as it is; a file path made absolute.
        self.state = (state if state and "://" in state
                      else os.path.abspath(state or os.path.join(self.workdir, "state.sqlite3")))
        self.extra_args = tuple(extra_args)
        self.port = port or free_port()
        self.process: Optional[subprocess.Popen] = None
        self.log_path = os.path.join(self.workdir, "gateway.log")
        self._announced: Optional[str] = None

    # -- addresses -------------------------------------------------------------

    @property
    def url(self) -> str:
        """The gateway's base URL (``http://127.0.0.1:<port>``)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def directory_url(self) -> str:
        return self.url + "/directory"

    # -- life cycle ------------------------------------------------------------

    def command(self) -> list:
        return [
            *gateway_command(), "serve",
            "--upstream", self.pebble.directory_url,
            "--upstream-ca-bundle", self.pebble.ca_bundle,
            "--keys", self.keys_dir,
            "--state", self.state,
            "--listen", f"tcp:{self.port}:interface=127.0.0.1",
            *self.extra_args,
        ]

    def start(self, timeout: float = 30) -> "GatewayProcess":
        """
        Start the process and return once it has announced its directory and
        the directory answers.  The port is kept across `restart`, so
        clients' stored URLs stay valid.
        """
        assert self.process is None, "already running"
        # Append: a restart keeps the earlier run's output in the log.
        with open(self.log_path, "ab") as log:
            log.write(f"\n=== {' '.join(self.command())}\n".encode())
            log.flush()
            start_offset = log.tell()
            self.process = subprocess.Popen(
                self.command(), cwd=self.workdir, env={**_child_env(), **self.env},
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                self.process = None
                raise RuntimeError(f"acme-gateway exited at start-up:\n{self.log()}")
            if self._ready(start_offset):
                return self
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"acme-gateway did not answer within {timeout}s:\n{self.log()}")
            time.sleep(0.05)

    def _ready(self, start_offset: int) -> bool:
        with open(self.log_path, "rb") as f:
            f.seek(start_offset)
            announced = _READY.search(f.read().decode("utf-8", "replace"))
        if not announced:
            return False
        self._announced = announced.group(1)
        try:
            return "new-reg" in self.directory()
        except (OSError, ValueError):
            return False

    def directory(self) -> dict:
        """The gateway's v1 directory, fetched without any proxy."""
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(self.directory_url, timeout=5) as response:
            return json.loads(response.read())

    @property
    def announced_directory(self) -> Optional[str]:
        """The directory URL the last start printed to stderr."""
        return self._announced

    def stop(self, timeout: float = 10) -> None:
        """
        Terminate the process started here (by its PID) and wait for it; kill
        it if it does not exit within ``timeout`` seconds.
        """
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def kill(self) -> int:
        """
        ``kill -9`` the process started here (by its PID), as a crash would,
        and return its exit status once it is gone.
        """
        process, self.process = self.process, None
        assert process is not None, "not running"
        process.kill()
        return process.wait()

    def wait_for_exit(self, timeout: float = 30) -> int:
        """
        Wait until the process ends by itself (a crash point) and return its
        exit status; `start` may be called again afterwards.
        """
        process, self.process = self.process, None
        assert process is not None, "not running"
        return process.wait(timeout)

    def restart(self) -> "GatewayProcess":
        """Stop, and start again on the same port with the same state file."""
        self.stop()
        return self.start()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log(self) -> str:
        """Everything the gateway printed (stdout and stderr), all runs."""
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def keys_list(self) -> str:
        """The output of ``acme-gateway keys list --keys <keys_dir>``."""
        result = subprocess.run(
            [*gateway_command(), "keys", "list", "--keys", self.keys_dir],
            env=_child_env(), stdin=subprocess.DEVNULL, capture_output=True, text=True,
            timeout=60, check=True,
        )
        return result.stdout

    def __enter__(self) -> "GatewayProcess":
        return self.start() if self.process is None else self

    def __exit__(self, *exc_info) -> None:
        self.stop()
