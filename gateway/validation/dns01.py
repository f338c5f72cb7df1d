"""
DNS-01 responders: an operator hook command (``--dns01-hook``) or RFC 2136
dynamic updates signed with TSIG (``--dns01-rfc2136``).

Both publish ``_acme-challenge.<name>`` TXT = base64url(SHA-256(key
authorization)), wait a configurable propagation time, and remove exactly
that value afterwards (a base domain and its wildcard put two values on the
same name at once).
"""

from __future__ import annotations

import os
import shlex
from typing import Any, Optional, Sequence

import attrs
from twisted.internet import threads
from twisted.internet.task import deferLater
from twisted.internet.utils import getProcessOutputAndValue
from twisted.logger import Logger
from zope.interface import implementer

from gateway.keys.jose import dns01_txt_value
from gateway.validation.interfaces import IResponder

log = Logger()


class ResponderError(Exception):
    """
    A responder could not provision (or remove) a challenge.
    """


def record_name(name: str) -> str:
    """
    The TXT record name for DNS ``name`` (absolute, trailing dot).
    """
    return f"_acme-challenge.{name.rstrip('.')}."


@implementer(IResponder)
@attrs.define
class HookDNS01Responder:
    """
    Runs ``command deploy <domain> <txt value>`` and, afterwards,
    ``command cleanup <domain> <txt value>``, with the variables certbot's
    manual hooks get (``CERTBOT_DOMAIN``, ``CERTBOT_VALIDATION``), so hooks
    written for certbot work unchanged.

    :ivar command: the hook command line (split with shell rules, not run
        through a shell).
    :ivar propagation_seconds: wait after a successful deploy, before the
        CA is told to validate.
    """

    reactor: Any
    command: str
    propagation_seconds: float = 0.0
    timeout_seconds: float = 120.0
    challenge_type: str = attrs.field(default="dns-01", init=False)

    def _argv(self) -> list:
        argv = shlex.split(self.command)
        if not argv:
            raise ResponderError("--dns01-hook is empty")
        return argv

    async def _run(self, action: str, name: str, value: str) -> None:
        argv = self._argv()
        env = dict(os.environ)
        env.update(
            CERTBOT_DOMAIN=name,
            CERTBOT_VALIDATION=value,
            ACME_GATEWAY_DNS01_ACTION=action,
            ACME_GATEWAY_DNS01_RECORD=record_name(name),
        )
        try:
            run = getProcessOutputAndValue(
                argv[0], argv[1:] + [action, name, value], env=env, reactor=self.reactor
            )
            run.addTimeout(self.timeout_seconds, self.reactor)
            out, err, code = await run
        except Exception as error:
            raise ResponderError(f"dns-01 hook {action} for {name} did not run: {error}")
        if code != 0:
            text = (err or out).decode("utf-8", "replace").strip()[-500:]
            raise ResponderError(f"dns-01 hook {action} for {name} exited {code}: {text}")
        log.info("dns-01 hook {action} for {name} succeeded", action=action, name=name)

    async def publish(self, name: str, token: str, key_authorization: str) -> None:
        await self._run("deploy", name, dns01_txt_value(key_authorization))
        if self.propagation_seconds > 0:
            await deferLater(self.reactor, self.propagation_seconds, lambda: None)

    async def withdraw(self, name: str, token: str, key_authorization: str) -> None:
        await self._run("cleanup", name, dns01_txt_value(key_authorization))


@attrs.frozen
class TSIGKey:
    """
    A TSIG key for RFC 2136 updates.  The secret is base64, as BIND's
    ``tsig-keygen`` prints it; it never appears in a repr.
    """

    name: str
    secret: str = attrs.field(repr=False)
    algorithm: str = "hmac-sha256"


