"""runcast's events in the words of Agno's AgentOS (contract 10): the event each stored
event becomes on `/workflows/ws`, and a workflow's AgentOS id. Pure.

Every runcast event becomes exactly one AgentOS event, with `event_index` = seq - 1, so
the indexes go 0, 1, 2, ... with no gap, from the store, whatever restarts happened. The
events with no AgentOS counterpart keep their own meaning under a `Runcast...` name (an
AgentOS client passes over events it does not know). docs/agentos.md has the table.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

_CAMEL = {  # runcast events with no AgentOS counterpart: Runcast + their name in CamelCase
    name: "Runcast" + "".join(part.title() for part in name.split("_"))
    for name in ("progress", "step_skipped", "run_resumed", "sleep_started", "sleep_ended")
}


def agentos_id(name: str) -> str:
    """A workflow's id as AgentOS derives it from its name: "Content Creation Workflow" ->
    "content-creation-workflow"."""
    return name.lower().replace(" ", "-").replace("_", "-")


def _epoch(ts: str | None) -> int:
    try:
        return int(datetime.fromisoformat(ts).timestamp()) if ts else 0
    except ValueError:
        return 0


def to_agentos(event: dict[str, Any], workflow: str, session_id: str | None = None) -> dict[str, Any]:
    """The AgentOS event a stored runcast event (its frame, parsed) becomes."""
    name, data, step = event["event"], event.get("data") or {}, event.get("step")
    run_id = event["run_id"]
    base: dict[str, Any] = {
        "created_at": _epoch(event.get("ts")),
        "workflow_id": agentos_id(workflow),
        "workflow_name": workflow,
        "session_id": session_id,
        "run_id": run_id,
        "event_index": event["seq"] - 1,
    }
    out = {**base, **_body(name, data, step, run_id)}
    if "event" not in out:
        out["event"] = _CAMEL.get(name, "Runcast" + name.title().replace("_", ""))
        out.update(step_name=step, data=data)
    return out


def _body(name: str, data: dict[str, Any], step: str | None, run_id: str) -> dict[str, Any]:
    """What the event says, in AgentOS's fields (no `event` key: no counterpart)."""
    agent = {"run_id": f"{run_id}/{step}", "workflow_run_id": run_id, "agent_name": data.get("agent") or step}
    match name:
        case "run_started":
            return {"event": "WorkflowStarted", "input": data.get("input")}
        case "step_started":
            return {
                "event": "StepStarted",
                "step_name": step,
                "step_index": data.get("index"),
                "attempt": data.get("attempt"),
            }
        case "step_completed":
            return {"event": "StepCompleted", "step_name": step, "content": data.get("output")}
        case "step_failed":
            return {
                "event": "StepError",
                "step_name": step,
                "error": data.get("error"),
                "will_retry": data.get("will_retry"),
            }
        case "step_output":
            return {**agent, "event": "RunContent", "content": data.get("delta"), "content_type": "str"}
        case "tool_call_started" | "tool_call_completed" | "tool_call_failed":
            return {**agent, **_tool(name, data)}
        case "input_requested":
            confirm = data.get("kind") == "confirmation"
            return {
                "event": "StepPaused",
                "step_name": step,
                "step_id": data.get("request_id"),  # answer with continue-workflow's step_requirements
                "requires_confirmation": confirm,
                "confirmation_message": data.get("prompt") if confirm else None,
                "requires_user_input": not confirm,
                "user_input_message": None if confirm else data.get("prompt"),
                "user_input_schema": data.get("schema"),
            }
        case "input_received":
            return {"event": "StepContinued", "step_name": step, "step_id": data.get("request_id")}
        case "run_completed":
            output = data.get("output")
            return {
                "event": "WorkflowCompleted",
                "content": output,
                "content_type": "str" if isinstance(output, str) else "dict",
            }
        case "run_failed":
            return {"event": "WorkflowError", "error": data.get("error")}
        case "run_cancelled":
            return {"event": "WorkflowCancelled", "reason": f"cancelled by {data.get('by') or 'a client'}"}
    return {}


def _of(data: dict[str, Any], key: str) -> dict[str, Any]:
    return {key: data.get(key)}


def _tool(name: str, data: dict[str, Any]) -> dict[str, Any]:
    tool = {"tool_call_id": data.get("call_id"), "tool_name": data.get("tool"), "tool_args": data.get("args")}
    if name == "tool_call_started":
        return {"event": "ToolCallStarted", "tool": tool}
    if name == "tool_call_completed":
        return {
            "event": "ToolCallCompleted",
            "tool": {**tool, "result": data.get("result")},
            "content": data.get("result"),
        }
    return {"event": "ToolCallError", "tool": {**tool, "tool_call_error": True}, "error": data.get("error")}
