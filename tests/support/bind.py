"""
Debian's BIND 9 (``named``) as a real authoritative DNS server that accepts
RFC 2136 updates signed with TSIG, on loopback, for the gateway's
``--dns01-rfc2136`` tests.

It serves one zone in which every name resolves to 127.0.0.1 (so Pebble,
pointed at it with ``-dnsserver``, reaches http-01 responders on loopback),
and lets the holder of one TSIG key update it.
"""

from __future__ import annotations

import base64
import os
import secrets
import shutil
import subprocess
import time
from typing import Optional

from tests.support.stack import free_port

NAMED = shutil.which("named") or "/usr/sbin/named"

ZONE_FILE = """$TTL 60
@   IN SOA ns.{zone}. hostmaster.{zone}. (1 60 60 600 60)
    IN NS  ns.{zone}.
@   IN A   127.0.0.1
*   IN A   127.0.0.1
ns  IN A   127.0.0.1
"""

CONFIG = """options {{
    directory "{workdir}";
    pid-file "{workdir}/named.pid";
    listen-on port {port} {{ 127.0.0.1; }};
    listen-on-v6 {{ none; }};
    recursion no;
    dnssec-validation no;
    notify no;
    allow-query {{ 127.0.0.1; }};
}};
controls {{ }};
key "{key_name}" {{
    algorithm {algorithm};
    secret "{secret}";
}};
zone "{zone}" {{
    type primary;
    file "{workdir}/{zone}.db";
    journal "{workdir}/{zone}.jnl";
    allow-update {{ key "{key_name}"; }};
}};
"""


class BindServer:
    """
    ``named -g`` in the foreground as a child process, stopped by its PID.
    """

    def __init__(self, workdir: str, zone: str = "rfc2136.test", key_name: str = "gateway-key",
                 algorithm: str = "hmac-sha256"):
        self.workdir = os.path.abspath(workdir)
        self.zone = zone
        self.key_name = key_name
        self.algorithm = algorithm
        self.secret = base64.b64encode(secrets.token_bytes(32)).decode("ascii")
        self.port = free_port()
        self.process: Optional[subprocess.Popen] = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _answers(self) -> bool:
        import dns.message
        import dns.query

        try:
            query = dns.message.make_query(self.zone, "SOA")
            response = dns.query.udp(query, "127.0.0.1", port=self.port, timeout=0.5)
            return bool(response.answer)
        except Exception:
            return False

    def start(self) -> "BindServer":
        os.makedirs(self.workdir, exist_ok=True)
        with open(os.path.join(self.workdir, f"{self.zone}.db"), "w") as f:
            f.write(ZONE_FILE.format(zone=self.zone))
        config = os.path.join(self.workdir, "named.conf")
        with open(config, "w") as f:
            f.write(CONFIG.format(workdir=self.workdir, port=self.port, key_name=self.key_name,
                                  algorithm=self.algorithm, secret=self.secret, zone=self.zone))
        self.log_path = os.path.join(self.workdir, "named.log")
        self.process = subprocess.Popen(
            [NAMED, "-g", "-4", "-c", config, "-n", "1"],
            stdout=open(self.log_path, "wb"),
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 20
        while not self._answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                with open(self.log_path, errors="replace") as f:
                    raise RuntimeError("named did not start:\n" + f.read()[-3000:])
            time.sleep(0.1)
        return self

    def txt(self, name: str) -> list:
        """
        The TXT values at ``name`` right now, as the server answers.
        """
        import dns.message
        import dns.query

        query = dns.message.make_query(name, "TXT")
        response = dns.query.udp(query, "127.0.0.1", port=self.port, timeout=2)
        values = []
        for rrset in response.answer:
            for record in rrset:
                values.extend(s.decode() for s in record.strings)
        return values

    def stop(self):
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