@implementer(IResponder)
@attrs.define
class RFC2136DNS01Responder:
    """
    Adds and deletes the TXT record with RFC 2136 UPDATE messages, signed
    with TSIG, sent to ``server`` (``host``, ``port``).  The zone is the one
    configured, else found by asking the server for the SOA of the name and
    its parents.  dnspython does the wire work, on a thread.
    """

    reactor: Any
    host: str
    port: int
    key: Optional[TSIGKey] = None
    zone: Optional[str] = None
    propagation_seconds: float = 0.0
    ttl: int = 60
    timeout_seconds: float = 10.0
    challenge_type: str = attrs.field(default="dns-01", init=False)

    def _keyring(self):
        import dns.name
        import dns.tsigkeyring

        if self.key is None:
            return None, None
        keyring = dns.tsigkeyring.from_text({self.key.name: self.key.secret})
        return keyring, dns.name.from_text(self.key.algorithm)

    def _find_zone(self, name: str) -> str:
        import dns.message
        import dns.name
        import dns.query
        import dns.rdatatype

        if self.zone:
            return self.zone.rstrip(".") + "."
        candidate = dns.name.from_text(name)
        while len(candidate.labels) > 1:
            query = dns.message.make_query(candidate, dns.rdatatype.SOA)
            response = dns.query.udp(query, self.host, port=self.port, timeout=self.timeout_seconds)
            for rrset in response.answer:
                if rrset.rdtype == dns.rdatatype.SOA:
                    return rrset.name.to_text()
            candidate = candidate.parent()
        raise ResponderError(f"no zone found for {name} at {self.host}:{self.port}")

    def _update(self, name: str, value: str, add: bool) -> None:
        import dns.query
        import dns.rcode
        import dns.update

        zone = self._find_zone(name)
        keyring, algorithm = self._keyring()
        update = dns.update.UpdateMessage(zone, keyring=keyring, keyalgorithm=algorithm) \
            if keyring else dns.update.UpdateMessage(zone)
        record = record_name(name)
        quoted = f'"{value}"'
        if add:
            update.add(record, self.ttl, "TXT", quoted)
        else:
            update.delete(record, "TXT", quoted)
        response = dns.query.tcp(update, self.host, port=self.port, timeout=self.timeout_seconds)
        if response.rcode() != dns.rcode.NOERROR:
            raise ResponderError(
                f"RFC 2136 update of {record} refused by {self.host}:{self.port}: "
                f"{dns.rcode.to_text(response.rcode())}"
            )

    async def publish(self, name: str, token: str, key_authorization: str) -> None:
        value = dns01_txt_value(key_authorization)
        try:
            await threads.deferToThreadPool(self.reactor, self.reactor.getThreadPool(),
                                            self._update, name, value, True)
        except ResponderError:
            raise
        except Exception as error:
            raise ResponderError(f"RFC 2136 update for {name} failed: {error}")
        if self.propagation_seconds > 0:
            await deferLater(self.reactor, self.propagation_seconds, lambda: None)

    async def withdraw(self, name: str, token: str, key_authorization: str) -> None:
        value = dns01_txt_value(key_authorization)
        try:
            await threads.deferToThreadPool(self.reactor, self.reactor.getThreadPool(),
                                            self._update, name, value, False)
        except ResponderError:
            raise
        except Exception as error:
            raise ResponderError(f"RFC 2136 cleanup for {name} failed: {error}")


def parse_host_port(text: str, default_port: int = 53) -> tuple:
    """
    ``HOST:PORT`` (``[v6]:PORT`` for IPv6) → ``(host, port)``.

    :raises ValueError: on anything else.
    """
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest.lstrip(":") or str(default_port)
    elif text.count(":") == 1:
        host, port = text.split(":")
    else:
        host, port = text, str(default_port)
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    return host, int(port)


def responders_by_type(responders: Sequence[Any]) -> dict:
    """
    The first configured responder of each challenge type.
    """
    chosen: dict = {}
    for responder in responders:
        chosen.setdefault(responder.challenge_type, responder)
    return chosen
