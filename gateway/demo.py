"""
``acme-gateway demo``: the whole picture on one machine, on loopback.

It starts Debian's Pebble as the upstream ACME v2 CA (with a loopback DNS
server so Pebble can validate any name against 127.0.0.1), creates an
account key in a demo key store, and runs the gateway in front of Pebble
with SQLite state — the same ``serve`` code path as production.  To show a
*migrating* client, it also leaves behind a certbot configuration that
already holds that account (as a certbot that registered at the old v1 CA
would), and prints the one-line certbot command that gets a certificate
through the gateway.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Optional

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from gateway.clients import certbot as certbot_layout
from gateway.devstack import (
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


def run_demo(workdir: str, port: int, http01_port: int, certbot: Optional[str]) -> int:
    """
    Start Pebble, the DNS server and the gateway; block until interrupted.
    """
    from twisted.internet import defer, reactor
    from twisted.logger import globalLogBeginner, textFileLogObserver

    from gateway import service
    from gateway.keystore import KeyStore

    if not os.path.exists(PEBBLE_BINARY):
        print("acme-gateway demo: Debian's pebble is not installed (apt-get install pebble)",
              file=sys.stderr)
        return 1
    workdir = os.path.abspath(workdir)
    os.makedirs(workdir, exist_ok=True)
    zone = LoopbackZone()
    udp, tcp = listen_dns(reactor, zone)
    dns_address = f"127.0.0.1:{udp.getHost().port}"

    tls = make_tls_certificates(os.path.join(workdir, "pebble-tls"))
    pebble_port, management_port = _free_port(), _free_port()
    config_path = os.path.join(workdir, "pebble.json")
    with open(config_path, "w") as f:
        json.dump(pebble_config(pebble_port, management_port, http01_port, _free_port(), tls), f)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PEBBLE_")}
    env.update(PEBBLE_QUIET_ENV)
    pebble_log = open(os.path.join(workdir, "pebble.log"), "wb")
    pebble = subprocess.Popen(pebble_command(config_path, dns_address), env=env,
                              stdout=pebble_log, stderr=subprocess.STDOUT)
    upstream = f"https://localhost:{pebble_port}/dir"

    key, key_path = _account_key(os.path.join(workdir, "keys"))
    base = f"http://127.0.0.1:{port}"
    certbot_dir = os.path.join(workdir, "certbot")
    certbot_layout.write_account(
        os.path.join(certbot_dir, "config"), f"{base}/directory", key,
        regr_uri=f"{base}/acme/reg/1",
    )
    config = service.ServeConfig(
        upstream=upstream,
        keys=os.path.dirname(key_path),
        upstream_ca_bundle=tls["ca"],
        state=os.path.join(workdir, "acme-gateway.sqlite3"),
        listen=f"tcp:{port}:interface=127.0.0.1",
    )
    keys = KeyStore.load(config.keys)
    service.report_key_store(keys)
    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stdout)], redirectStandardIO=False)
    outcome = {"code": 0}

    def stop_pebble():
        if pebble.poll() is None:
            pebble.terminate()
            pebble.wait(10)

    async def begin():
        from twisted.internet.task import deferLater

        # Pebble answers within a second; the gateway tolerates a late CA.
        for _ in range(100):
            if pebble.poll() is not None:
                break
            try:
                import ssl
                import urllib.request

                context = ssl.create_default_context(cafile=tls["ca"])
                urllib.request.urlopen(upstream, context=context, timeout=1).read()
                break
            except OSError:
                await deferLater(reactor, 0.1, lambda: None)
        if pebble.poll() is not None:
            print(f"acme-gateway demo: pebble exited; see {workdir}/pebble.log", file=sys.stderr)
            outcome["code"] = 1
            reactor.stop()
            return
        try:
            running = await service.start(reactor, config, keys)
        except Exception as error:
            print(f"acme-gateway demo: cannot start the gateway: {error}", file=sys.stderr)
            outcome["code"] = 1
            reactor.stop()
            return
        reactor.addSystemEventTrigger("before", "shutdown",
                                      lambda: defer.Deferred.fromCoroutine(running.stop()))
        certbot_command = certbot or "certbot"
        print(
            "\n"
            f"acme-gateway demo is running (Ctrl-C stops it; files in {workdir}).\n"
            f"  upstream ACME v2 CA (Pebble): {upstream}\n"
            f"  v1 directory for legacy clients: {base}/directory\n"
            f"  account key in the key store: {key_path}\n"
            "\n"
            "Get a certificate with certbot 1.32 speaking ACME v1, using its existing account:\n"
            f"  {certbot_command} certonly --non-interactive --server {base}/directory "
            f"--config-dir {certbot_dir}/config --work-dir {certbot_dir}/work "
            f"--logs-dir {certbot_dir}/logs --standalone --http-01-address 127.0.0.1 "
            f"--http-01-port {http01_port} -d demo.example.test\n"
            "\n"
            "Renew it, as cron would, as often as you like (this Pebble reuses no "
            "authorization, so each renewal validates again):\n"
            f"  {certbot_command} renew --force-renewal --no-random-sleep-on-renew --non-interactive "
            f"--config-dir {certbot_dir}/config --work-dir {certbot_dir}/work "
            f"--logs-dir {certbot_dir}/logs\n",
            file=sys.stderr,
            flush=True,
        )

    reactor.addSystemEventTrigger("after", "shutdown", stop_pebble)
    reactor.callWhenRunning(lambda: defer.Deferred.fromCoroutine(begin()))
    try:
        reactor.run()
    finally:
        stop_pebble()
    return outcome["code"]
