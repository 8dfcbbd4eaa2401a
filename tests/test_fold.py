"""A run's snapshot is the fold of its events (server/fold.py), whatever the workflow does.

The property test makes random workflows (every kind of group, steps that retry, fail,
are skipped, ask, are refused, and loops), runs each on a real engine and SQLite file,
answering what is asked, and checks that folding the stored events from the state a run
is created in gives exactly the stored snapshot. The same cases, kept in
tests/fold_cases.json, check the dashboard's js/fold.js (test_fold_js)."""

from __future__ import annotations

import asyncio
import json
import random
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server import Condition, Engine, Loop, Parallel, Router, Step, StepContext, StepInput, Steps, Workflow
from server.fold import fold, fold_all, new_run
from server.settings import Settings
from server.store.sqlite import SqliteStore

CASES = Path(__file__).with_name("fold_cases.json")
FOLD_JS = Path(__file__).parent.parent / "js" / "fold.js"
Tree = Any  # ("step", behaviour) | (group kind, [trees], choice)
BEHAVIOURS = (
    *("ok", "progress", "flaky", "fail", "fail_skipped", "ask", "sleep"),
    *("confirm_yes", "confirm_no", "confirm_cancel"),
)


def trees() -> st.SearchStrategy[Tree]:
    leaf = st.tuples(st.just("step"), st.sampled_from(BEHAVIOURS))
    kinds = st.sampled_from(("steps", "parallel", "condition", "router", "loop"))
    return st.recursive(
        leaf,
        lambda inner: st.tuples(kinds, st.lists(inner, min_size=1, max_size=3), st.integers(0, 7)),
        max_leaves=6,
    )


def build(tree: Tree, name: str, attempts: dict[str, int], behaviours: dict[str, str]) -> Any:
    """The workflow node a tree stands for (names are unique at every depth); `attempts`
    counts each step's tries, `behaviours` is filled with what each step does."""
    kind = tree[0]
    if kind == "step":
        behaviours[name] = tree[1]
        return _step(tree[1], name, attempts)
    children = [build(child, f"{name}{i}", attempts, behaviours) for i, child in enumerate(tree[1])]
    choice = tree[2]
    if kind == "steps":
        return Steps(name, children)
    if kind == "parallel":
        return Parallel(*children, name=name)
    if kind == "condition":
        return Condition(name, lambda _: choice % 2 == 0, children)
    if kind == "router":
        picked = [c.name for i, c in enumerate(children) if (choice >> i) & 1] or [children[0].name]
        return Router(name, lambda _: picked, children)
    return Loop(name, children, max_iterations=1 + choice % 3)


def _step(behaviour: str, name: str, attempts: dict[str, int]) -> Step:
    async def run(step_input: StepInput, ctx: StepContext) -> Any:
        attempts[name] = attempts.get(name, 0) + 1
        if behaviour == "progress":  # a leaf's own `iteration` field changes no state
            ctx.progress(current=1, total=2, iteration=5)
        if behaviour == "flaky" and attempts[name] == 1:
            raise RuntimeError("the first try fails")
        if behaviour.startswith("fail"):
            raise RuntimeError("always fails")
        if behaviour == "ask":
            return await ctx.ask(f"{name}?", {"type": "string"})
        if behaviour == "sleep":
            await ctx.sleep(0.02)
        return name

    confirm = behaviour.startswith("confirm")
    return Step(
        name,
        run,
        max_retries=1 if behaviour == "flaky" else 0,
        retry_delay=0,
        skip_on_failure=behaviour == "fail_skipped",
        requires_confirmation=confirm,
        on_reject="cancel" if behaviour == "confirm_cancel" else "skip",
    )


async def run_and_answer(engine: Engine, name: str, behaviours: dict[str, str], cancel_asks: bool) -> str:
    """Start a run, answer what it asks (confirmations as `behaviours` say; with
    `cancel_asks`, cancel it at its first question instead), and return its id once it
    ended (its sleeps end by themselves)."""
    snapshot, _ = await engine.start(name)
    run_id = snapshot["run_id"]
    async with asyncio.timeout(20):
        while True:
            active = engine._active.get(run_id)
            if active is not None:
                await asyncio.shield(active.done)
            snapshot = await engine.store.get_run(run_id)
            assert snapshot is not None
            if snapshot["status"] in ("completed", "failed", "cancelled"):
                return run_id
            for request in list(snapshot["waiting_for"]):
                behaviour = behaviours[request["step"].rsplit("/", 1)[-1]]
                if cancel_asks and behaviour == "ask":
                    await engine.cancel(run_id)
                    break
                value = "an answer" if behaviour == "ask" else behaviour == "confirm_yes"
                await engine.respond(run_id, request["request_id"], value)
            await asyncio.sleep(0.01)


