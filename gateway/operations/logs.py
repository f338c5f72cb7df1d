"""
Where the gateway's ``twisted.logger`` events go, and in which shape.

Containers hand stdout to a log pipeline that wants one JSON object per
line (``--log-format json``); a person at a terminal wants the classic text
(``--log-format text``).  Either way every event emitted while a v1 request
is served carries that request's id (``request_id``), including events of
modules that know nothing about requests, because the id is read from the
request scope (`gateway.operations.scope`) at the moment the event is emitted.

Lines are written as they come but flushed together (`BatchedWriter`): at
most every `FLUSH_SECONDS`, at once for a warning or worse, and at
shutdown.  Twisted's own file observer flushes after every line: a system
call per request (``FileLogObserver.__call__``: 4.5 % of the py-spy samples
of ``HEAD /directory`` at 64 connections; ``BatchedWriter.__call__``: 1.2 %).

JSON lines carry the event's named fields, so ``thumbprint``, ``status`` or
``kind`` can be filtered on without parsing messages.  Key material never
gets there: an object that has a ``thumbprint`` (an account key) is written
as its thumbprint, and bytes only as their length.
"""

from __future__ import annotations

import json
import math
import sys
import threading
from datetime import datetime, timezone
from typing import IO, Any, Callable, Dict, Optional, Tuple, cast

from twisted.internet.interfaces import IReactorTime
from twisted.logger import (
    ILogFilterPredicate,
    ILogObserver,
    LogLevel,
    PredicateResult,
    formatEvent,
    formatEventAsClassicLogText,
    formatTime,
    globalLogBeginner,
)
from zope.interface import provider

from gateway.operations.scope import current_request_id

FORMATS = ("text", "json")
LEVELS = {
    "debug": LogLevel.debug,
    "info": LogLevel.info,
    "warn": LogLevel.warn,
    "error": LogLevel.error,
    "critical": LogLevel.critical,
}

#: Keys of an event that are Twisted's bookkeeping (or the legacy-log
#: bridge's), not named fields of the message.
_INTERNAL = frozenset({"message", "isError", "system", "format", "why", "failure", "time"})
_RESERVED = frozenset({"time", "level", "namespace", "message", "request_id", "error", "traceback"})
_MAX_DEPTH = 4

#: The longest a written log line waits for its flush.
FLUSH_SECONDS = 0.1

#: The levels a line is flushed at once for, and that `KeptEvents` keeps
#: from `QUIET_NAMESPACES`: warning and worse.
URGENT_LEVELS = frozenset({LogLevel.warn, LogLevel.error, LogLevel.critical})


@provider(ILogObserver)
class BatchedWriter:
    """
    Writes each event's line to ``out`` as it comes, and flushes ``out`` at
    most every `FLUSH_SECONDS` — at once for a warning or worse, so that
    an error is never left in a buffer — instead of after every line.

    :param clock: schedules the flushes (the reactor; events logged from
        another thread schedule theirs through ``callFromThread``).
    """

    def __init__(self, out: IO[str], formatter: Callable[[Dict[str, Any]], Optional[str]],
                 clock: Optional[IReactorTime] = None, interval: float = FLUSH_SECONDS) -> None:
        self._out = out
        self._formatter = formatter
        self._clock = clock
        self._interval = interval
        self._lock = threading.Lock()
        self._due = False

    def __call__(self, event: Dict[str, Any]) -> None:
        text = self._formatter(event)
        if not text:
            return
        # A set lookup, not ``level >= LogLevel.warn``: ``constantly``
        # compares its constants in Python (``_Constant.__ge__``).
        urgent = event.get("log_level") in URGENT_LEVELS
        with self._lock:
            self._out.write(text)
            schedule = not (urgent or self._due)
            if schedule:
                self._due = True
        if urgent:
            self.flush()
        elif schedule:
            self._schedule()

    def _schedule(self) -> None:
        if self._clock is not None:
            self._clock.callLater(self._interval, self.flush)
            return
        from twisted.internet import reactor
        from twisted.python.threadable import isInIOThread

        if isInIOThread():
            reactor.callLater(self._interval, self.flush)  # type: ignore[attr-defined]
        else:  # the store's thread, say: only callFromThread is safe there
            reactor.callFromThread(  # type: ignore[attr-defined]
                reactor.callLater, self._interval, self.flush)  # type: ignore[attr-defined]

    def flush(self) -> None:
        """
        Flush what was written (the timer's, a warning's, the shutdown's).
        """
        with self._lock:
            self._due = False
            try:
                self._out.flush()
            except (OSError, ValueError):
                pass  # a closed or broken stream: nothing left to do


