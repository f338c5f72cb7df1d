"""
The scope of one v1 request: its request id and what the gateway learns
about the client while serving it, carried by a `contextvars.ContextVar`.

Why a context variable: a v1 request fans out into upstream calls several
coroutines deep (translation, the upstream client, badNonce retries), and
threading an id through every signature would touch every module.
``Deferred.fromCoroutine`` runs a coroutine in a *copy* of the context that
was current when it was called, so the scope the v1 face sets at the start
of its coroutine (`gateway.v1.face`) is seen by everything that coroutine
awaits — and by nothing else: the reactor's own context is never changed.
`run_in_scope` does the same for one call made outside such a coroutine.
"""

from __future__ import annotations

import contextvars
import re
import secrets
from typing import Any, Callable, Optional, Tuple

import attrs

#: The scope of the v1 request being served, or `None` outside of one
#: (start-up, admin pages, readiness probes).
current: contextvars.ContextVar[Optional["RequestScope"]] = contextvars.ContextVar(
    "acme_gateway_request_scope", default=None
)

#: An ``X-Request-Id`` from a proxy in front of the gateway is adopted only
#: when it is this harmless: it ends up in logs and metrics exemplars.
_ACCEPTABLE_ID = re.compile(r"^[A-Za-z0-9._:-]{8,64}$")


def new_request_id() -> str:
    """
    A fresh request id: 64 random bits in hex, short enough to grep for.
    """
    return secrets.token_hex(8)


def request_id_from(header: Optional[bytes]) -> str:
    """
    The id of a request: the caller's ``X-Request-Id`` when it is a sane
    token (so a front proxy's id follows the request into the gateway's
    logs), otherwise a fresh one.
    """
    if header:
        text = header.decode("latin-1")
        if _ACCEPTABLE_ID.match(text):
            return text
    return new_request_id()


@attrs.define
class RequestScope:
    """
    What is known about one v1 request while it is served.

    :ivar id: the request id, in every log event and upstream call it causes.
    :ivar endpoint: the v1 resource it hit (``new-cert``…), ``unknown`` for
        paths the face does not serve; a bounded metric label.
    :ivar thumbprint: the account key's RFC 7638 thumbprint once the JWS
        verified — never the key.
    :ivar names: the DNS names the request asked for (new-authz, new-cert).
    """

    id: str
    endpoint: str = "unknown"
    thumbprint: Optional[str] = None
    names: Tuple[str, ...] = ()


def current_request_id() -> Optional[str]:
    """
    The id of the v1 request being served, or `None`.
    """
    scope = current.get()
    return scope.id if scope is not None else None


def run_in_scope(scope: RequestScope, function: Callable[..., Any], *args: Any) -> Any:
    """
    Call ``function(*args)`` with ``scope`` current, in a copy of the
    current context: what it starts (``Deferred.fromCoroutine``) keeps the
    scope, the caller's context is left as it was.
    """

    def enter() -> Any:
        current.set(scope)
        return function(*args)

    return contextvars.copy_context().run(enter)