class Stored:
    """The state queued with each event of each run, in the order queued (= seq order): a
    spy on the store's two ways of queueing an event."""

    def __init__(self, store: SqliteStore) -> None:
        self.states: dict[str, list[tuple[int, dict[str, Any]]]] = {}
        self.count: dict[str, int] = {}
        for name in ("emit", "append_nowait"):
            setattr(store, name, self._spy(getattr(store, name)))

    def _spy(self, queue: Any) -> Any:
        def spied(run_id: str, event: str, step: str | None, data: Any, *more: Any, **named: Any) -> Any:
            seq = self.count[run_id] = self.count.get(run_id, 0) + 1
            state = more[0] if more else named.get("state")
            if state is not None:
                self.states.setdefault(run_id, []).append((seq, json.loads(json.dumps({**state, "last_seq": seq}))))
            return queue(run_id, event, step, data, *more, **named)

        return spied


async def stored_case(store: SqliteStore, run_id: str, stored: Stored | None = None) -> dict[str, Any]:
    snapshot = await store.get_run(run_id)
    assert snapshot is not None
    events = [json.loads(e.frame) for e in await store.read_events(run_id, 0, 100_000)]
    return {"snapshot": snapshot, "events": events, "states": stored.states.get(run_id, []) if stored else []}


def kept(case: dict[str, Any]) -> dict[str, Any]:
    """What tests/fold_cases.json keeps of a case: the events and the final snapshot."""
    return {"snapshot": case["snapshot"], "events": case["events"]}


def created(snapshot: dict[str, Any]) -> dict[str, Any]:
    """The state the run was created in, from what its snapshot says of it."""
    steps = [s["name"] for s in snapshot["steps"]]
    return new_run(
        snapshot["run_id"], snapshot["workflow"], snapshot["input"], steps, snapshot["created_at"], snapshot["owner"]
    )


def check(case: dict[str, Any]) -> None:
    """The stored snapshot is the fold of all the events; and each state stored on the way
    (when known) the fold of the events committed with it."""
    snapshot, events = case["snapshot"], case["events"]
    shown = json.dumps({"events": events}, indent=1)[:4000]
    assert fold_all(created(snapshot), events) == snapshot, shown
    for seq, state in case.get("states", []):
        assert fold_all(created(snapshot), events[:seq]) == state, f"after seq {seq}: {shown}"


async def run_tree(tree: Tree, cancel_asks: bool) -> dict[str, Any]:
    attempts: dict[str, int] = {}
    behaviours: dict[str, str] = {}
    workflow = Workflow("w", [build(tree, "s", attempts, behaviours)])
    with tempfile.TemporaryDirectory() as tmp:
        store = SqliteStore(str(Path(tmp) / "fold.db"))
        await store.open()
        engine = Engine(store, [workflow], Settings())
        stored = Stored(store)
        try:
            run_id = await run_and_answer(engine, "w", behaviours, cancel_asks)
            return await stored_case(store, run_id, stored)
        finally:
            await engine.shutdown()
            await store.close()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tree=trees(), cancel_asks=st.booleans())
def test_folding_a_runs_events_gives_its_stored_snapshot(tree: Tree, cancel_asks: bool) -> None:
    check(asyncio.run(run_tree(tree, cancel_asks)))


def test_folding_a_resumed_run_gives_its_stored_snapshot(tmp_path: Path) -> None:
    """A run cut off by a stop (a crash writes nothing more) and resumed by the next engine."""

    async def scenario() -> dict[str, Any]:
        gate = asyncio.Event()

        async def slow(step_input: StepInput) -> str:
            await gate.wait()
            return "late"

        workflow = Workflow(
            "r", [Step("a", lambda _: "a"), Parallel(Step("b", slow), Step("c", lambda _: 1), name="p")]
        )
        path = str(tmp_path / "resume.db")
        store = SqliteStore(path)
        await store.open()
        engine = Engine(store, [workflow], Settings())
        snapshot, _ = await engine.start("r")
        while (await store.get_run(snapshot["run_id"]) or {}).get("last_seq", 0) < 6:
            await asyncio.sleep(0.01)
        await engine.shutdown()
        await store.close()
        gate.set()
        store = SqliteStore(path)
        await store.open()
        engine = Engine(store, [workflow], Settings())
        await engine.recover()
        await engine.wait(snapshot["run_id"])
        case = await stored_case(store, snapshot["run_id"])
        await engine.shutdown()
        await store.close()
        return case

    case = asyncio.run(scenario())
    assert "run_resumed" in [e["event"] for e in case["events"]]
    check(case)


