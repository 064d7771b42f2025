"""The engine's doorbell: one ring wakes one idle worker, and a ring nobody hears is kept."""

from __future__ import annotations

import asyncio

from devhost.durable import _Doorbell


async def _idle_workers(bell: _Doorbell, stop: asyncio.Event, count: int) -> list[asyncio.Task]:
    workers = [asyncio.create_task(bell.wait(stop, None)) for _ in range(count)]
    await asyncio.sleep(0)
    return workers


def test_one_ring_wakes_one_idle_worker():
    async def scenario() -> list[int]:
        bell, stop = _Doorbell(), asyncio.Event()
        workers = await _idle_workers(bell, stop, 3)
        woken = []
        for _ in range(2):
            bell.ring()
            await asyncio.sleep(0.01)
            woken.append(sum(w.done() for w in workers))
        stop.set()
        await asyncio.gather(*workers)
        return woken

    assert asyncio.run(scenario()) == [1, 2]


def test_a_ring_while_every_worker_is_busy_is_kept_for_the_next_idle_one():
    async def scenario() -> bool:
        bell, stop = _Doorbell(), asyncio.Event()
        bell.ring()
        bell.ring()
        # The kept ring lets the first idle worker through at once (else this times out).
        await asyncio.wait_for(bell.wait(stop, None), timeout=1)
        # Two rings with nobody idle are one piece of news: the second idle worker waits.
        second = asyncio.create_task(bell.wait(stop, 0.05))
        await asyncio.sleep(0.01)
        waited = not second.done()
        await second
        return waited

    assert asyncio.run(scenario())


def test_a_worker_that_timed_out_is_not_woken_by_a_later_ring():
    async def scenario() -> bool:
        bell, stop = _Doorbell(), asyncio.Event()
        await bell.wait(stop, 0.01)
        listener = asyncio.create_task(bell.wait(stop, None))
        await asyncio.sleep(0)
        bell.ring()
        await asyncio.wait_for(listener, timeout=1)
        return listener.done()

    assert asyncio.run(scenario())
