"""
Debian's nginx as a test web server: one instance per test, with its own
prefix, configuration, pid file, logs and temporary paths in a directory of
its own, serving one HTTPS site on a loopback port -- never the system
service.

The site is what a machine whose certbot nginx plugin answers tls-sni-01
runs: ``server_name NAME`` with ``listen 127.0.0.1:PORT ssl`` and a
certificate from an earlier issuance.  certbot's plugin copies that
``listen`` address into its challenge server block, so the challenge stays
on loopback.  The plugin edits ``nginx.conf`` (an ``include`` of its
challenge file) and reloads nginx with ``nginx -c <nginx.conf> -s reload``,
which signals the PID in this configuration's pid file: the process started
here, in the foreground (``daemon off`` on the command line only).
"""

from __future__ import annotations

import datetime
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from typing import Optional

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def nginx_binary() -> Optional[str]:
    """Debian's nginx, or ``None`` when it is not installed."""
    found = shutil.which("nginx") or "/usr/sbin/nginx"
    return found if os.path.exists(found) else None


def _self_signed(name: str, cert_path: str, key_path: str) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .sign(key, hashes.SHA256()))
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))


class NginxSite:
    """
    nginx serving ``server_name`` over HTTPS on 127.0.0.1:``port``, from
    ``directory`` (its ``--nginx-server-root`` for certbot).
    """

    def __init__(self, directory: str, server_name: str, port: int):
        self.directory = os.path.abspath(directory)
        self.server_name = server_name
        self.port = port
        self.conf_path = os.path.join(self.directory, "nginx.conf")
        self.error_log = os.path.join(self.directory, "error.log")
        self.process: Optional[subprocess.Popen] = None

    def write_config(self) -> None:
        d = self.directory
        os.makedirs(os.path.join(d, "tmp"), exist_ok=True)
        os.makedirs(os.path.join(d, "html"), exist_ok=True)
        _self_signed(self.server_name, os.path.join(d, "site.crt"), os.path.join(d, "site.key"))
        with open(self.conf_path, "w") as f:
            f.write(f"""# written by tests/support/nginx.py
pid {d}/nginx.pid;
error_log {self.error_log} notice;
worker_processes 1;
events {{
    worker_connections 64;
}}
http {{
    access_log {d}/access.log;
    client_body_temp_path {d}/tmp/body;
    proxy_temp_path {d}/tmp/proxy;
    fastcgi_temp_path {d}/tmp/fastcgi;
    uwsgi_temp_path {d}/tmp/uwsgi;
    scgi_temp_path {d}/tmp/scgi;
    server {{
        listen 127.0.0.1:{self.port} ssl;
        server_name {self.server_name};
        ssl_certificate {d}/site.crt;
        ssl_certificate_key {d}/site.key;
        root {d}/html;
    }}
}}
""")

    def start(self) -> "NginxSite":
        binary = nginx_binary()
        if binary is None:
            raise RuntimeError("Debian's nginx is not installed: run ./scripts/setup")
        self.write_config()
        self.process = subprocess.Popen(
            [binary, "-p", self.directory + "/", "-c", self.conf_path, "-e", self.error_log,
             "-g", "daemon off;"],
            stdin=subprocess.DEVNULL, stdout=open(os.path.join(self.directory, "nginx.out"), "wb"),
            stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"nginx did not start:\n{self.log_tail()}")
            time.sleep(0.05)

    def log_tail(self, lines: int = 40) -> str:
        text = ""
        for path in (os.path.join(self.directory, "nginx.out"), self.error_log):
            if os.path.exists(path):
                with open(path, errors="replace") as f:
                    text += f"--- {path} ---\n" + "".join(f.readlines()[-lines:])
        return text

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGQUIT)      # graceful: the master stops its workers
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


#: The compose example's balancer: round robin over the gateway replicas.
BALANCER_CONF = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "deploy", "compose", "balancer.conf")


class NginxBalancer:
    """
    Debian's nginx running deploy/compose/balancer.conf in front of
    ``backends`` (``host:port``): its upstream ``gateway`` (every replica, as
    compose's DNS names them) becomes the backends, its port a loopback
    one.  The replica tests and the benchmark's replica section use it, so
    the example's configuration is the one measured.
    """

    def __init__(self, directory: str, port: int, backends: "list[str]"):
        self.directory = os.path.abspath(directory)
        self.port = port
        with open(BALANCER_CONF) as f:
            site = f.read()
        site, servers = re.subn(r"^(\s*)server gateway:\d+;",
                                lambda m: "".join(f"{m[1]}server {b};" for b in backends),
                                site, flags=re.M)
        site, listens = re.subn(r"^(\s*)listen \d+;", rf"\1listen 127.0.0.1:{port};",
                                site, flags=re.M)
        if servers != 1 or listens != 1:
            raise RuntimeError(f"{BALANCER_CONF}: its upstream or listen line changed shape")
        d = self.directory
        os.makedirs(os.path.join(d, "tmp"), exist_ok=True)
        self.conf_path = os.path.join(d, "nginx.conf")
        self.error_log = os.path.join(d, "error.log")
        with open(self.conf_path, "w") as f:
            f.write(f"# written by tests/support/nginx.py from {BALANCER_CONF}\n"
                    f"pid {d}/nginx.pid;\nerror_log {self.error_log} notice;\n"
                    f"worker_processes 1;\nevents {{ worker_connections 512; }}\n"
                    f"http {{\n    access_log off;\n"
                    f"    client_body_temp_path {d}/tmp/body;\n    proxy_temp_path {d}/tmp/proxy;\n"
                    f"    fastcgi_temp_path {d}/tmp/fastcgi;\n    uwsgi_temp_path {d}/tmp/uwsgi;\n"
                    f"    scgi_temp_path {d}/tmp/scgi;\n{site}\n}}\n")
        self.process: Optional[subprocess.Popen] = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "NginxBalancer":
        binary = nginx_binary()
        if binary is None:
            raise RuntimeError("Debian's nginx is not installed: run ./scripts/setup")
        self.process = subprocess.Popen(
            [binary, "-p", self.directory + "/", "-c", self.conf_path, "-e", self.error_log,
             "-g", "daemon off;"],
            stdin=subprocess.DEVNULL, stdout=open(os.path.join(self.directory, "nginx.out"), "wb"),
            stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                with open(self.error_log, errors="replace") if os.path.exists(self.error_log) \
                        else open(os.devnull) as f:
                    raise RuntimeError(f"nginx did not start:\n{f.read()[-4000:]}")
            time.sleep(0.05)

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGQUIT)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
