"""The one supervisor both cameras use, on real threads: a device that fails to open, hangs in a
read, opens slowly or ends."""

from __future__ import annotations

import threading
import time

from kiosk.lifecycle import Backoff
from kiosk.supervise import EndOfStream, Outage, Supervisor
from tests.broker import wait_until


class Device:
    """Handles are dicts; `plan` says, per open, how it goes: "fail", or the frame at which its
    read hangs until `release` (None: never). Every connection ends after `end_at` frames."""

    def __init__(
        self, plan: list[str | int | None], open_s: float = 0.0, end_at: int | None = None
    ) -> None:
        self.plan, self.open_s, self.end_at = plan, open_s, end_at
        self.handles: list[dict] = []
        self.published: list[tuple[int, int]] = []
        self.outages: list[Outage] = []
        self.release = threading.Event()

    def open(self) -> dict:
        n = len(self.handles)
        how = self.plan[min(n, len(self.plan) - 1)]
        handle = {"n": n, "i": 0, "opened_on": threading.get_ident(), "closed_on": None}
        self.handles.append(handle)
        time.sleep(self.open_s)
        if how == "fail":
            raise OSError("no such device")
        handle["hang_at"] = how
        return handle

    def read(self, handle: dict) -> tuple[int, int]:
        if handle["i"] == handle["hang_at"]:
            self.release.wait(30)
        if handle["i"] == self.end_at:
            raise EndOfStream
        handle["i"] += 1
        time.sleep(0.01)
        return handle["n"], handle["i"]

    def close(self, handle: dict) -> None:
        handle["closed_on"] = threading.get_ident()

    def supervisor(self, **kw) -> Supervisor[dict, tuple[int, int]]:
        return Supervisor(
            "test",
            open=self.open,
            read=self.read,
            publish=self.published.append,
            close=self.close,
            backoff=Backoff(0.05, 1.0),
            on_outage=self.outages.append,
            **kw,
        )


def test_a_hung_read_is_abandoned_and_the_device_reopened_with_backoff():
    device = Device(["fail", "fail", 3, None])
    sup = device.supervisor(stall_timeout_s=0.3)
    with sup:
        assert wait_until(lambda: any(n == 3 for n, _ in device.published), timeout=10)
        hung = device.handles[2]
        assert hung["closed_on"] is None  # not released under the read that is blocked in it
        causes = [(o.cause, o.delay_s) for o in device.outages]
        # Two failed opens double the delay; frames from the third reset it before the stall.
        assert causes[:3] == [("cannot open", 0.05), ("cannot open", 0.1), ("stalled", 0.05)]
        assert device.outages[2].silent_s >= 0.3 and sup.reconnects >= 3
        device.release.set()
        assert wait_until(lambda: hung["closed_on"] is not None, timeout=5)
        assert hung["closed_on"] == hung["opened_on"]  # released by the thread that opened it
        assert (2, 4) not in device.published  # what the abandoned reader read is dropped
        assert not sup.ended
    current = device.handles[-1]
    assert current["closed_on"] == current["opened_on"]  # close() waited for the reader
    sup.close()  # idempotent


def test_a_slow_open_is_said_not_abandoned_and_the_end_is_not_reopened():
    device = Device([None], open_s=1.5, end_at=2)
    waits: list[float] = []
    ends: list[bool] = []
    sup = device.supervisor(
        stall_timeout_s=0.4, on_slow_open=waits.append, on_end=lambda: ends.append(True)
    )
    assert sup.start() is sup.start()
    try:
        assert wait_until(lambda: sup.ended, timeout=10)
        assert ends == [True] and device.outages == [] and sup.reconnects == 0
        assert len(device.handles) == 1 and device.handles[0]["closed_on"] is not None
        assert device.published == [(0, 1), (0, 2)]
        assert len(waits) >= 2 and waits == sorted(waits) and waits[0] > 0.4
    finally:
        sup.close()
