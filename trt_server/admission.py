"""Admission control: a bounded, first-come-first-served waiting room in front of the engine's slots.

`max_concurrent` slots generate at once; at most `queue_size` requests wait (each at most
`queue_timeout_s`), the rest get 503 with `Retry-After` before any byte is sent. A request with several
streams (`n` > 1, a list of prompts) takes several slots at once, all or none, so two such requests can
never each hold part of what they need and wait for the rest. The queue is strictly in arrival order: a
request that needs more slots than are free also holds back the smaller ones behind it, so it is never
starved by them.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Protocol

from prometheus_client import Counter, Gauge, Histogram

from trt_server.errors import OverloadedError


class AdmissionMetrics(Protocol):
    rejected: Counter
    in_flight: Gauge
    queued: Gauge
    queue_wait: Histogram


class Admission:
    """`slots` engine slots; requests take 1..slots of them, in arrival order."""

    def __init__(self, slots: int, queue_size: int, timeout_s: float, metrics: AdmissionMetrics) -> None:
        self.slots = slots
        self._free = slots
        self._queue_size = queue_size
        self._timeout = timeout_s
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()
        self._metrics = metrics

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def _overloaded(self, why: str) -> OverloadedError:
        self._metrics.rejected.inc()
        retry = max(1, int(self._timeout / 4))
        return OverloadedError(f"The server is busy ({why}); retry later.", headers={"Retry-After": str(retry)})

    def _wake(self) -> None:
        while self._waiters:
            weight, fut = self._waiters[0]
            if fut.done():  # given up, not yet removed by its own coroutine
                self._waiters.popleft()
                continue
            if weight > self._free:
                return
            self._waiters.popleft()
            self._free -= weight
            fut.set_result(None)

    async def acquire(self, weight: int = 1) -> float:
        """Wait for `weight` slots (at most `slots`); returns seconds waited. Raises OverloadedError (503)."""
        if not 1 <= weight <= self.slots:
            raise ValueError(f"weight {weight} outside 1..{self.slots}")
        start = time.perf_counter()
        if not self._waiters and self._free >= weight:
            self._free -= weight  # free slots: taken at once, without yielding
        else:
            if len(self._waiters) >= self._queue_size:
                raise self._overloaded(f"{len(self._waiters)} requests already waiting")
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            entry = (weight, fut)
            self._waiters.append(entry)
            self._metrics.queued.set(len(self._waiters))
            try:
                await asyncio.wait_for(fut, self._timeout)
            except BaseException as e:
                if fut.done() and not fut.cancelled():
                    self.release(weight, admitted=False)  # granted just as the caller gave up
                else:
                    if entry in self._waiters:
                        self._waiters.remove(entry)
                    self._wake()  # a waiter ahead of others left: they may fit now
                if isinstance(e, asyncio.TimeoutError):
                    raise self._overloaded(f"no free slot within {self._timeout:g} s") from None
                raise
            finally:
                self._metrics.queued.set(len(self._waiters))
        self._metrics.in_flight.inc()
        waited = time.perf_counter() - start
        self._metrics.queue_wait.observe(waited)
        return waited

    def release(self, weight: int = 1, *, admitted: bool = True) -> None:
        """Give back `weight` slots taken by `acquire`."""
        if admitted:
            self._metrics.in_flight.dec()
        self._free += weight
        self._wake()
