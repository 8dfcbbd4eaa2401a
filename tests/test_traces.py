"""Contract 11: OpenTelemetry traces, received by a real OTLP/HTTP receiver started here
(decoded with opentelemetry-proto): one trace per run with its step, tool, model, ask and
sleep spans, `runcast.run_id` on each, errors marked, and one trace id across a kill -9."""

from __future__ import annotations

import asyncio
import gzip
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from .harness import Client, ServerProcess

pb = pytest.importorskip("opentelemetry.proto.collector.trace.v1.trace_service_pb2")
FLOWS = str(Path(__file__).with_name("flows.py"))


class Receiver:
    """An OTLP/HTTP trace receiver on 127.0.0.1: keeps every span it is sent."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                request = pb.ExportTraceServiceRequest()
                request.ParseFromString(body)
                receiver.take(request)
                reply = pb.ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def take(self, request: Any) -> None:
        for resource in request.resource_spans:
            for scope in resource.scope_spans:
                for span in scope.spans:
                    attrs = {a.key: a.value.string_value or a.value.int_value for a in span.attributes}
                    self.spans.append(
                        {
                            "name": span.name,
                            "trace": span.trace_id.hex(),
                            "id": span.span_id.hex(),
                            "parent": span.parent_span_id.hex(),
                            "attrs": attrs,
                            "error": span.status.code == 2,
                            "events": [e.name for e in span.events],
                        }
                    )

    def of(self, run_id: str) -> list[dict[str, Any]]:
        return [s for s in self.spans if s["attrs"].get("runcast.run_id") == run_id]

    async def until(self, run_id: str, name: str, count: int = 1, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while sum(s["name"] == name for s in self.of(run_id)) < count:
            assert time.monotonic() < deadline, (name, [s["name"] for s in self.of(run_id)])
            await asyncio.sleep(0.05)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[Receiver]:
    r = Receiver()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", r.url)  # the standard variables configure the exporter
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
    yield r
    r.close()


def one_trace(spans: list[dict[str, Any]], workflow: str) -> dict[str, Any]:
    """The run's spans are one trace under its root, the start; returns the root."""
    roots = [s for s in spans if s["name"] == f"start {workflow}"]
    assert len(roots) == 1, [s["name"] for s in spans]
    assert {s["trace"] for s in spans} == {roots[0]["trace"]}
    return roots[0]


async def test_a_run_s_trace_has_its_steps_tools_asks_and_errors(receiver: Receiver, tmp_path: Path) -> None:
    with ServerProcess(tmp_path / "t.db", "--workflows", FLOWS) as server:
        c = await Client.connect(server.url)
        flaky = await c.start("flaky", None)
        await c.until_terminal(flaky)
        await receiver.until(flaky, "step flaky", count=3)
        spans = receiver.of(flaky)
        one_trace(spans, "flaky")
        tries = [s for s in spans if s["name"] == "step flaky"]
        assert [s["error"] for s in tries] == [True, True, False] and "exception" in tries[0]["events"]
        tools = await c.start("tools", {"topic": "durable agents"})
        await c.until_terminal(tools)
        await receiver.until(tools, "step research")
        names = {s["name"] for s in receiver.of(tools)}
        assert any(n.startswith("tool ") for n in names) and any(n.startswith("model ") for n in names), names
        one_trace(receiver.of(tools), "tools")
        asking = await c.start("approve", "x")
        asked = await c.wait(lambda m: m.get("run_id") == asking and m.get("event") == "input_requested")
        await receiver.until(asking, "ask approve")
        await c.request(
            {"type": "respond", "run_id": asking, "request_id": asked["data"]["request_id"], "value": {"ok": True}}
        )
        await c.until_terminal(asking)
        await receiver.until(asking, "step approve", count=2)
        one_trace(receiver.of(asking), "approve")
        await c.close()


async def test_a_run_resumed_after_kill_9_goes_on_in_the_same_trace(receiver: Receiver, tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "k.db", "--workflows", FLOWS).start()
    try:
        c = await Client.connect(server.url)
        run_id = await c.start("nap", {"seconds": 1.5})
        await receiver.until(run_id, "sleep nap")  # exported before the kill
        await c.close()
        server.kill()
        server.start()
        d = await Client.connect(server.url)
        await d.request({"type": "subscribe", "run_id": run_id, "after": 0})
        await d.until_terminal(run_id)
        await receiver.until(run_id, "step after")
        spans = receiver.of(run_id)
        root = one_trace(spans, "nap")  # spans from both processes, one trace
        assert {s["parent"] for s in spans if s["name"].startswith("step ")} == {root["id"]}
        assert [s["name"] for s in spans].count("step nap") == 2  # before the sleep, and after it
        await d.close()
    finally:
        server.stop()