def test_the_kept_cases_fold_to_their_snapshots() -> None:
    """tests/fold_cases.json: the cases the JavaScript fold is checked against."""
    cases = json.loads(CASES.read_text())
    assert len(cases) >= 10
    kinds = {e["event"] for case in cases for e in case["events"]}
    assert {"step_skipped", "input_requested", "input_received", "run_cancelled", "run_failed"} <= kinds
    assert {"sleep_started", "sleep_ended"} <= kinds
    for case in cases:
        check(case)


@pytest.mark.skipif(shutil.which("node") is None, reason="Node is not installed")
def test_the_dashboards_fold_agrees_after_every_event() -> None:
    """js/fold.js folds each kept case event by event; after every event its state is
    the Python fold's."""
    script = f"""
        import {{ fold, newRun }} from {json.dumps(FOLD_JS.as_uri())};
        import {{ readFileSync }} from 'node:fs';
        const cases = JSON.parse(readFileSync({json.dumps(str(CASES))}, 'utf8'));
        const out = cases.map(({{ snapshot: s, events }}) => {{
          const run = newRun(s.run_id, s.workflow, s.input, s.steps.map((x) => x.name), s.created_at, s.owner);
          return events.map((e) => JSON.stringify(fold(run, e)));
        }});
        process.stdout.write(JSON.stringify(out));
    """
    done = subprocess.run(["node", "--input-type=module", "-e", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-4000:]
    by_js = json.loads(done.stdout)
    cases = json.loads(CASES.read_text())
    for case, states in zip(cases, by_js, strict=True):
        run = created(case["snapshot"])
        for event, state in zip(case["events"], states, strict=True):
            assert json.loads(state) == fold(run, event), f"after {event}"


def make_cases(count: int = 30, seed: int = 7) -> list[dict[str, Any]]:
    """Cases for tests/fold_cases.json: random workflows, run for real."""
    rng = random.Random(seed)
    return [kept(asyncio.run(run_tree(_random_tree(rng, 3), rng.random() < 0.2))) for _ in range(count)]


def _random_tree(rng: random.Random, depth: int) -> Tree:
    if depth == 0 or rng.random() < 0.4:
        return ("step", rng.choice(BEHAVIOURS))
    kind = rng.choice(("steps", "parallel", "condition", "router", "loop"))
    return (kind, [_random_tree(rng, depth - 1) for _ in range(rng.randint(1, 3))], rng.randint(0, 7))


if __name__ == "__main__":  # python -m tests.test_fold: write the kept cases again
    CASES.write_text(json.dumps(make_cases(), sort_keys=True) + "\n")
    print(f"wrote {CASES}")


# ---- the rules, one by one (no store) ------------------------------------------------


def ev(event: str, step: str | None = None, seq: int | None = None, **data: Any) -> dict[str, Any]:
    return {"event": event, "step": step, "ts": f"t{seq}", "seq": seq, "data": data}


def test_each_rule_of_the_fold() -> None:
    run = new_run("r", "w", {"x": 1}, ["g", "g/a", "g/b", "c"], "t0")
    fold_all(run, [ev("run_started", seq=1), ev("step_started", "g", 2, attempt=1), ev("step_started", "g/a", 3)])
    assert (run["status"], run["started_at"], run["last_seq"]) == ("running", "t1", 3)
    assert [s["status"] for s in run["steps"]] == ["running", "running", "pending", "pending"]
    assert run["steps"][1]["attempts"] == 1  # no `attempt`: one more than before
    fold_all(run, [ev("progress", "g/a", 4, iteration=9), ev("step_failed", "g/a", 5, error="e", will_retry=True)])
    assert run["steps"][1]["attempts"] == 1  # a leaf's progress changes no state, whatever its fields
    assert (run["steps"][1]["status"], run["steps"][1]["error"], run["steps"][1]["finished_at"]) == (
        "failed",
        "e",
        "t5",
    )
    fold_all(run, [ev("step_started", "g/a", 6, attempt=2), ev("step_completed", "g/a", 7, output=[1])])
    assert run["steps"][1] == {**run["steps"][1], "status": "completed", "output": [1], "error": None, "attempts": 2}
    fold_all(run, [ev("step_skipped", "g/b", 8, reason="condition"), ev("progress", "g", 9, iteration=2)])
    assert [s["status"] for s in run["steps"]] == ["running", "pending", "pending", "pending"]  # the loop's next turn
    assert (run["steps"][0]["attempts"], run["steps"][1]["output"]) == (2, None)
    fold_all(run, [ev("step_skipped", "g", 10, reason="not_chosen")])
    assert [s["status"] for s in run["steps"]] == ["skipped", "skipped", "skipped", "pending"]
    ask = {"request_id": "q1", "prompt": "?", "schema": None}
    fold_all(run, [ev("step_started", "c", 11, attempt=1), ev("input_requested", "c", 12, **ask)])
    fold_all(run, [ev("input_requested", "c", 13, **ask)])  # the same request again: listed once
    assert (run["status"], run["steps"][3]["status"], run["waiting_for"]) == (
        "waiting",
        "waiting",
        [ask | {"step": "c"}],
    )
    fold_all(run, [ev("input_received", "c", 14, request_id="q1", value=1), ev("run_cancelled", seq=15)])
    assert run["steps"][3] == {**run["steps"][3], "status": "failed", "error": "cancelled", "finished_at": "t15"}
    assert (run["status"], run["finished_at"], run["waiting_for"], run["error"]) == ("cancelled", "t15", [], None)
    fold_all(run, [ev("something_new", "c", 16, x=1)])  # unknown events change nothing but last_seq
    assert run["last_seq"] == 16 and run["status"] == "cancelled"


def test_sleeps_of_a_run() -> None:
    run = new_run("r", "w", None, ["p", "p/a", "p/b", "c"], "t0")
    fold_all(run, [ev("run_started", seq=1), ev("step_started", "p", 2), ev("step_started", "p/a", 3)])
    fold_all(run, [ev("step_started", "p/b", 4), ev("sleep_started", "p/a", 5, until="T2")])
    assert (run["status"], run["wake_at"], run["steps"][1]["status"], run["steps"][1]["wake_at"]) == (
        "sleeping",
        "T2",
        "sleeping",
        "T2",
    )
    fold_all(run, [ev("sleep_started", "p/b", 6, until="T1")])
    assert run["wake_at"] == "T1"  # the earliest
    ask = {"request_id": "q", "prompt": "?", "schema": None}
    fold_all(run, [ev("input_requested", "c", 7, **ask)])
    assert (run["status"], run["wake_at"]) == ("waiting", None)  # a branch asks: waiting
    fold_all(run, [ev("sleep_ended", "p/b", 8), ev("input_received", "c", 9, request_id="q", value=1)])
    assert (run["status"], run["wake_at"], "wake_at" in run["steps"][2]) == ("sleeping", "T2", False)
    assert run["steps"][2]["status"] == "sleeping"  # held until the run goes on
    fold_all(run, [ev("sleep_ended", "p/a", 10)])
    assert (run["status"], run["wake_at"]) == ("running", None)
    assert [s["status"] for s in run["steps"]] == ["running"] * 4
    fold_all(run, [ev("sleep_started", "c", 11, until="T3"), ev("run_cancelled", seq=12)])
    assert (run["status"], run["wake_at"], run["steps"][3]["status"]) == ("cancelled", None, "failed")
    assert "wake_at" not in run["steps"][3]


def test_ends_of_a_run() -> None:
    def ended(*events: dict[str, Any]) -> dict[str, Any]:
        run = new_run("r", "w", None, ["a", "b"], "t0")
        return fold_all(run, [ev("run_started", seq=1), ev("step_started", "a", 2, attempt=1), *events])

    done = ended(ev("step_completed", "a", 3, output=1), ev("run_completed", seq=4, output=2))
    assert (done["status"], done["output"], [s["status"] for s in done["steps"]]) == (
        "completed",
        2,
        ["completed", "skipped"],
    )
    failed = ended(ev("run_failed", seq=3, error="boom"))
    assert (failed["status"], failed["error"], failed["steps"][0]["error"]) == ("failed", "boom", "boom")
    resumed = ended(ev("run_resumed", seq=3, reason="restart"))
    assert (resumed["status"], resumed["started_at"]) == ("running", "t1")
