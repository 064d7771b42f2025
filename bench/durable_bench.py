"""Durable engine benchmark: many instances of a six-activity chain and a fan-out of 100
activities on the devhost's engine (task hub in an embedded PostgreSQL), beside the same
activity called directly in a loop, in one run.

    python -m bench.durable_bench [--instances 1000] [--fan 100] [--workers 4]

Figures are rates, and the engine's cost per activity is the difference between the two
per-activity times: the machine is shared, so only figures of one run compare.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import tempfile
import time
from pathlib import Path

import psycopg

from devhost.discovery import load_app
from devhost.host import DevHost
from devhost.services import free_port, start_postgres
from devhost.settings import HostSettings

APP_DIR = Path(__file__).resolve().parent / "durable_app"
TARGET_ACTIVITIES_PER_S = 200.0
TARGET_OVERHEAD_MS = 5.0


def _postgres_cpu_s(data_dir: Path) -> float:
    """CPU seconds the cluster in ``data_dir`` has used so far: its server process, its live
    backends and the backends that have exited (Linux /proc; 0 elsewhere)."""
    try:
        postmaster = int((data_dir / "postmaster.pid").read_text().split()[0])
        tick = os.sysconf("SC_CLK_TCK")
        total = 0
        pids = [postmaster]
        children = Path(f"/proc/{postmaster}/task/{postmaster}/children")
        pids += [int(p) for p in children.read_text().split()]
        for pid in pids:
            with contextlib.suppress(OSError):
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                # utime, stime, and for the server also its reaped children's cutime, cstime.
                total += sum(int(f) for f in fields[11 : 15 if pid == postmaster else 13])
        return total / tick
    except (OSError, ValueError, IndexError):
        return 0.0


async def _drive(host: DevHost, name: str, inputs: list[str], database_url: str) -> float:
    """Start one instance per input and wait until all have completed; returns seconds."""
    hub = host.task_hub
    assert hub is not None and host.durable is not None
    started = time.perf_counter()
    prefix = f"{name}-{time.monotonic_ns()}"
    for index, value in enumerate(inputs):
        await hub.start(name, f"{prefix}-{index}", json.dumps(value))
    host.durable.wake()
    conn = await psycopg.AsyncConnection.connect(database_url, autocommit=True)
    while True:
        cur = await conn.execute(
            "SELECT count(*) FILTER (WHERE status = 'Completed'),"
            " count(*) FILTER (WHERE status IN ('Failed', 'Terminated'))"
            " FROM devhost.durable_instances WHERE starts_with(instance_id, %s)",
            (prefix,),
        )
        row = await cur.fetchone()
        assert row is not None
        if row[1]:
            raise SystemExit(f"{row[1]} {name} instances failed; see the log")
        if row[0] == len(inputs):
            await conn.close()
            return time.perf_counter() - started
        await asyncio.sleep(0.2)


async def _run(args: argparse.Namespace, database_url: str, pg_dir: Path) -> None:
    app = load_app(APP_DIR, module_name="bench_durable_function_app")
    settings = HostSettings(
        http_port=0, thread_count=8, durable_workers=args.workers, durable_poll_interval_s=0.02
    )
    host = DevHost(app, settings, database_url=database_url)
    await host.start()
    try:
        from bench_durable_function_app import CHAIN_LENGTH, digest  # type: ignore[import-not-found]

        # Baseline: the same activity, called directly, as many times.
        activities = args.instances * CHAIN_LENGTH
        t0 = time.perf_counter()
        value = "seed"
        for _ in range(activities):
            value = digest(value)
        direct_s = time.perf_counter() - t0

        cpu0, pg0 = time.process_time(), _postgres_cpu_s(pg_dir)
        chain_s = await _drive(
            host, "bench_chain", [f"i{i}" for i in range(args.instances)], database_url
        )
        chain_cpu_s = time.process_time() - cpu0
        chain_pg_s = _postgres_cpu_s(pg_dir) - pg0
        fan_s = await _drive(host, "bench_fan", [str(args.fan)], database_url)
    finally:
        await host.stop(grace_s=5)

    chain_rate = activities / chain_s
    direct_ms = direct_s * 1000 / activities
    durable_ms = chain_s * 1000 / activities
    overhead_ms = durable_ms - direct_ms
    print(f"chain: {args.instances} instances x {CHAIN_LENGTH} activities in {chain_s:.1f} s")
    print(
        f"  activities/s                 {chain_rate:10.1f}   (target >= "
        f"{TARGET_ACTIVITIES_PER_S:.0f})"
    )
    print(f"  orchestrations completed/s   {args.instances / chain_s:10.1f}")
    print(f"  machine load average (1 min) {os.getloadavg()[0]:10.1f}   (2 cores shared)")
    print(f"  direct calls/s (baseline)    {activities / direct_s:10.1f}")
    print(f"  durable / direct time        {chain_s / direct_s:10.1f} x")
    print(
        f"  overhead per activity        {overhead_ms:10.2f} ms (target < "
        f"{TARGET_OVERHEAD_MS:.0f} ms; wall time, {args.workers} workers in parallel)"
    )
    print(
        f"  engine CPU per activity      {chain_cpu_s * 1000 / activities:10.2f} ms "
        "(this process, all threads: the figure least moved by other load)"
    )
    print(
        f"  PostgreSQL CPU per activity  {chain_pg_s * 1000 / activities:10.2f} ms "
        "(the bench's own cluster, all its processes)"
    )
    print(
        f"fan-out: {args.fan} activities in one task_all in {fan_s:.2f} s, "
        f"{args.fan / fan_s:.1f} activities/s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=int, default=1000)
    parser.add_argument("--fan", type=int, default=100)
    parser.add_argument("--workers", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="durable-bench-") as tmp:
        pg = start_postgres(Path(tmp) / "pg", free_port(), fsync=False)
        try:
            asyncio.run(_run(args, pg.url, pg.data_dir))
        finally:
            pg.stop()


if __name__ == "__main__":
    main()
