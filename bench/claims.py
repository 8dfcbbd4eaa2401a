"""The cost of a cluster's claim query (issue 24) as pending runs pile up: EXPLAIN ANALYZE of
the claim a node runs each beat (due runs, highest priority first, then oldest, with each
concurrency key's room counted), beside the claim before time and order (oldest unheld
run first), on the same table in the same run.

    .venv/bin/python bench/claims.py [--sizes 1000,10000,100000]      # ~1-2 min

On a throwaway PostgreSQL (tests/pg.py), a database migrated by runcast, filled with N
pending runs of one workflow: half with a concurrency key (N/100 keys, limit 1, one run of
each key already running on a live node), priorities -5..5, a tenth delayed an hour. Each
query is planned and run 5 times (EXPLAIN (ANALYZE, BUFFERS)); the row gives the median
execution time and the indexes the plan uses.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import tempfile
from pathlib import Path
from statistics import median

import asyncpg
from common import ROOT  # noqa: F401 - puts the checkout on sys.path (for tests.pg)

from server.store import open_store
from server.store.pg_cluster import _CLAIM
from server.wire import utc_iso
from tests import pg

BEFORE = """SELECT n, owner FROM runs WHERE status IN ('pending', 'running') AND owner IS NULL
    AND workflow = ANY($4::text[]) AND $2::float8 > 0 AND $3::text <> '' AND $5::text <> ''
    ORDER BY n LIMIT $1 FOR UPDATE SKIP LOCKED"""  # the parameters the claim now has, unused

FILL = """
INSERT INTO runs (run_id, workflow, status, input, created_at, priority, concurrency_key, concurrency_limit,
                  scheduled_for, owner)
SELECT 'r' || i, 'batch', CASE WHEN i % 2 = 0 AND i <= $2 THEN 'running' ELSE 'pending' END, 'null',
       '2026-12-07T00:00:00.000Z', (i % 11) - 5,
       CASE WHEN i % 2 = 0 THEN 'k' || (i % $2) END, CASE WHEN i % 2 = 0 THEN 1 END,
       CASE WHEN i % 10 = 3 THEN $3 END,
       CASE WHEN i % 2 = 0 AND i <= $2 THEN 'alive' END
FROM generate_series(1, $1) AS i
"""


async def measure(conn: asyncpg.Connection, query: str, params: tuple) -> tuple[float, str]:
    times, indexes = [], set()
    for _ in range(5):
        async with conn.transaction():
            (plan,) = await conn.fetchrow(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {query}", *params)
        plan = json.loads(plan)[0]
        times.append(plan["Execution Time"])
        indexes |= set(re.findall(r'"Index Name": "(\w+)"', json.dumps(plan)))
    return median(times), ", ".join(sorted(indexes)) or "none (sequential scans)"


async def main(args: argparse.Namespace) -> None:
    sizes = [int(s) for s in args.sizes.split(",")]
    postgres = pg.Postgres(Path(tempfile.mkdtemp(prefix="runcast-claims-"))).start()
    try:
        print("| pending runs | claim now (priority, due, keys) | indexes it uses | claim before issue 24 | ratio |")
        print("|---|---|---|---|---|")
        for size in sizes:
            url = postgres.new_database()
            store = open_store(url, "bench")  # runs the migrations
            await store.open()
            await store.close()
            conn = await asyncpg.connect(url)
            try:
                await conn.execute("INSERT INTO nodes (node_id) VALUES ('alive') ON CONFLICT DO NOTHING")
                await conn.execute(FILL, size, max(1, size // 100), utc_iso(4102444800))
                await conn.execute("ANALYZE runs")
                now = utc_iso(1796688000)
                params = (100, 10.0, "me", ["batch"], now)
                ours, used = await measure(conn, _CLAIM, params)
                before, _ = await measure(conn, BEFORE, params)
                print(f"| {size:,} | {ours:.2f} ms | {used} | {before:.2f} ms | {ours / before:.1f}x |", flush=True)
                if size == sizes[-1]:  # the worst case: every due run of higher priority is of a full key
                    await conn.execute("UPDATE runs SET concurrency_key = 'k0', priority = 9 WHERE status = 'pending'")
                    await conn.execute(FILL.replace("'r' || i", "'free' || i"), 100, 1, utc_iso(4102444800))
                    await conn.execute("ANALYZE runs")
                    ours, used = await measure(conn, _CLAIM, params)
                    before, _ = await measure(conn, BEFORE, params)
                    row = f"| {size:,} behind one full key | {ours:.2f} ms | {used} | {before:.2f} ms |"
                    print(f"{row} {ours / before:.1f}x |", flush=True)
            finally:
                await conn.close()
    finally:
        postgres.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sizes", default="1000,10000,100000")
    asyncio.run(main(parser.parse_args()))
