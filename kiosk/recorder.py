"""Gets every visit and check into the store, through a full disk and an untrusted clock.

A write that fails (disk full, an I/O error, a locked database) does not lose the record: it
waits in a bounded in-memory queue, oldest first, and is retried every few seconds and before
each new record. Only when the queue is full is its oldest record given up, counted in
`visits_dropped` and logged. A SIGKILL or power cut loses what is queued, and nothing else.

Records made while the wall clock is not trusted (kiosk/clock.py) are stored flagged; when the
clock becomes trusted they are shifted by how far it stepped and the flag is cleared.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from kiosk import spill
from kiosk.clock import ClockTrust, shift, wall_offset_s
from kiosk.counters import Counters
from kiosk.lifecycle import Part
from kiosk.store import Store, StoreError, driver_message
from kiosk.visit import Check, Visit

log = logging.getLogger("kioskd")

#: At ~1 kB a record this bounds the queue to a few MB: days of visits at a busy door.
MAX_QUEUED = 5000
RETRY_INTERVAL_S = 2.0
CLOCK_POLL_S = 1.0
#: How often the database file is checked between records (a stat() call).
FILE_CHECK_S = 2.0
#: Records kept for restamping once the clock is trusted (ids and offsets only).
MAX_UNSYNCED = 100_000
#: A visit is recorded up to tracker.max_gap_s after its last frame: one whose frames were
#: stamped before the step but that closes just after it is corrected for this long.
STEP_GRACE_S = 30.0

Record = Visit | Check


class Recorder(Part):
    def __init__(
        self,
        store: Store,
        counters: Counters,
        clock: ClockTrust,
        outbox: bool,
        on_visit: Callable[[Visit], None],
        max_queued: int = MAX_QUEUED,
        spill_path: Path | None = None,
        on_check: Callable[[Check], None] | None = None,
    ) -> None:
        self.store = store
        self.counters = counters
        self.clock = clock
        self.outbox = outbox
        self.on_visit = on_visit
        self.on_check = on_check  # a stored check (its outbox entry is committed with it)
        self.queue: deque[Record] = deque()
        self.max_queued = max_queued
        self.spill_path = spill_path
        self.clock_synced = clock.synced()
        # id -> (is a visit, wall-clock offset when it was stamped), until the clock is trusted
        self._unsynced: dict[str, tuple[bool, float]] = {}
        # (visit shifts, check shifts) waiting to be written to the store
        self._to_restamp: tuple[dict[str, timedelta], dict[str, timedelta]] | None = None
        self._next_retry = 0.0
        self._next_clock = 0.0
        self._next_file_check = 0.0
        self._untrusted_offset = wall_offset_s()
        self._step: tuple[float, timedelta] | None = None  # (monotonic time, size) when trusted
        self._failing = False
        if not self.clock_synced:
            log.warning(
                "wall clock not synchronised yet (clock.trust %s): records are flagged and "
                "restamped once it is",
                clock.mode,
            )

    def add(self, record: Record) -> None:
        if self._step is not None and time.monotonic() - self._step[0] < STEP_GRACE_S:
            fix = stamped_before_step(_end(record), datetime.now(UTC), self._step[1])
            if fix is not None:
                record = _restamped(record, fix)
        if not self.clock_synced:
            record = dataclasses.replace(record, clock_synced=False)
            if len(self._unsynced) < MAX_UNSYNCED:
                self._unsynced[record.id] = (isinstance(record, Visit), wall_offset_s())
        if len(self.queue) >= self.max_queued:
            self._drop(self.queue.popleft())
        self.queue.append(record)
        self.flush()

    def flush(self, retry: bool = False) -> None:
        """Write queued records oldest first; stop at the first failure.

        A failed retry of records already reported is logged at debug level only, so a disk
        that stays full for days does not fill the journal too."""
        while self.queue:
            record = self.queue[0]
            try:
                self._write(record)
            except (SQLAlchemyError, StoreError) as exc:
                self._next_retry = time.monotonic() + RETRY_INTERVAL_S
                newest = self.queue[-1]
                level = logging.DEBUG if retry and self._failing else logging.ERROR
                log.log(
                    level,
                    "cannot store records (%s): %d kept in memory (at most %d), newest %s %s",
                    driver_message(exc), len(self.queue), self.max_queued,
                    type(newest).__name__.lower(), newest.id,
                )  # fmt: skip
                self._failing = True
                return
            self.queue.popleft()
            if isinstance(record, Visit):
                self.on_visit(record)
            else:
                log.info("temperature check %s: no demographics recorded", record.status)
                if self.on_check is not None:
                    self.on_check(record)
        if self._failing:
            self._failing = False
            log.info("storage recovered: every queued record is stored")

    def _write(self, record: Record) -> None:
        try:
            if isinstance(record, Visit):
                self.store.add_visit(record, outbox=self.outbox)
            else:
                self.store.add_check(record, outbox=self.outbox)
        except IntegrityError:
            # Already stored by an earlier try whose commit reached the disk.
            log.warning("record %s was already stored", record.id)

    def _drop(self, record: Record) -> None:
        if isinstance(record, Visit):
            self.counters.visits_dropped += 1
        self._unsynced.pop(record.id, None)
        log.error(
            "storage queue full (%d records): %s %s is dropped",
            self.max_queued, type(record).__name__.lower(), record.id,
        )  # fmt: skip

    def poll(self, now: float) -> None:
        """From the frame loop: retry the queue, watch the clock and the database file."""
        if now >= self._next_file_check:
            self._next_file_check = now + FILE_CHECK_S
            try:
                self.store.follow_file()
            except StoreError as exc:
                log.error("%s", exc)
        if (self.queue or self._to_restamp) and now >= self._next_retry:
            self.flush(retry=True)
            if self._to_restamp and not self.queue:
                self._restamp()
        if not self.clock_synced and now >= self._next_clock:
            self._next_clock = now + CLOCK_POLL_S
            if self.clock.synced():
                self._clock_became_trusted()
            else:
                self._untrusted_offset = wall_offset_s()

    def _clock_became_trusted(self) -> None:
        self.clock_synced = True
        offset_now = wall_offset_s()
        self._step = (time.monotonic(), shift(self._untrusted_offset, offset_now))
        shifts = {rid: shift(then, offset_now) for rid, (_, then) in self._unsynced.items()}
        self.queue = deque(_restamped(r, shifts.get(r.id)) for r in self.queue)
        visits = {rid: shifts[rid] for rid, (is_visit, _) in self._unsynced.items() if is_visit}
        checks = {rid: d for rid, d in shifts.items() if rid not in visits}
        self._unsynced.clear()
        self._to_restamp = (visits, checks)
        self._restamp()

    def _restamp(self) -> None:
        assert self._to_restamp is not None
        visits, checks = self._to_restamp
        try:
            n = self.store.restamp(visits, checks)
        except SQLAlchemyError as exc:
            self._next_retry = time.monotonic() + RETRY_INTERVAL_S
            why = driver_message(exc)
            log.error("wall clock trusted; restamping stored records failed, will retry: %s", why)
            return
        self._to_restamp = None
        steps = [d.total_seconds() for d in (*visits.values(), *checks.values())]
        step = max(steps, key=abs, default=0.0)
        log.info("wall clock trusted: restamped %d records (clock stepped %+.0f s)", n, step)

    def start(self) -> Recorder:
        """Store the records the last run saved at exit (kiosk/spill.py) first."""
        if self.spill_path is None:
            return self
        saved = spill.load(self.spill_path)
        if not saved:
            return self
        log.warning("storing %d records saved at the last exit (%s)", len(saved), self.spill_path)
        self.queue.extend(saved)
        self.flush()
        if not self.queue:
            self.spill_path.unlink(missing_ok=True)
        return self

    def close(self) -> None:
        """Last try at shutdown; what still cannot be written goes to the spill file for the
        next start, and only what cannot be saved there either is lost, and said so."""
        self.flush()
        if not self.queue:
            if self.spill_path is not None:
                self.spill_path.unlink(missing_ok=True)
            return
        try:
            if self.spill_path is None:
                raise OSError("no file to save them in")
            n = spill.save(self.spill_path, self.queue)
        except OSError as exc:
            lost = sum(isinstance(r, Visit) for r in self.queue)
            self.counters.visits_dropped += lost
            log.error("%d queued records could not be stored before exit and are lost (%s)",
                      lost, exc)  # fmt: skip
        else:
            log.error("%d records could not be stored before exit; saved in %s and stored at "
                      "the next start", n, self.spill_path)  # fmt: skip
        self.queue.clear()


def stamped_before_step(end: datetime, now: datetime, step: timedelta) -> timedelta | None:
    """The correction for a record that closed just after the clock stepped by `step` but
    whose frames were stamped before: its end is nearer `now - step` than `now`."""
    if abs(step) < timedelta(minutes=1):
        return None
    if abs(end + step - now) < abs(end - now):
        return step
    return None


def _end(record: Record) -> datetime:
    return record.ended_at if isinstance(record, Visit) else record.at


def _restamped(record: Record, d: timedelta | None) -> Record:
    """A queued (not yet stored) record moved by `d` and marked synced."""
    if d is None:
        return record
    if isinstance(record, Visit):
        return dataclasses.replace(
            record, started_at=record.started_at + d, ended_at=record.ended_at + d,
            clock_synced=True,
        )  # fmt: skip
    return dataclasses.replace(record, at=record.at + d, clock_synced=True)
