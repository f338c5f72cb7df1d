"""
The log lines one module of the gateway emits while a test runs.
"""

from __future__ import annotations

from twisted.logger import formatEvent, globalLogPublisher


class LogLines:
    """
    ``with LogLines("gateway.translate.sweeps") as logs:`` — then
    ``logs.lines`` holds the formatted events of that log namespace.
    """

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self.events: list = []

    def __enter__(self) -> "LogLines":
        self.events = []
        globalLogPublisher.addObserver(self.events.append)
        return self

    def __exit__(self, *exc_info: object) -> None:
        globalLogPublisher.removeObserver(self.events.append)

    @property
    def lines(self) -> list:
        return [formatEvent(e) for e in self.events if e.get("log_namespace") == self.namespace]
