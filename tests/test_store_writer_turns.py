"""
Write transactions of several processes on one SQLite state (``serve
--workers N``) take turns on the lock file beside the database, so that no
``BEGIN IMMEDIATE`` meets another process's write lock and sleeps in
SQLite's busy handler (1, 2, 5, 10 ms and more between tries; issue 15,
fifth round).
"""

from __future__ import annotations

import fcntl
import multiprocessing
import os
import traceback

import pytest

from gateway.store.sqlite import (
    BUSY_TIMEOUT_MS,
    TURN_POLL_MAX_SECONDS,
    TURN_POLL_MIN_SECONDS,
    WRITER_TURN_OFFSET,
    connect,
)

#: Write transactions per process.  Two processes writing back to back
#: with no busy handler meet each other's write lock many times over
#: (measured without the turns, three runs: 136 to 231 of a process's 300
#: refused with "database is locked").
TRANSACTIONS = 300


def _write_many(path: str, barrier, outcomes) -> None:
    """In a child: TRANSACTIONS increments, with SQLite's busy handler off."""
    try:
        database = connect(path)
        try:
            database.execute("PRAGMA busy_timeout = 0")
            barrier.wait(timeout=30)
            refused = 0
            for _ in range(TRANSACTIONS):
                try:
                    database.transaction(
                        lambda: database.execute("UPDATE counter SET n = n + 1"), durable=False)
                except Exception as error:  # sqlite3.OperationalError: database is locked
                    if "locked" not in str(error):
                        raise
                    refused += 1
            outcomes.put(("ok", refused, database.turn_waits))
        finally:
            database.close()
    except BaseException:
        outcomes.put(("error", traceback.format_exc(), 0))


def test_two_processes_writing_at_once_never_meet_sqlites_lock(tmp_path):
    path = str(tmp_path / "state.sqlite3")
    setup = connect(path)
    setup.transaction(lambda: (setup.execute("CREATE TABLE counter (n INTEGER)"),
                               setup.execute("INSERT INTO counter VALUES (0)")))
    setup.close()
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(2)
    outcomes = context.Queue()
    children = [context.Process(target=_write_many, args=(path, barrier, outcomes))
                for _ in range(2)]
    for child in children:
        child.start()
    results = [outcomes.get(timeout=120) for _ in children]
    for child in children:
        child.join(timeout=30)
        assert child.exitcode == 0
    assert [kind for kind, _, _ in results] == ["ok", "ok"], results
    # Not one BEGIN met the sibling's write lock: every transaction committed.
    assert [refused for _, refused, _ in results] == [0, 0]
    check = connect(path)
    try:
        assert check.execute("SELECT n FROM counter").fetchone()[0] == 2 * TRANSACTIONS
    finally:
        check.close()
    # The processes did run into each other, and took turns.
    assert sum(waits for _, _, waits in results) > 0


def _hold_turn(lock_path: str, held, release) -> None:
    """In a child: hold the writer's turn until told to let it go."""
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.lockf(fd, fcntl.LOCK_EX, 1, WRITER_TURN_OFFSET)
    held.set()
    release.wait(timeout=60)
    os.close(fd)


class _FakeTime:
    """A clock that moves only when slept on; records each pause."""

    def __init__(self):
        self.now = 100.0
        self.pauses = []
        self.on_sleep = None

    def clock(self):
        return self.now

    def sleep(self, seconds):
        self.pauses.append(seconds)
        self.now += seconds
        if self.on_sleep is not None:
            self.on_sleep(len(self.pauses))


@pytest.fixture
def held_turn(tmp_path):
    """A database, and a child process holding its writer's turn."""
    path = str(tmp_path / "state.sqlite3")
    database = connect(path)
    context = multiprocessing.get_context("fork")
    held, release = context.Event(), context.Event()
    child = context.Process(target=_hold_turn, args=(path + ".locks", held, release))
    child.start()
    assert held.wait(timeout=30)
    yield database, release
    release.set()
    child.join(timeout=30)
    database.close()


def test_a_writer_waits_for_the_turn_in_short_growing_steps(held_turn):
    database, release = held_turn
    fake = _FakeTime()
    database._clock, database._sleep = fake.clock, fake.sleep

    def let_go(pauses):
        # The sibling commits during the sixth pause.
        if pauses == 6:
            release.set()
            # Wait for the child to let the byte go before looking again.
            probe = os.open(database._lock_path, os.O_RDWR)
            try:
                fcntl.lockf(probe, fcntl.LOCK_EX, 1, WRITER_TURN_OFFSET)
                fcntl.lockf(probe, fcntl.LOCK_UN, 1, WRITER_TURN_OFFSET)
            finally:
                # Closing drops this process's record locks on the file;
                # the database holds none at this point.
                os.close(probe)

    fake.on_sleep = let_go
    assert database.transaction(lambda: database.execute("SELECT 1").fetchone()[0]) == 1
    assert fake.pauses == pytest.approx([TURN_POLL_MIN_SECONDS, 2 * TURN_POLL_MIN_SECONDS,
                                         4 * TURN_POLL_MIN_SECONDS, 8 * TURN_POLL_MIN_SECONDS,
                                         TURN_POLL_MAX_SECONDS, TURN_POLL_MAX_SECONDS])
    assert database.turn_waits == 6


def test_a_turn_not_had_within_the_busy_timeout_leaves_the_wait_to_sqlite(held_turn):
    database, _ = held_turn
    fake = _FakeTime()
    database._clock, database._sleep = fake.clock, fake.sleep
    database.transaction(lambda: database.execute("CREATE TABLE t (x INTEGER)"))
    # The sibling holds only the turn, not SQLite's lock: the transaction
    # went ahead once the busy timeout had passed, and committed.
    assert database.execute("SELECT count(*) FROM t").fetchone()[0] == 0
    assert sum(fake.pauses) == pytest.approx(BUSY_TIMEOUT_MS / 1000, abs=TURN_POLL_MAX_SECONDS)
    assert max(fake.pauses) == TURN_POLL_MAX_SECONDS


def test_the_turn_is_let_go_after_the_transaction_even_when_it_fails(tmp_path):
    path = str(tmp_path / "state.sqlite3")
    database = connect(path)
    try:
        with pytest.raises(ZeroDivisionError):
            database.transaction(lambda: 1 / 0)
        # Another process can take the turn at once.
        context = multiprocessing.get_context("fork")
        outcome = context.Queue()

        def try_turn():
            fd = os.open(path + ".locks", os.O_RDWR)
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, WRITER_TURN_OFFSET)
                outcome.put("had it")
            except OSError:
                outcome.put("held")

        child = context.Process(target=try_turn)
        child.start()
        assert outcome.get(timeout=30) == "had it"
        child.join(timeout=30)
    finally:
        database.close()


def test_an_in_memory_database_takes_no_turn():
    database = connect(":memory:")
    try:
        assert database.transaction(lambda: database.execute("SELECT 2").fetchone()[0]) == 2
        assert database._writer_file is None
    finally:
        database.close()
