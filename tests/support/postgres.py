"""
A throwaway PostgreSQL cluster for the tests: Debian's ``postgresql``
binaries (installed by ``scripts/setup``), a fresh ``initdb`` in a temporary
directory, listening on a free loopback port (and a Unix socket in its own
directory), with password authentication (SCRAM) for the gateway's role.

PostgreSQL refuses to run as root, and the suite runs as root in CI: the
cluster then belongs to, and runs as, the unprivileged ``postgres`` system
user that Debian's package creates (through ``runuser``); as any other user
it runs as that user.  The server process is stopped by ``pg_ctl stop`` on
its own data directory, nothing else.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
import time
from typing import List, Optional

from tests.support.stack import free_port

#: The role the gateway logs in as, and the password the tests give it.
GATEWAY_ROLE = "gateway"


def postgres_bin() -> Optional[str]:
    """
    The newest ``/usr/lib/postgresql/<version>/bin`` holding ``initdb``.
    """
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)
    return os.path.dirname(found[-1]) if found else None


class PostgresCluster:
    """
    One running cluster; `create_database` gives each test a database of
    its own.

    :param durable: keep ``fsync`` on (the benchmark); the tests turn it
        off, since nothing they test survives a power loss anyway.
    """

    def __init__(self, durable: bool = False) -> None:
        bindir = postgres_bin()
        if bindir is None:
            raise RuntimeError("PostgreSQL is not installed: run scripts/setup (apt postgresql)")
        self.bindir = bindir
        self.durable = durable
        self.port = free_port()
        self.password = secrets.token_urlsafe(12)
        self.root = tempfile.mkdtemp(prefix="acme-gateway-pg-")
        os.chmod(self.root, 0o755)
        self.data = os.path.join(self.root, "data")
        self.sockets = os.path.join(self.root, "sockets")
        self.log_path = os.path.join(self.root, "postgres.log")
        self._user = "postgres" if os.geteuid() == 0 else None
        self._databases = 0
        self.running = False

    def _as_owner(self, command: List[str]) -> List[str]:
        if self._user is None:
            return command
        return ["runuser", "-u", self._user, "--", *command]

    def _run(self, *command: str, timeout: float = 120) -> str:
        result = subprocess.run(self._as_owner(list(command)), capture_output=True, text=True,
                                timeout=timeout, stdin=subprocess.DEVNULL)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed ({result.returncode}):\n"
                               f"{result.stdout}\n{result.stderr}")
        return result.stdout

    def start(self) -> "PostgresCluster":
        os.makedirs(self.sockets)
        pwfile = os.path.join(self.root, "superuser-password")
        with open(pwfile, "w") as f:
            f.write(self.password + "\n")
        if self._user is not None:
            owner = pwd.getpwnam(self._user)
            for path in (self.root, self.sockets, pwfile):
                os.chown(path, owner.pw_uid, owner.pw_gid)
        self._run(os.path.join(self.bindir, "initdb"), "-D", self.data, "-U", "postgres",
                  "--auth=scram-sha-256", f"--pwfile={pwfile}", "-E", "UTF8",
                  "--locale=C.UTF-8", "--no-instructions")
        os.unlink(pwfile)
        options = (f"-c listen_addresses=127.0.0.1 -c port={self.port} "
                   f"-c unix_socket_directories={self.sockets} -c max_connections=200 "
                   f"-c shared_buffers=64MB")
        if not self.durable:
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        self._run(os.path.join(self.bindir, "pg_ctl"), "-D", self.data, "-l", self.log_path,
                  "-o", options, "-w", "-t", "60", "start")
        self.running = True
        self.psql(f"CREATE ROLE {GATEWAY_ROLE} LOGIN PASSWORD '{self.password}'")
        return self

    def psql(self, sql: str, database: str = "postgres") -> str:
        """
        Run ``sql`` as the superuser, over the Unix socket; its output.
        """
        env = {**os.environ, "PGPASSWORD": self.password}
        result = subprocess.run(
            self._as_owner([os.path.join(self.bindir, "psql"), "-h", self.sockets,
                            "-p", str(self.port), "-U", "postgres", "-d", database,
                            "-v", "ON_ERROR_STOP=1", "-At", "-c", sql]),
            capture_output=True, text=True, timeout=60, env=env, stdin=subprocess.DEVNULL)
        if result.returncode != 0:
            raise RuntimeError(f"psql {sql!r} failed: {result.stderr}")
        return result.stdout

    def create_database(self, name: Optional[str] = None) -> str:
        """
        A new empty database owned by the gateway's role; its name.
        """
        self._databases += 1
        name = name or f"gw{self._databases}_{secrets.token_hex(3)}"
        self.psql(f"CREATE DATABASE {name} OWNER {GATEWAY_ROLE}")
        return name

    def uri(self, database: str, with_password: bool = False) -> str:
        """
        The ``--state`` URI of ``database`` on the loopback port.
        """
        secret = f":{self.password}" if with_password else ""
        return f"postgresql://{GATEWAY_ROLE}{secret}@127.0.0.1:{self.port}/{database}"

    def stop(self) -> None:
        if self.running:
            self.running = False
            try:
                self._run(os.path.join(self.bindir, "pg_ctl"), "-D", self.data, "-m", "fast",
                          "-w", "-t", "60", "stop")
            except (RuntimeError, subprocess.TimeoutExpired):
                pass
        shutil.rmtree(self.root, ignore_errors=True)

    def backends(self, database: str) -> int:
        """
        How many connections the gateway's role has open to ``database``.
        """
        return int(self.psql(
            f"SELECT count(*) FROM pg_stat_activity WHERE datname = '{database}'"
            f" AND usename = '{GATEWAY_ROLE}'").strip())

    def wait_for_backends(self, database: str, count: int, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while self.backends(database) != count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{database}: {self.backends(database)} connections, "
                                     f"expected {count}")
            time.sleep(0.1)
