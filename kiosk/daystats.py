"""Today's numbers of one device, read from the store: the retained MQTT ``stats`` message
and anything else that shows "today" (the status line, a page) read them here."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from kiosk.counters import Counters
from kiosk.days import today
from kiosk.labels import AGE_GROUPS, GENDERS
from kiosk.store import Store
from kiosk.wire import LastVisit, Stats


def day_stats(
    store: Store,
    device_id: str,
    tz: ZoneInfo,
    counters: Counters | None = None,
    now: datetime | None = None,
    outbox_pending: int | None = None,
) -> Stats:
    """Counts of the local day containing `now`, plus the live numbers from `counters`."""
    now = now or datetime.now(UTC)
    day = today(now, tz)
    counts = store.visit_counts(day.start, day.end, device_id)
    checks = store.check_counts(day.start, day.end, device_id)
    by_gender = dict.fromkeys(GENDERS, 0)
    by_age = dict.fromkeys(AGE_GROUPS, 0)
    for (age, gender), n in counts.items():
        by_gender[gender] = by_gender.get(gender, 0) + n
        by_age[age] = by_age.get(age, 0) + n
    last = store.last_visit(device_id)
    return Stats(
        device_id=device_id,
        date=day.day,
        timezone=str(tz),
        visitors=sum(counts.values()),
        gender=by_gender,
        age_groups=by_age,
        failed_checks=int(checks.get("fail", 0)),
        unmeasured_checks=int(checks.get("unmeasured", 0)),
        last_visit=LastVisit(last.ended_at, last.age_group, last.gender) if last else None,
        fps=counters.fps if counters else None,
        uptime_s=int(counters.uptime_s()) if counters else None,
        updated_at=now,
        outbox_pending=outbox_pending,
        camera=counters.camera_state if counters else None,
        clock_synced=counters.clock_synced if counters else None,
    )
