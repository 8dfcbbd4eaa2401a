"""A small app backend in front of runcast: it starts a run for one of its users and hands
that user's browser a token that can only watch and answer that run.

    RUNCAST_AUTH_SECRET=$(openssl rand -hex 32); export RUNCAST_AUTH_SECRET
    python -m server --workflows tests/ask_flows.py &        # runcast, checking signed tokens
    python examples/app_backend.py                            # this app, on :8001
    curl -XPOST localhost:8001/approvals -H 'X-User: alice' -d '{"topic": "AI trends"}'
      -> {"run_id": ..., "token": ..., "watch": "http://127.0.0.1:8000/#/runs/...?token=..."}

Open `watch` in a browser: the dashboard signs in as alice, for that run only, and shows
its question; alice answers there. Your app knows who its users are (here, a header stands
in for your login); runcast knows them only through the tokens your app signs.
`python examples/app_backend.py --once alice` does one request's work and prints it.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import httpx

from server import mint_token

RUNCAST = os.environ.get("RUNCAST_URL", "http://127.0.0.1:8000")
SECRET = os.environ["RUNCAST_AUTH_SECRET"]  # the same secret runcast checks tokens with


def start_for(user: str, topic: str) -> dict[str, Any]:
    """Start an approval run owned by `user`, and mint the browser's token for it."""
    as_user = mint_token(SECRET, sub=user, scope="start", workflows=["approval"], ttl=60)  # just for this call
    reply = httpx.post(
        f"{RUNCAST}/api/runs",
        json={"workflow": "approval", "input": {"topic": topic}},
        headers={"Authorization": f"Bearer {as_user}"},
    )
    reply.raise_for_status()
    run_id = reply.json()["run_id"]
    browser = mint_token(SECRET, sub=user, scope="read respond", runs=[run_id], ttl=900)
    return {"run_id": run_id, "token": browser, "watch": f"{RUNCAST}/#/runs/{run_id}?token={browser}"}


def app() -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def approvals(request: Request) -> JSONResponse:
        user = request.headers.get("x-user")  # your app's login goes here
        if not user:
            return JSONResponse({"error": "sign in first"}, 401)
        topic = (await request.json()).get("topic", "")
        return JSONResponse(start_for(user, topic), 201)

    return Starlette(routes=[Route("/approvals", approvals, methods=["POST"])])


if __name__ == "__main__":
    if sys.argv[1:2] == ["--once"]:
        import json

        print(json.dumps(start_for(sys.argv[2], "AI trends")))
    else:
        import uvicorn

        uvicorn.run(app(), host="127.0.0.1", port=8001)
