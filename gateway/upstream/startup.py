"""
What the upstream's first answer says about ``--upstream``, at start-up.

Two kinds of failure must not be confused when the gateway starts:

- **not reachable (yet)**: nothing answered — connection refused or reset,
  no answer in time, a 5xx, a host name that does not resolve.  The CA, the
  network or the cluster's DNS may come up later (a sidecar often starts
  before them), so the gateway starts anyway, serves v1 clients a
  ``serverInternal`` that says so, and keeps asking.
- **reachable but wrong**: something answered, and it is not an ACME v2
  directory the gateway can use — a web page, an ACME v1 directory, a 404,
  a certificate it does not trust.  Asking again cannot help; the setting
  must change.  The gateway refuses to start and says how to fix it.

A host name that does not resolve counts as *not reachable (yet)*: the
resolver cannot tell a typo from DNS that is not ready, and in a pod the
cluster's DNS often answers only some seconds after the containers start,
or stops answering for a while; failing there would crash-loop every pod
through a DNS outage.  The message names the host, so a typo is plain in
the first warning.

`diagnose` is pure: it reads the exception `UpstreamClient.directory` raised
(and what caused it), never the network; `keep_asking` asks again, with a
growing delay, until the upstream answers.
"""

from __future__ import annotations

from typing import Callable, Iterator, List, Optional
from urllib.parse import urlsplit

import attrs
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger

from gateway.upstream.client import UpstreamClient
from gateway.upstream.errors import UpstreamProblem, UpstreamProtocolError, UpstreamUnavailable

log = Logger()

#: The delays between start-up retries: from one second, doubling, to a minute.
FIRST_RETRY_DELAY = 1.0
MAX_RETRY_DELAY = 60.0

#: The question a wrong answer leaves the operator with.
ASK_DIRECTORY = "is this an ACME v2 directory URL? (Let's Encrypt: https://acme-v02.api.letsencrypt.org/directory)"


@attrs.frozen
class Diagnosis:
    """
    What a failed start-up fetch of the upstream directory means.

    :ivar wrong: `True` when something answered and it is not a usable
        ACME v2 directory (fail now); `False` when nothing usable answered
        yet (keep trying).
    :ivar reason: one line saying what happened and, when wrong, the fix.
    """

    wrong: bool
    reason: str


def _causes(error: BaseException) -> Iterator[BaseException]:
    """
    ``error``, then everything that caused it: explicit and implicit causes,
    and the ``reasons`` Twisted's HTTP client wraps its failures in.
    """
    seen = set()
    pending: List[Optional[BaseException]] = [error]
    while pending:
        current = pending.pop(0)
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        pending.append(current.__cause__)
        pending.append(current.__context__)
        for reason in getattr(current, "reasons", None) or ():
            pending.append(getattr(reason, "value", reason))


def _tls_failure(error: BaseException) -> Optional[str]:
    """
    ``"untrusted"``, ``"name"`` (the certificate does not name the host) or
    ``"handshake"`` when a TLS failure is among the causes of ``error``.
    """
    for cause in _causes(error):
        kind = type(cause)
        module = kind.__module__
        if module.startswith("service_identity") and kind.__name__ == "VerificationError":
            return "name"
        if module.startswith("OpenSSL") and kind.__name__ == "Error":
            if "certificate verify failed" in str(cause):
                return "untrusted"
            return "handshake"
    return None


def _host_unresolved(error: BaseException) -> bool:
    from twisted.internet.error import DNSLookupError

    return any(isinstance(cause, DNSLookupError) for cause in _causes(error))


def diagnose(error: BaseException, url: str, ca_bundle: Optional[str] = None) -> Diagnosis:
    """
    Whether ``error``, raised fetching the directory at ``url``, means
    *reachable but wrong* or *not reachable (yet)*, and why.
    """
    host = urlsplit(url).hostname or url
    tls = _tls_failure(error)
    if tls == "untrusted":
        if ca_bundle:
            return Diagnosis(True, f"the CA's certificate is not trusted by --upstream-ca-bundle "
                                   f"{ca_bundle}: give the PEM of the root that issued it")
        return Diagnosis(True, "the CA's certificate is not trusted: give --upstream-ca-bundle "
                               "with the PEM of the root that issued it (a private CA, Pebble)")
    if tls == "name":
        return Diagnosis(True, f"the CA's certificate is not valid for {host}: use the host name "
                               f"its certificate names in --upstream")
    if tls == "handshake":
        return Diagnosis(True, f"the TLS handshake with {host} failed ({error}): is --upstream "
                               f"an https URL of a TLS server?")
    if isinstance(error, UpstreamProblem):
        if error.status >= 500:
            return Diagnosis(False, f"the CA answered {error.status} ({error}); it may be starting")
        return Diagnosis(True, f"it answered {error.status}: {ASK_DIRECTORY}")
    if isinstance(error, UpstreamProtocolError):
        if "ACME v1 directory" in str(error):
            return Diagnosis(True, str(error))
        return Diagnosis(True, f"{error}: {ASK_DIRECTORY}")
    if isinstance(error, UpstreamUnavailable):
        if _host_unresolved(error):
            return Diagnosis(False, f"the host name {host} does not resolve (yet): check its "
                                    f"spelling in --upstream; retrying, since DNS may not be "
                                    f"ready yet")
        return Diagnosis(False, str(error))
    return Diagnosis(False, str(error) or type(error).__name__)



async def keep_asking(
    upstream: UpstreamClient,
    clock: IReactorTime,
    url: str,
    ca_bundle: Optional[str],
    answered: Callable[[], None],
    wrong: Callable[[Diagnosis], None],
    first_delay: float = FIRST_RETRY_DELAY,
    max_delay: float = MAX_RETRY_DELAY,
) -> None:
    """
    Fetch the directory of ``upstream`` until it answers (then call
    ``answered``) or an answer shows that ``url`` is wrong (then call
    ``wrong`` with the `Diagnosis`), waiting ``first_delay`` seconds before
    the first try and twice as long after each failure, up to ``max_delay``.
    Cancel the Deferred running it to stop.
    """
    delay = first_delay
    while True:
        await deferLater(clock, delay, lambda: None)
        try:
            await upstream.directory(refresh=True)
        except Exception as error:
            diagnosis = diagnose(error, url, ca_bundle)
            if diagnosis.wrong:
                wrong(diagnosis)
                return
            delay = min(max_delay, delay * 2)
            log.warn("upstream directory {url} still not reachable: {reason}; next try in "
                     "{delay:g}s", url=url, reason=diagnosis.reason, delay=delay)
            continue
        answered()
        return