def _second_and_microsecond(when: float) -> Tuple[int, int]:
    """
    The whole second and the microsecond ``datetime.fromtimestamp(when)``
    shows (it rounds to the microsecond, half to even, which may carry into
    the next second).
    """
    fraction, second = math.modf(when)
    microsecond = round(fraction * 1e6)
    if microsecond >= 1000000:
        second, microsecond = second + 1, microsecond - 1000000
    elif microsecond < 0:
        second, microsecond = second - 1, microsecond + 1000000
    return int(second), microsecond


class SecondStamps:
    """
    The text of a time stamp's whole second, formatted once per second
    rather than once per event: every access line carries one, and
    formatting it (time zone and ``strftime``) was a third of the cost of
    a line (py-spy, ``HEAD /directory`` at 64 connections: ``formatTime``
    3.4 % of the samples).

    :ivar formatted: how many seconds it has formatted.
    """

    def __init__(self, render: Callable[[int], str]) -> None:
        self._render = render
        # One tuple, replaced whole: an event logged from another thread
        # never reads one second's text with another second.
        self._last: Tuple[Optional[int], str] = (None, "")
        self.formatted = 0

    def __call__(self, second: int) -> str:
        last_second, text = self._last
        if second != last_second:
            text = self._render(second)
            self._last = (second, text)
            self.formatted += 1
        return text


