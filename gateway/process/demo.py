"""
``acme-gateway demo``: the whole picture on one machine, on loopback.

It starts Debian's Pebble as the upstream ACME v2 CA (with a loopback DNS
server so Pebble can validate any name against 127.0.0.1), creates an
account key in a demo key store, and runs the gateway in front of Pebble
with SQLite state — the same ``serve`` code path as production.  To show a
*migrating* client, it also leaves behind a certbot configuration that
already holds that account (as a certbot that registered at the old v1 CA
would), and prints the one-line certbot command that gets a certificate
through the gateway, then the one that renews it.

One demo per work directory: a second one refuses to start rather than
rewrite the running one's Pebble configuration (``--workdir`` gives it a
directory of its own).
"""

from __future__ import annotations

import fcntl
import json
import os
import ssl
import subprocess
import sys
import urllib.request
from typing import IO, List, Optional

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from gateway.clients import certbot as certbot_layout
from gateway.process.devstack import (
    PEBBLE_BINARY,
    PEBBLE_QUIET_ENV,
    LoopbackZone,
    listen_dns,
    make_tls_certificates,
    pebble_command,
    pebble_config,
)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _account_key(keys_dir: str):
    """
    The demo account key: created once, kept (mode 0600) across runs.
    """
    os.makedirs(keys_dir, mode=0o700, exist_ok=True)
    path = os.path.join(keys_dir, "demo-account.pem")
    if os.path.exists(path):
        with open(path, "rb") as f:
            return serialization.load_pem_private_key(f.read(), None), path
    key = rsa.generate_private_key(65537, 2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as f:
        f.write(pem)
    return key, path


#: The lock file a running demo holds in its work directory.
LOCK_NAME = "demo.lock"


def lock_workdir(workdir: str) -> Optional[IO[str]]:
    """
    Hold the work directory's lock for as long as the returned file stays
    open (the system drops it when the process ends, however it ends), or
    `None` when another running demo holds it.  The lock file names the
    holder's process id.
    """
    lock = open(os.path.join(workdir, LOCK_NAME), "a+")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        lock.close()
        return None
    lock.seek(0)
    lock.truncate()
    lock.write(f"{os.getpid()}\n")
    lock.flush()
    return lock


def _holder(workdir: str) -> str:
    try:
        with open(os.path.join(workdir, LOCK_NAME)) as f:
            pid = f.read().strip()
    except OSError:
        pid = ""
    return f" (pid {pid})" if pid.isdigit() else ""


def banner(workdir: str, upstream: str, base: str, key_path: str, certbot: str,
           certbot_dir: str, http01_port: int) -> str:
    """
    What the demo prints once it runs: where everything is, the certbot
    command that gets a certificate through the gateway, the one that
    renews it, and where certbot 1.32 hides the gateway's errors.
    """
    dirs = (f"--config-dir {certbot_dir}/config --work-dir {certbot_dir}/work "
            f"--logs-dir {certbot_dir}/logs")
    return (
        "\n"
        f"acme-gateway demo is running (Ctrl-C stops it; files in {workdir}).\n"
        f"  upstream ACME v2 CA (Pebble): {upstream}\n"
        f"  v1 directory for legacy clients: {base}/directory\n"
        f"  account key in the key store: {key_path}\n"
        "\n"
        "Get a certificate with certbot 1.32 speaking ACME v1, using its existing account:\n"
        f"  {certbot} certonly --non-interactive --server {base}/directory {dirs} "
        f"--standalone --http-01-address 127.0.0.1 --http-01-port {http01_port} "
        f"-d demo.example.test\n"
        "\n"
        "Renew it as cron would (the server comes from certbot's renewal file; without\n"
        "--no-random-sleep-on-renew a non-interactive renew first sleeps up to 8 minutes):\n"
        f"  {certbot} renew --non-interactive --no-random-sleep-on-renew --force-renewal {dirs}\n"
        "(this Pebble reuses no authorization, as a CA need not: each renewal gets a fresh\n"
        "order from the gateway and certbot validates the name again, as often as you like.)\n"
        "\n"
        "If certbot says \"An unexpected error occurred: AttributeError: can't set attribute\",\n"
        "that is certbot 1.32 on Python 3.11 hiding the gateway's error: read it in\n"
        f"{certbot_dir}/logs/letsencrypt.log (the acme.messages.Error line), in this\n"
        "window (the request's log line), or with certbot --debug.\n"
    )


def run_demo(workdir: str, port: int, http01_port: int, certbot: Optional[str]) -> int:
    """
    Start Pebble, the DNS server and the gateway; block until interrupted.
    """
    from gateway.keys.keystore import KeyStore
    from gateway.operations.logs import start_logging
    from gateway.process import serve
    from gateway.process.wiring import ServeConfig

    if not os.path.exists(PEBBLE_BINARY):
        print("acme-gateway demo: Debian's pebble is not installed (apt-get install pebble)",
              file=sys.stderr)
        return 1
    workdir = os.path.abspath(workdir)
    os.makedirs(workdir, exist_ok=True)
    lock = lock_workdir(workdir)
    if lock is None:
        print(f"acme-gateway demo: another demo is running in {workdir}{_holder(workdir)}; "
              f"stop it (Ctrl-C), or give this one a directory of its own with --workdir DIR "
              f"(and other ports with --port and --http01-port)", file=sys.stderr)
        return 1
    tls = make_tls_certificates(os.path.join(workdir, "pebble-tls"))
    key, key_path = _account_key(os.path.join(workdir, "keys"))
    base = f"http://127.0.0.1:{port}"
    certbot_dir = os.path.join(workdir, "certbot")
    certbot_layout.write_account(
        os.path.join(certbot_dir, "config"), f"{base}/directory", key,
        regr_uri=f"{base}/acme/reg/1",
    )
    pebble_port, management_port = _free_port(), _free_port()
    upstream = f"https://localhost:{pebble_port}/dir"
    config = ServeConfig(
        upstream=upstream,
        keys=os.path.dirname(key_path),
        upstream_ca_bundle=tls["ca"],
        state=os.path.join(workdir, "acme-gateway.sqlite3"),
        listen=f"tcp:{port}:interface=127.0.0.1",
    )
    keys = KeyStore.load(config.keys)
    serve.report_key_store(keys)
    start_logging("text")
    pebble: List[subprocess.Popen] = []

    def stop_pebble() -> None:
        for process in pebble:
            if process.poll() is None:
                process.terminate()
                process.wait(10)

    async def main(reactor) -> None:
        from twisted.internet import defer
        from twisted.internet.task import deferLater

        reactor.addSystemEventTrigger("after", "shutdown", stop_pebble)
        zone = LoopbackZone()
        udp, tcp = listen_dns(reactor, zone)
        dns_address = f"127.0.0.1:{udp.getHost().port}"
        config_path = os.path.join(workdir, "pebble.json")
        with open(config_path, "w") as f:
            json.dump(pebble_config(pebble_port, management_port, http01_port, _free_port(), tls),
                      f)
        env = {k: v for k, v in os.environ.items() if not k.startswith("PEBBLE_")}
        env.update(PEBBLE_QUIET_ENV)
        with open(os.path.join(workdir, "pebble.log"), "wb") as pebble_log:
            pebble.append(subprocess.Popen(pebble_command(config_path, dns_address), env=env,
                                           stdout=pebble_log, stderr=subprocess.STDOUT))
        # Pebble answers within a second; the gateway tolerates a late CA.
        for _ in range(100):
            if pebble[0].poll() is not None:
                break
            try:
                context = ssl.create_default_context(cafile=tls["ca"])
                urllib.request.urlopen(upstream, context=context, timeout=1).read()
                break
            except OSError:
                await deferLater(reactor, 0.1, lambda: None)
        if pebble[0].poll() is not None:
            print(f"acme-gateway demo: pebble exited; see {workdir}/pebble.log", file=sys.stderr)
            raise SystemExit(1)
        try:
            running = await serve.start(reactor, config, keys)
        except Exception as error:
            hint = ""
            if isinstance(error, serve.StartError) and error.flag == "--listen":
                hint = " (give the demo another port with --port)"
            print(f"acme-gateway demo: cannot start the gateway: {error}{hint}", file=sys.stderr)
            raise SystemExit(1)
        serve.stop_at_shutdown(reactor, running)
        print(banner(workdir, upstream, base, key_path, certbot or "certbot", certbot_dir,
                     http01_port), file=sys.stderr, flush=True)
        await defer.Deferred()  # until Ctrl-C

    try:
        return serve.run(main)
    finally:
        stop_pebble()
        lock.close()
