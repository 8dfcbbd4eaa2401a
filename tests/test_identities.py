"""Who may do what (contract 7.2, 7.3): signed tokens, owners, scopes, expiry and refresh,
minted tokens. Unit tests of server/identities.py, then real servers over real sockets."""

from __future__ import annotations

import asyncio
import base64
import inspect
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
import websockets
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from server.commands import Caller, Commands
from server.identities import ANYONE, Authenticator, Identity, mint_token
from server.protocol import BadRequest, Forbidden, RunNotFound, Unauthorized

from .harness import BACKENDS, Client, ServerProcess, http

SECRET = "s" * 40
ASK_FLOWS = Path(__file__).with_name("ask_flows.py")


def token(sub: str = "alice", ttl: float = 300, **claims: Any) -> str:
    return jwt.encode({"sub": sub, "exp": int(time.time() + ttl), **claims}, SECRET, algorithm="HS256")


def _unsigned(claims: dict[str, Any]) -> str:
    def part(obj: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


# ---- tokens (no server) -----------------------------------------------------------------


def test_each_kind_of_bad_token_is_refused() -> None:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = rsa_key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    auth = Authenticator(["plain-admin-token"], secret=SECRET, public_key=pem, issuer="idp", audience="runcast")
    good = {"sub": "alice", "exp": int(time.time() + 60), "iss": "idp", "aud": ["other", "runcast"]}
    assert auth.identify(jwt.encode(good, SECRET, algorithm="HS256")).sub == "alice"
    assert auth.identify(jwt.encode(good, rsa_key, algorithm="RS256")).scope == frozenset(
        {"start", "read", "cancel", "respond"}
    )
    assert auth.identify("plain-admin-token") == ANYONE
    bad = {
        "signed with another secret": jwt.encode(good, "t" * 40, algorithm="HS256"),
        "alg none": _unsigned(good),
        "HS256 signed with the public key (algorithm confusion)": _hs256_with(pem, good),
        "an algorithm not configured": jwt.encode(good, ec.generate_private_key(ec.SECP256R1()), algorithm="ES256"),
        "no sub": jwt.encode({k: v for k, v in good.items() if k != "sub"}, SECRET, algorithm="HS256"),
        "no exp": jwt.encode({k: v for k, v in good.items() if k != "exp"}, SECRET, algorithm="HS256"),
        "expired": jwt.encode({**good, "exp": int(time.time() - 5)}, SECRET, algorithm="HS256"),
        "wrong issuer": jwt.encode({**good, "iss": "evil"}, SECRET, algorithm="HS256"),
        "wrong audience": jwt.encode({**good, "aud": "else"}, SECRET, algorithm="HS256"),
        "unknown scope": jwt.encode({**good, "scope": "read fly"}, SECRET, algorithm="HS256"),
        "runs not a list": jwt.encode({**good, "runs": "r1"}, SECRET, algorithm="HS256"),
        "garbage": "a.b.c",
        "empty": "",
    }
    for why, text in bad.items():
        with pytest.raises(Unauthorized):
            auth.identify(text)
            pytest.fail(f"accepted a token with {why}")
    with pytest.raises(ValueError, match="32 bytes"):
        Authenticator(secret="short")


def _hs256_with(pem: bytes, claims: dict[str, Any]) -> str:
    """A token signed HS256 with the RSA public key's PEM as the secret (PyJWT refuses to
    make one, so it is made by hand)."""
    import hashlib
    import hmac

    def part(obj: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    signing = f"{part({'alg': 'HS256', 'typ': 'JWT'})}.{part(claims)}"
    mac = hmac.new(pem, signing.encode(), hashlib.sha256).digest()
    return signing + "." + base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def test_a_minted_token_can_do_no_more_than_its_minter() -> None:
    auth = Authenticator(secret=SECRET)
    alice = auth.identify(token("alice", 100, scope="read respond", runs=["r1", "r2"]))
    minted, expires = auth.mint(alice, {"scope": "read", "runs": ["r1"], "ttl": 900})
    narrow = auth.identify(minted)
    assert (narrow.sub, narrow.scope, narrow.runs) == ("alice", frozenset({"read"}), frozenset({"r1"}))
    assert expires <= time.time() + 101  # never after the minter's own token
    assert auth.identify(auth.mint(alice, {})[0]).scope == alice.scope  # default: the caller's
    for asked in ({"scope": "read cancel"}, {"runs": ["r3"]}, {"runs": ["r1", "x"]}):
        with pytest.raises(Forbidden):
            auth.mint(alice, asked)
    for asked in ({"ttl": 86_401}, {"ttl": 0}, {"scope": "fly"}, {"runs": "r1"}):
        with pytest.raises(BadRequest):
            auth.mint(alice, asked)
    with pytest.raises(BadRequest, match="sub"):
        auth.mint(ANYONE, {})  # a --token caller has no sub of its own: it must give one
    assert auth.identify(auth.mint(ANYONE, {"sub": "bob", "scope": "read"})[0]).sub == "bob"
    with pytest.raises(BadRequest, match="--auth-secret"):
        Authenticator(["t"]).mint(ANYONE, {"sub": "bob"})
    assert Authenticator(secret=SECRET).identify(mint_token(SECRET, sub="carol", workflows=["echo"])).workflows == {
        "echo"
    }


class _Store:
    """Just enough of a store for the command layer: runs by id."""

    def __init__(self, runs: dict[str, dict[str, Any]]) -> None:
        self.runs = runs

    async def get_run(self, run_id: str, *, steps: bool = True) -> dict[str, Any] | None:
        return self.runs.get(run_id)

    async def read_events(self, run_id: str, after: int, limit: int) -> list[Any]:
        raise AssertionError("read past the check")


class _Runtime:
    def __init__(self, store: _Store) -> None:
        self.store = store
        self.engine = self  # every engine call is past the check: it must not be reached

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"{name} reached past the check")


async def test_every_operation_on_a_run_answers_an_unreachable_run_as_an_unknown_one() -> None:
    """Every method of Commands that takes a run_id, called by an identity that does not
    reach the run, fails exactly as for a run that does not exist. New operations are found
    by their `run_id` parameter, so none can forget the check."""
    commands = Commands(_Runtime(_Store({"theirs": {"run_id": "theirs", "owner": "bob"}})), max_input_bytes=1000)  # type: ignore[arg-type]
    eve = Caller("ws", Identity(sub="eve", scope=frozenset({"start", "read", "cancel", "respond"})))
    narrow = Caller("ws", Identity(sub="eve", scope=frozenset({"read"}), runs=frozenset({"other"})))
    checked = []
    for name, method in inspect.getmembers(commands, inspect.ismethod):
        params = inspect.signature(method).parameters
        if name.startswith("_") or "run_id" not in params or name == "start":
            continue  # (start's run_id names a run to make: another owner's is `conflict`, as the contract says)
        args = {p: ("x" if p == "request_id" else 1 if p in ("after", "limit") else None) for p in params}
        for caller in (eve, narrow):
            answers = []
            for run_id in ("theirs", "missing"):
                try:
                    await method(**{**args, "caller": caller, "run_id": run_id})
                except (RunNotFound, Forbidden) as exc:
                    answers.append((type(exc).__name__, exc.message.replace(run_id, "<id>")))
            assert len(answers) == 2 and answers[0] == answers[1], (name, answers)
        checked.append(name)
    assert {"get_run", "cancel", "respond", "read_events", "follow"} <= set(checked)


# ---- real servers -------------------------------------------------------------------------


@pytest.fixture
def signed(new_server: Callable[..., ServerProcess]) -> Iterator[ServerProcess]:
    """A server (on each database) that takes signed tokens and one admin --token."""
    with new_server("--auth-secret", SECRET, "--token", "admin-token", "--workflows", str(ASK_FLOWS)) as proc:
        yield proc


async def as_(server: ServerProcess, tok: str) -> Client:
    return await Client.connect(server.url, additional_headers={"Authorization": f"Bearer {tok}"})


@pytest.mark.parametrize("backend", BACKENDS, indirect=True, scope="module")
async def test_each_identity_reaches_only_its_runs_through_every_door(signed: ServerProcess) -> None:
    alice, bob = await as_(signed, token("alice")), await as_(signed, token("bob"))
    admin = await as_(signed, "admin-token")
    mine = await alice.start("approval", {"topic": "x"}, subscribe=False)
    assert (await alice.request({"type": "poll", "run_id": mine}))["run"]["owner"] == "alice"
    for message in (
        {"type": "poll"},
        {"type": "subscribe"},
        {"type": "cancel"},
        {"type": "respond", "request_id": "q", "value": True},
    ):
        theirs = await bob.request({**message, "run_id": mine})
        unknown = await bob.request({**message, "run_id": "no-such-run"})
        assert theirs["code"] == unknown["code"] == "run_not_found", (message, theirs)
        assert theirs["message"].replace(mine, "ID") == unknown["message"].replace("no-such-run", "ID")
    for path in (f"/api/runs/{mine}", f"/api/runs/{mine}/events"):
        status, body = await asyncio.to_thread(http, "GET", signed.http_url + path, None, _bearer(token("bob")))
        assert status == 404 and body["error"]["code"] == "run_not_found", body
    status, _ = await asyncio.to_thread(
        http,
        "GET",
        f"{signed.http_url}/api/runs/{mine}/events?token={token('bob')}",
        None,
        {"Accept": "text/event-stream"},
    )
    assert status == 404  # the event stream takes ?token=, and bob reaches nothing there either
    listing = f"{signed.http_url}/api/runs?token={token('bob')}"  # no other endpoint takes ?token=
    status, _ = await asyncio.to_thread(http, "GET", listing, None, {"Accept": "text/event-stream"})
    assert status == 401
    theirs = await bob.start("approval", {"topic": "y"}, subscribe=False)
    assert [r["run_id"] for r in (await bob.request({"type": "list_runs"}))["runs"]] == [theirs]
    assert {r["run_id"] for r in (await admin.request({"type": "list_runs"}))["runs"]} == {mine, theirs}
    owned = await admin.request({"type": "list_runs", "owner": "alice"})
    assert [r["run_id"] for r in owned["runs"]] == [mine]
    taken = await bob.request({"type": "start", "workflow": "approval", "input": {"topic": "x"}, "run_id": mine})
    assert taken["code"] == "conflict"  # another owner's run id


async def test_scope_forbids_and_by_says_who(signed: ServerProcess) -> None:
    reader = await as_(signed, token("alice", scope="read"))
    refused = await reader.request({"type": "start", "workflow": "echo", "input": 1})
    assert refused["code"] == "forbidden" and "start" in refused["message"]
    assert (await reader.request({"type": "ping"}))["type"] == "pong"  # the socket stays open
    status, body = await asyncio.to_thread(
        http, "POST", signed.http_url + "/api/runs", {"workflow": "echo"}, _bearer(token("alice", scope="read"))
    )
    assert status == 403 and body["error"]["code"] == "forbidden"
    alice = await as_(signed, token("alice"))
    run_id = await alice.start("approval", {"topic": "x"})
    asked = await alice.wait(lambda m: m.get("event") == "input_requested")
    await alice.request(
        {"type": "respond", "run_id": run_id, "request_id": asked["data"]["request_id"], "value": {"ok": True}}
    )
    events = await alice.until_terminal(run_id)
    assert next(e for e in events if e["event"] == "input_received")["data"]["by"] == "alice"
    other = await alice.start("approval", {"topic": "y"})
    await alice.wait(lambda m: m.get("event") == "input_requested" and m["run_id"] == other)
    await alice.request({"type": "cancel", "run_id": other})
    assert (await alice.until_terminal(other))[-1]["data"] == {"by": "alice"}


async def test_a_socket_closes_when_its_token_expires_unless_refreshed(signed: ServerProcess) -> None:
    short = await as_(signed, token("alice", ttl=2))
    await short.request({"type": "subscribe_runs"})
    with pytest.raises(websockets.ConnectionClosed) as closed:
        await short.next(timeout=10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
    kept = await as_(signed, token("alice", ttl=2))
    assert (await kept.request({"type": "auth", "token": token("bob")}))["code"] == "unauthorized"  # another sub
    assert (await kept.request({"type": "auth", "token": token("alice", ttl=60)}))["type"] == "authed"
    await asyncio.sleep(3)
    assert (await kept.request({"type": "list_runs"}))["type"] == "runs"  # refreshed: still open, still alice


async def test_minted_tokens_over_both_doors(signed: ServerProcess) -> None:
    alice = await as_(signed, token("alice"))
    run_id = await alice.start("approval", {"topic": "x"}, subscribe=False)
    minted = await alice.request({"type": "mint_token", "scope": "read", "runs": [run_id], "ttl": 60})
    assert minted["type"] == "token" and minted["expires_at"].endswith("Z")
    viewer = await as_(signed, minted["token"])
    assert (await viewer.request({"type": "poll", "run_id": run_id}))["run"]["run_id"] == run_id
    assert (await viewer.request({"type": "cancel", "run_id": run_id}))["code"] == "forbidden"
    assert (await viewer.request({"type": "start", "workflow": "echo"}))["code"] == "forbidden"
    wider = await viewer.request({"type": "mint_token", "scope": "read cancel"})
    assert wider["code"] == "forbidden"
    status, body = await asyncio.to_thread(
        http, "POST", signed.http_url + "/api/tokens", {"sub": "carol", "scope": "read"}, _bearer("admin-token")
    )
    assert status == 201 and jwt.decode(body["token"], SECRET, algorithms=["HS256"])["sub"] == "carol"


async def test_tokens_never_reach_the_log(tmp_path: Path) -> None:
    secret_token = token("alice")
    with ServerProcess(tmp_path / "log.db", "--auth-secret", SECRET, "--log-level", "debug") as server:
        c = await as_(server, secret_token)
        run_id = await c.start("echo", 1)
        await c.request({"type": "auth", "token": secret_token})
        await c.request({"type": "auth", "token": secret_token + "x"})
        await asyncio.to_thread(
            http,
            "GET",
            f"{server.http_url}/api/runs/{run_id}/events?token={secret_token}",
            None,
            {"Accept": "text/event-stream"},
        )
        await asyncio.to_thread(http, "GET", f"{server.http_url}/api/runs", None, _bearer(secret_token))
        await c.close()
    logged = server.log_path.read_text()
    signature = secret_token.rsplit(".", 1)[1]
    assert "GET /api/runs" in logged and signature not in logged


def _bearer(tok: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {tok}"}


async def test_limits_count_per_identity(tmp_path: Path) -> None:
    args = ("--auth-secret", SECRET, "--starts-per-second", "2", "--connections-per-identity", "2")
    with ServerProcess(tmp_path / "quota.db", *args) as server:
        a1, a2 = await as_(server, token("alice")), await as_(server, token("alice"))
        bob = await as_(server, token("bob"))
        replies = [await c.request({"type": "start", "workflow": "echo", "subscribe": False}) for c in (a1, a2, a1)]
        assert [r["type"] for r in replies] == ["started", "started", "error"]  # one bucket for alice's sockets
        assert replies[2]["code"] == "rate_limited" and replies[2]["retry_after"] > 0
        assert (await bob.request({"type": "start", "workflow": "echo", "subscribe": False}))["type"] == "started"
        third = await Client.connect(server.url)  # not signed in yet: counted by address
        await third.send({"type": "auth", "token": token("alice"), "id": "a"})
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await third.next(timeout=10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013
        assert (await bob.request({"type": "ping"}))["type"] == "pong"


async def test_every_node_of_a_cluster_applies_the_same_rules(pg_url: str, tmp_path: Path) -> None:
    flags = ("--auth-secret", SECRET, "--workflows", str(ASK_FLOWS))
    with ServerProcess.node(pg_url, tmp_path, "a", *flags) as a, ServerProcess.node(pg_url, tmp_path, "b", *flags) as b:
        alice_a = await as_(a, token("alice"))
        run_id = await alice_a.start("count", {"n": 200, "delay": 0.02}, subscribe=False)
        bob_b, alice_b = await as_(b, token("bob")), await as_(b, token("alice"))
        assert (await bob_b.request({"type": "poll", "run_id": run_id}))["code"] == "run_not_found"
        assert (await bob_b.request({"type": "cancel", "run_id": run_id}))["code"] == "run_not_found"
        assert [r["run_id"] for r in (await alice_b.request({"type": "list_runs"}))["runs"]] == [run_id]
        assert (await alice_b.request({"type": "list_runs"}))["runs"][0]["owner"] == "alice"
        await alice_b.request({"type": "subscribe", "run_id": run_id})
        assert (await alice_b.request({"type": "cancel", "run_id": run_id}))["type"] == "cancel_requested"
        events = await alice_b.until_terminal(run_id, 20)  # run on node a, cancelled through node b
        assert events[-1]["event"] == "run_cancelled" and events[-1]["data"] == {"by": "alice"}