#: The local time of the text lines (Twisted's classic ``formatTime``:
#: RFC 3339 to the second, with the zone's offset).
local_seconds = SecondStamps(lambda second: formatTime(second))
#: The UTC time of the JSON lines, to the second (the milliseconds follow).
utc_seconds = SecondStamps(
    lambda second: datetime.fromtimestamp(second, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S"))


def classic_time(when: Optional[float]) -> str:
    """
    Twisted's ``formatTime(when)``, its second formatted once.
    """
    if when is None:
        return "-"
    return local_seconds(_second_and_microsecond(when)[0])


def utc_time(when: float) -> str:
    """
    ``when`` in UTC, RFC 3339 to the millisecond with ``Z``: what
    ``datetime.fromtimestamp(when, tz=timezone.utc).isoformat(
    timespec="milliseconds")`` shows, its second formatted once.
    """
    second, microsecond = _second_and_microsecond(when)
    return f"{utc_seconds(second)}.{microsecond // 1000:03d}Z"


#: Namespaces whose events tell an operator nothing: Twisted's HTTP client
#: logs "Starting factory _HTTP11ClientFactory(<function …>, <endpoint>)"
#: and "Stopping factory …" for each upstream connection it opens.
QUIET_NAMESPACES = frozenset({"twisted.web.client._HTTP11ClientFactory"})


@provider(ILogFilterPredicate)
class AtLeast:
    """
    Drops events below one level, as Twisted's ``LogLevelFilterPredicate``
    with only a default level does (and events without a level or a
    namespace), but with one set lookup: that predicate walks the
    namespace's parents and compares constants in Python on every event
    (py-spy, ``HEAD /directory``: 3.6 % of the samples).
    """

    def __init__(self, level: LogLevel) -> None:
        self.level = level
        #: The levels it keeps.
        self.kept = frozenset(candidate for candidate in LogLevel.iterconstants()
                              if not candidate < level)

    def __call__(self, event: Dict[str, Any]) -> PredicateResult:
        if event.get("log_level") in self.kept and event.get("log_namespace"):
            return PredicateResult.maybe
        return PredicateResult.no


@provider(ILogObserver)
class KeptEvents:
    """
    ``serve``'s filter in one call: events at `AtLeast` the level and with
    a namespace, less those of `QUIET_NAMESPACES` below warning, go to
    ``observer``, stamped with the current v1 request's ``request_id``
    (unless they named one); the others nowhere.

    Twisted's ``FilteringLogObserver`` over those two predicates and the
    stamping wrapper gave the same verdicts through three more Python calls
    per event, a loop over the predicates and comparisons of ``constantly``
    constants (``PredicateResult``, ``LogLevel``) — on every access line,
    1.1 µs of the 3.5 µs an access event spent in the observer.
    """

    def __init__(self, observer: ILogObserver, level: LogLevel) -> None:
        self._observer = observer
        self._kept = AtLeast(level).kept

    def __call__(self, event: Dict[str, Any]) -> None:
        level = event.get("log_level")
        namespace = event.get("log_namespace")
        if level not in self._kept or not namespace:
            return
        if namespace in QUIET_NAMESPACES and level not in URGENT_LEVELS:
            return
        if "request_id" not in event:
            request_id = current_request_id()
            if request_id is not None:
                event = dict(event, request_id=request_id)
        self._observer(event)


def _safe(value: Any, depth: int = 0) -> Any:
    """
    A JSON-ready copy of a field value that can hold no key material.
    """
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        return f"<{len(value)} bytes>"
    thumbprint = getattr(value, "thumbprint", None)
    if isinstance(thumbprint, str):
        return thumbprint
    if depth >= _MAX_DEPTH:
        return str(type(value).__name__)
    if isinstance(value, dict):
        return {str(k): _safe(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_safe(v, depth + 1) for v in value]
    return str(value)


def format_message(event: Dict[str, Any]) -> str:
    """
    Twisted's ``formatEvent(event)``, but a format of plain names is
    filled in by ``str.format_map`` rather than by ``string.Formatter`` in
    Python: 7 µs of each access line (py-spy, ``HEAD /directory``:
    ``formatEvent`` 3 % of the samples).  Twisted wraps each value to
    allow ``{name()}`` calls, which shows through attribute and item
    access (``{x.__class__}``), so a format with ``(``, ``.`` or ``[`` is
    left to Twisted, as is one that does not fill in (Twisted says why).
    """
    text = event.get("log_format")
    if (type(text) is str and "(" not in text and "." not in text and "[" not in text
            and "log_flattened" not in event):
        try:
            return text.format_map(event)
        except Exception:
            pass
    return formatEvent(event)


def _system(event: Dict[str, Any]) -> str:
    """
    The ``[system]`` of a classic text line, as Twisted writes it: the
    event's ``log_system``, else its namespace and level.
    """
    system = event.get("log_system")
    if system is None:
        level = event.get("log_level")
        return f"{event.get('log_namespace', '-')}#{'-' if level is None else level.name}"
    try:
        return str(system)
    except Exception:
        return "UNFORMATTABLE"


def event_as_json(event: Dict[str, Any]) -> str:
    """
    One event as one line of JSON: ``time`` (RFC 3339, UTC), ``level``,
    ``namespace``, ``message`` (the formatted text), ``request_id`` when
    there is one, ``error``/``traceback`` for a failure, and every named
    field of the event.
    """
    level = event.get("log_level")
    record: Dict[str, Any] = {
        "time": utc_time(event.get("log_time") or 0),
        "level": getattr(level, "name", "info"),
        "namespace": event.get("log_namespace"),
        "message": format_message(event),
    }
    if event.get("request_id") is not None:
        record["request_id"] = str(event["request_id"])
    failure = event.get("log_failure")
    if failure is not None:
        record["error"] = failure.getErrorMessage()
        record["traceback"] = failure.getTraceback()
    for key, value in event.items():
        if key.startswith("log_") or key in _INTERNAL or key == "request_id":
            continue
        name = f"field_{key}" if key in _RESERVED else key
        record[name] = _safe(value)
    return json.dumps(record, ensure_ascii=False, default=str) + "\n"


def event_as_text(event: Dict[str, Any]) -> Optional[str]:
    """
    Twisted's classic one-line text, with `` request_id=…`` appended when
    the event belongs to a v1 request.
    """
    if "log_failure" in event:
        text = formatEventAsClassicLogText(event, formatTime=classic_time)
    else:
        # ``formatEventAsClassicLogText`` with `format_message`.
        message = format_message(event)
        text = (f"{classic_time(event.get('log_time'))} [{_system(event)}] {message}"
                .replace("\n", "\n\t") + "\n") if message else None
    if text is None:
        return None
    request_id = event.get("request_id")
    if request_id is not None:
        text = f"{text.rstrip(chr(10))} request_id={request_id}\n"
    return text


def observer_for(log_format: str, level: str = "info", out: IO[str] = sys.stdout,
                 clock: Optional[IReactorTime] = None) -> ILogObserver:
    """
    The observer ``acme-gateway serve`` logs through: ``log_format`` lines on
    ``out`` (flushed by a `BatchedWriter` on ``clock``, the reactor by
    default), events below ``level`` and Twisted's connection chatter
    (`QUIET_NAMESPACES`) dropped, request ids stamped (`KeptEvents`).

    :raises ValueError: for an unknown format or level.
    """
    if log_format not in FORMATS:
        raise ValueError(f"expected one of {', '.join(FORMATS)}, got {log_format!r}")
    if level not in LEVELS:
        raise ValueError(f"expected one of {', '.join(LEVELS)}, got {level!r}")
    formatter: Callable[[Dict[str, Any]], Optional[str]] = (
        event_as_json if log_format == "json" else event_as_text
    )
    writer = cast(ILogObserver, BatchedWriter(out, formatter, clock))
    return cast(ILogObserver, KeptEvents(writer, LEVELS[level]))


def start_logging(log_format: str, level: str = "info", out: IO[str] = sys.stdout) -> None:
    """
    Send every ``twisted.logger`` event (and those buffered since start-up)
    to `observer_for`.
    """
    from twisted.internet import reactor

    observer = observer_for(log_format, level, out)
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)
    # What the last batch holds reaches ``out`` before the process ends.
    reactor.addSystemEventTrigger("after", "shutdown", out.flush)  # type: ignore[attr-defined]
