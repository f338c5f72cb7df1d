"""
What each face does once it has answered a request: the access log event,
the metric, and the migration report's record.  The v1 and the v2 face
share it, so both log and record a request the same way.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Protocol

from twisted.logger import Logger
from twisted.web import server

from gateway.operations.report import problem_text, visit_for
from gateway.operations.scope import RequestScope
from gateway.store.records import ClientVisit
from gateway.web import Response, client_address


class VisitRecorder(Protocol):
    """
    Records each request in the migration report
    (`gateway.operations.report.ClientRecorder` is one).
    """

    def record(self, visit: ClientVisit) -> Any: ...

    def drops(self, thumbprint: Optional[str], address: str, user_agent: str) -> bool:
        """
        Whether the visit of such a request would be dropped unrecorded
        (then it is not built).
        """


def observe_request(log: Logger, request: server.Request, scope: RequestScope, method: str,
                    response: Response, started: float, now: float,
                    count: Optional[Callable[[str, int], None]],
                    recorder: Optional[VisitRecorder]) -> None:
    """
    Log the answered request (named fields; the thumbprint, never the key),
    ``count`` it by endpoint and status, and record it for the report.

    A failure's problem goes into the log line too: some clients hide it
    (certbot 1.32 on Python 3.11 shows "AttributeError: can't set attribute").
    """
    user_agent = (request.getHeader(b"user-agent") or b"").decode("utf-8", "replace")
    address = client_address(request)
    problem = problem_text(response.content_type, response.body) if response.status >= 400 else None
    log.info(
        "{method} {path} -> {status}" + (" {problem}" if problem else ""), method=method,
        path=request.path.decode("latin-1"), status=response.status, endpoint=scope.endpoint,
        user_agent=user_agent, client=address, thumbprint=scope.thumbprint,
        duration=round(now - started, 6), request_id=scope.id,
        **({"problem": problem} if problem else {}),
    )
    if count is not None:
        count(scope.endpoint, response.status)
    if recorder is not None and not recorder.drops(scope.thumbprint, address, user_agent):
        recorder.record(visit_for(
            scope, user_agent, address, now, response.status,
            response.content_type, response.body, method=method,
        ))
