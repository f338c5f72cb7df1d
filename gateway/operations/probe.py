"""
``acme-gateway healthcheck``: ask the admin listener of a gateway running
beside it whether it is healthy (or ready), and exit 0 or 1.

A container image's ``HEALTHCHECK`` needs a command, and slim images have
no curl; this one derives the URL from the same ``--admin-listen`` setting
(flag, ``ACME_GATEWAY_ADMIN_LISTEN`` or config file) the gateway listens
on, so the image needs no second copy of it.
"""

from __future__ import annotations

import re
import urllib.error
import urllib.request
from typing import Optional, Tuple

_WILDCARD_HOSTS = ("", "0.0.0.0", "::", "[::]")


def url_for_endpoint(endpoint: str, path: str = "/healthz") -> str:
    """
    The URL of ``path`` on the admin listener at a Twisted ``tcp:`` server
    endpoint (``tcp:9180``, ``tcp:port=9180:interface=127.0.0.1``); an
    endpoint on every interface is asked on loopback.

    :raises ValueError: for an endpoint that is not ``tcp:``/``tcp6:``.
    """
    # Twisted escapes the colons of an IPv6 interface with backslashes.
    parts = re.split(r"(?<!\\):", endpoint)
    kind = parts[0].lower()
    if kind not in ("tcp", "tcp6"):
        raise ValueError(f"give --url for a non-tcp admin endpoint ({endpoint!r})")
    port = None
    host = ""
    for index, part in enumerate(parts[1:]):
        name, equals, value = part.partition("=")
        if not equals and index == 0:
            port = name
        elif name == "port":
            port = value
        elif name == "interface":
            host = value.replace("\\", "")
    if port is None or not port.isdigit():
        raise ValueError(f"no port in admin endpoint {endpoint!r}")
    if host in _WILDCARD_HOSTS:
        host = "::1" if kind == "tcp6" else "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}{path}"


def probe(url: str, timeout: float = 5.0, token: Optional[str] = None) -> Tuple[bool, str]:
    """
    GET ``url`` without any proxy (with the admin bearer ``token``, if
    any): whether it answered 200, and what it said.
    """
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    request = urllib.request.Request(url)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with opener.open(request, timeout=timeout) as response:
            return response.status == 200, response.read(4096).decode("utf-8", "replace")
    except urllib.error.HTTPError as error:
        return False, error.read(4096).decode("utf-8", "replace") or f"HTTP {error.code}"
    except (OSError, ValueError) as error:
        return False, f"cannot reach {url}: {getattr(error, 'reason', error)}"
