"""The baseline server: bare Starlette WebSocket endpoints on uvicorn, no store, no engine.

    python bench/bare.py --port PORT

Configured as runcast's server is (uvicorn with the same sans-I/O WebSocket protocol class,
no permessage-deflate, 1 MiB frames, pings every 20 s), and sending frames encoded by the
same function (server.wire.event_frame), so that what differs is only what runcast adds:
the store, the engine, the broker and the per-connection queues.

- `/push/{n}`: on any message, send the n + 4 frames runcast sends for `count` n, as fast as
  the socket takes them (the frames are encoded once, beforehand).
- `/ws`: a subscriber. Sends a welcome; on `{"type": "subscribe", "run_id": ...}` answers
  `subscribed` and the two events runcast replays at that point (run_started, step_started),
  then the connection stays subscribed to that run id, idle until events come.
- `/emit`: a control socket. `{"run_id", "n", "rate", "go"}`: waits for the go file, then sends
  n progress events at `rate` per second (0: as fast as possible) to every subscriber of
  run_id, one `send` each, then `run_completed`; answers `{"type": "done"}`. Data: `i`, and
  `t`, the time.time() at which the event was due (as bench/flows.py's `emit` does).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from flows import schedule, wait_for_go

from server.web.serving import WebSocketProtocol
from server.wire import event_frame, utc_now

RUN_ID = "019a0b1c2d3e0000a1b2c3"  # the length of a server-made id


@lru_cache(maxsize=8)
def count_frames(n: int) -> tuple[str, ...]:
    """What runcast sends for `count` n: same fields, same sizes, same number of frames."""
    ts = utc_now()
    frames = [
        event_frame(RUN_ID, 1, "run_started", None, ts, {"workflow": "count", "input": {"n": n, "delay": 0}}),
        event_frame(RUN_ID, 2, "step_started", "count", ts, {"index": 0, "attempt": 1}),
    ]
    frames += [event_frame(RUN_ID, 2 + i, "progress", "count", ts, {"current": i, "total": n}) for i in range(1, n + 1)]
    frames.append(event_frame(RUN_ID, n + 3, "step_completed", "count", ts, {"output": {"count": n}}))
    frames.append(event_frame(RUN_ID, n + 4, "run_completed", None, ts, {"output": {"count": n}}))
    return tuple(frames)


SUBSCRIBERS: dict[str, set[WebSocket]] = {}


async def push(websocket: WebSocket) -> None:
    await websocket.accept()
    frames = count_frames(int(websocket.path_params["n"]))
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        for frame in frames:
            await websocket.send_text(frame)


async def subscriber(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.send_text('{"type":"welcome","protocol":1,"server":"bare"}')
    followed: str | None = None
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            msg: dict[str, Any] = orjson.loads(message.get("text") or message.get("bytes") or b"{}")
            if msg.get("type") != "subscribe":
                continue
            run_id = str(msg["run_id"])
            await websocket.send_text(orjson.dumps({"type": "subscribed", "id": msg.get("id")}).decode())
            ts = utc_now()
            await websocket.send_text(event_frame(run_id, 1, "run_started", None, ts, {"workflow": "emit"}))
            await websocket.send_text(event_frame(run_id, 2, "step_started", "emit", ts, {"index": 0, "attempt": 1}))
            followed = run_id
            SUBSCRIBERS.setdefault(run_id, set()).add(websocket)
    finally:
        if followed is not None:
            SUBSCRIBERS.get(followed, set()).discard(websocket)


async def _send_all(subs: list[WebSocket], frame: str) -> None:
    for ws in subs:
        with contextlib.suppress(Exception):  # a subscriber that went away
            await ws.send_text(frame)


async def emit(websocket: WebSocket) -> None:
    await websocket.accept()
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        cfg = orjson.loads(message.get("text") or b"{}")
        run_id, n = cfg["run_id"], int(cfg["n"])
        await wait_for_go(cfg.get("go"))
        subs = list(SUBSCRIBERS.get(run_id, ()))
        # The same schedule as runcast's `emit`; at rate 0 the loop gets a turn to read and write.
        async for i, due in schedule(n, float(cfg.get("rate", 0)), yield_each=True):
            await _send_all(subs, event_frame(run_id, 2 + i, "progress", "emit", utc_now(), {"i": i, "t": due}))
        await _send_all(subs, event_frame(run_id, n + 3, "run_completed", None, utc_now(), {"output": {"n": n}}))
        await websocket.send_text('{"type":"done"}')


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--port", type=int, required=True)
    args = p.parse_args()
    routes = [
        WebSocketRoute("/push/{n:int}", push),
        WebSocketRoute("/ws", subscriber),
        WebSocketRoute("/emit", emit),
        Route("/healthz", healthz),
    ]
    config = uvicorn.Config(
        Starlette(routes=routes),
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        ws_max_size=1024 * 1024,
        ws_ping_interval=20,
        ws_ping_timeout=20,
        lifespan="off",
        ws=WebSocketProtocol,
        ws_per_message_deflate=False,
    )
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
