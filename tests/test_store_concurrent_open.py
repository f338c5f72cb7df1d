"""
Processes that open one new SQLite state at the same moment — the workers
of ``acme-gateway serve --workers N`` on a fresh ``--state`` — all open it.

SQLite refuses the switch to WAL with an immediate ``SQLITE_BUSY`` (no
busy handler) to a process that holds a read lock while another makes the
switch; before `gateway.store.sqlite.use_wal` retried it, one worker in a
few died with "cannot open the state database: database is locked" and
took the supervisor down with it (the benchmark's memory section met it
in CI).
"""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
import traceback

import pytest

from gateway.store.schema import SCHEMA_VERSION, migrate
from gateway.store.sqlite import connect, use_wal

#: Processes per round and rounds: without the retry, about one process in
#: nine fails its open, so 40 opens all succeed by chance practically never.
PROCESSES = 4
ROUNDS = 10


def _open_and_migrate(path: str, barrier, outcomes) -> None:
    """In a child: wait for the others, then open and migrate the state."""
    try:
        barrier.wait(timeout=30)
        database = connect(path)
        try:
            migrate(database)
        finally:
            database.close()
        outcomes.put("")
    except BaseException:
        outcomes.put(traceback.format_exc())


def test_processes_opening_a_new_state_at_once_all_open_it(tmp_path):
    context = multiprocessing.get_context("fork")
    failures = []
    for round_ in range(ROUNDS):
        path = str(tmp_path / f"state-{round_}.sqlite3")
        barrier = context.Barrier(PROCESSES)
        outcomes = context.Queue()
        children = [context.Process(target=_open_and_migrate, args=(path, barrier, outcomes))
                    for _ in range(PROCESSES)]
        for child in children:
            child.start()
        results = [outcomes.get(timeout=60) for _ in children]
        for child in children:
            child.join(timeout=30)
            assert child.exitcode == 0
        failures.extend(result for result in results if result)
        with sqlite3.connect(path) as check:
            assert check.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            assert check.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert failures == [], failures[0]


class _Connection:
    """Answers ``PRAGMA journal_mode = WAL`` with the given outcomes in turn."""

    def __init__(self, outcomes):
        self.outcomes = list(outcomes)
        self.asked = 0

    def execute(self, statement):
        assert statement == "PRAGMA journal_mode = WAL"
        self.asked += 1
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, BaseException):
            raise outcome
        return _Cursor(outcome)


class _Cursor:
    def __init__(self, mode):
        self.mode = mode

    def fetchone(self):
        return (self.mode,)


def _error(code: int, message: str = "database is locked") -> sqlite3.OperationalError:
    error = sqlite3.OperationalError(message)
    error.sqlite_errorcode = code
    return error


class _Clock:
    def __init__(self):
        self.now = 100.0
        self.slept = []

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.slept.append(seconds)
        self.now += seconds


def test_a_busy_switch_is_retried_with_a_growing_back_off():
    clock = _Clock()
    connection = _Connection([_error(5), _error(5), _error(5), "wal"])
    assert use_wal(connection, timeout=5, clock=clock, sleep=clock.sleep) == "wal"
    assert connection.asked == 4
    assert clock.slept == [0.001, 0.002, 0.004]


def test_an_extended_busy_code_is_retried_too():
    # SQLITE_BUSY_RECOVERY (261): another process is recovering the WAL.
    clock = _Clock()
    connection = _Connection([_error(261), "wal"])
    assert use_wal(connection, timeout=5, clock=clock, sleep=clock.sleep) == "wal"
    assert clock.slept == [0.001]


def test_the_back_off_stops_growing_at_fifty_milliseconds():
    clock = _Clock()
    connection = _Connection([_error(5)] * 9 + ["wal"])
    use_wal(connection, timeout=5, clock=clock, sleep=clock.sleep)
    assert clock.slept[-3:] == [0.05, 0.05, 0.05]
    assert max(clock.slept) == 0.05


def test_a_switch_still_busy_after_the_timeout_fails_with_sqlites_error():
    clock = _Clock()
    connection = _Connection([_error(5)] * 1000)
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        use_wal(connection, timeout=1, clock=clock, sleep=clock.sleep)
    # It waited about the timeout, not less and not much more.
    assert 1 <= sum(clock.slept) < 1.1
    assert connection.asked == len(clock.slept) + 1


def test_other_errors_are_not_retried():
    clock = _Clock()
    connection = _Connection([_error(10, "disk I/O error"), "wal"])
    with pytest.raises(sqlite3.OperationalError, match="disk I/O"):
        use_wal(connection, timeout=5, clock=clock, sleep=clock.sleep)
    assert connection.asked == 1
    assert clock.slept == []


def test_an_error_without_a_code_is_not_retried():
    clock = _Clock()
    connection = _Connection([sqlite3.OperationalError("database is locked"), "wal"])
    with pytest.raises(sqlite3.OperationalError):
        use_wal(connection, timeout=5, clock=clock, sleep=clock.sleep)
    assert connection.asked == 1


def test_the_journal_mode_sqlite_answers_is_returned_as_is(tmp_path):
    # ":memory:" cannot use WAL; connect() tells the two apart by this answer.
    connection = sqlite3.connect(":memory:")
    assert use_wal(connection) == "memory"
    on_disk = sqlite3.connect(os.path.join(tmp_path, "s.sqlite3"))
    assert use_wal(on_disk) == "wal"
