"""Where one runcast node on PostgreSQL spends its time: bench/cluster.py's c1a load (chain3
runs over /ws, 4 sockets) against one node on a throwaway PostgreSQL, the node recorded
with py-spy; prints runs/s (while sampled) and the profile's summary: how busy each thread
was, and the top functions by own and by total samples.

    .venv/bin/python bench/pg_profile.py [--runs 3000] [--out DIR]     # DIR/pg-node.txt, .top.txt
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
from pathlib import Path

from common import Profile, start_runcast
from runs import ws_runs

from tests import pg


async def main(args: argparse.Namespace) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="runcast-pgprof-"))
    postgres = pg.Postgres(Path(tempfile.mkdtemp(prefix="runcast-pg-"))).start()
    node = None
    try:
        node = await start_runcast(workdir, "node", db=postgres.new_database())
        await ws_runs(node, 200, 4)  # warm up
        with Profile(args.out, "pg-node", node.pid):
            seconds = await ws_runs(node, args.runs, 4)
        print(f"{args.runs / seconds:,.0f} runs/s over /ws, 1 node on PostgreSQL, while sampled")
        top = Path(args.out) / "pg-node.top.txt"
        print(top.read_text() if top.exists() else "no profile: py-spy is not installed (pip install '.[bench]')")
    finally:
        if node is not None:
            node.stop()
        postgres.stop()
        shutil.rmtree(workdir, ignore_errors=True)
        shutil.rmtree(postgres.base, ignore_errors=True)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=3000)
    p.add_argument("--out", default="/tmp/runcast-pg-profile", help="where the profile goes")
    sys.exit(asyncio.run(main(p.parse_args())))
