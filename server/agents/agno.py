"""Agno workflows served as they are: an Agno `Workflow` found by `--workflows` becomes a
runcast Workflow with the same name, description and steps.

Each top-level Agno step (a Step with an agent, a team, a function or a nested workflow,
or a Steps, Parallel, Condition, Loop or Router) is one runcast step, run by Agno's own
machinery (`aexecute_stream`; one that holds a plain function, which Agno's async path
would call on the event loop, runs `execute_stream` in a worker thread), so Agno's evaluators,
selectors, end conditions and aggregation behave exactly as under Agno; runcast
checkpoints between these steps.
While a step runs, Agno's events become runcast events:

    model text of the step's agent or team leader  -> step_output (members' text is not
                                                      streamed: their tool calls are)
    tool call started / completed / error          -> tool_call_started / _completed / _failed
                                                      (a call cut off by a crash: _failed
                                                      "interrupted" when the step runs again)
    a step inside a Steps, Parallel, ... container -> progress {"step", "status"}

A step Agno reports as unsuccessful fails the runcast step. Agno's own retries are turned
off and given to runcast (`max_retries` of the step, or the largest inside a container), so
a retry is a new runcast attempt and no output is streamed twice in one attempt. Agno's
`skip_on_failure` becomes runcast's; `human_review.on_error`, whose default ("skip") would
hide every failure, is not followed: a failure fails the step, as Agno's "fail" does.

Runcast stores everything: an Agno Workflow's `db` is not used (said once in the log),
nor is its session: each run is its own Agno session (session_id = the run id), and
`session_state` starts from the Workflow's for every step, and no workflow history
(`add_workflow_history_to_steps`) is given to the steps. A step sees what it would see
under Agno: the run's input and the earlier steps' outputs, as runcast stored them (JSON:
a pydantic output comes back as a dict). A container's stored output is what Agno hands
on from it: its last inner step's content, or for a Parallel {branch: content}.

Agno is imported only when a loaded module has already imported it.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import sys
from collections.abc import Iterable, Iterator
from dataclasses import asdict, is_dataclass
from typing import TYPE_CHECKING, Any

from ..bounds import EventTooLarge, clip_error
from ..workflow import Step, StepInput, StepOutput, Workflow
from .replay import INTERRUPTED

if TYPE_CHECKING:
    from ..engine.context import StepContext

log = logging.getLogger("runcast.agno")

_CONTAINER_CHILDREN = ("steps", "else_steps", "choices")


class AgnoStepFailed(Exception):
    """An Agno step reported that it did not succeed (its StepOutput had success=False)."""


def agno_workflows(values: Iterable[Any]) -> list[Workflow]:
    """The Agno Workflows among `values` (a module's top level), each as a runcast Workflow."""
    if "agno.workflow.workflow" not in sys.modules:  # nothing there can be an Agno Workflow
        return []
    from agno.workflow.workflow import Workflow as AgnoWorkflow

    found = {id(value): value for value in values if isinstance(value, AgnoWorkflow)}  # once, even if aliased
    return [from_agno(value) for value in found.values()]


def from_agno(agno_workflow: Any) -> Workflow:
    """A runcast Workflow that runs the Agno Workflow's top-level steps as its steps."""
    name = agno_workflow.name
    if not name:
        raise ValueError("an Agno Workflow needs a name to be served (runs find their workflow by it)")
    if callable(agno_workflow.steps) or agno_workflow.agent is not None:
        raise ValueError(f"Agno workflow {name!r}: only a list of steps is served, not a function or a WorkflowAgent")
    agno_workflow.initialize_workflow()
    agno_workflow._prepare_steps()  # bare agents, teams and functions become Steps, as Agno does
    if agno_workflow.db is not None:
        log.info(
            "Agno workflow %r: its db (%s) is not used; runcast stores its runs and events",
            name,
            type(agno_workflow.db).__name__,
        )
    nodes = list(agno_workflow.steps or [])
    names = [node.name or f"step_{i + 1}" for i, node in enumerate(nodes)]
    steps = [_step(agno_workflow, node, i, names) for i, node in enumerate(nodes)]
    log.info("Agno workflow %r served, its steps: %s", name, ", ".join(repr(n) for n in names))
    schema = agno_workflow.input_schema
    return Workflow(
        name,
        steps,
        description=agno_workflow.description or "",
        validate_input=_input_check(schema) if schema is not None else None,
        input_schema=schema.model_json_schema() if schema is not None else None,
    )


def _step(agno_workflow: Any, node: Any, index: int, names: list[str]) -> Step:
    """One top-level Agno step as a runcast step; its retries and skip_on_failure move to runcast."""
    from agno.workflow.step import Step as AgnoStep

    retries = 0
    for inner in _agno_steps(node):
        # Agno's own values are kept on the step, so that wrapping it again gives the same.
        inner._runcast_retries = getattr(inner, "_runcast_retries", inner.max_retries)
        retries = max(retries, inner._runcast_retries)
        inner.max_retries = 0  # runcast retries: a retry is a new attempt, streamed afresh
    _refuse_human_review(agno_workflow.name, node)
    skip = False
    if isinstance(node, AgnoStep):
        step: Any = node
        step._runcast_skip = skip = getattr(step, "_runcast_skip", step.skip_on_failure)
        step.skip_on_failure = False  # so that Agno raises and runcast marks the step skipped

    async def execute(step_input: StepInput, ctx: StepContext) -> Any:
        return await _execute(agno_workflow, node, index, names, step_input, ctx)

    def execute_in_thread(step_input: StepInput, ctx: StepContext) -> Any:
        return _execute_in_thread(agno_workflow, node, index, names, step_input, ctx)

    run = execute_in_thread if _blocking(node) else execute
    return Step(names[index], run, description=node.description, max_retries=retries, skip_on_failure=skip)


def _agno_steps(node: Any) -> Iterator[Any]:
    """Every Agno Step in `node` (itself, a container's children, a nested workflow's steps)."""
    from agno.workflow.step import Step as AgnoStep

    prepare = getattr(node, "_prepare_steps", None)
    if prepare is not None and not isinstance(node, AgnoStep):
        prepare()  # containers turn their bare agents and functions into Steps (kept)
    if isinstance(node, AgnoStep):
        yield node
        if node.workflow is not None and isinstance(node.workflow.steps, list):
            node.workflow._prepare_steps()
            for child in node.workflow.steps:
                yield from _agno_steps(child)
        return
    for attr in _CONTAINER_CHILDREN:
        children = getattr(node, attr, None)
        if isinstance(children, list):
            for child in children:
                yield from _agno_steps(child)


def _refuse_human_review(workflow: str, node: Any) -> None:
    """Agno's pauses for a person have no runcast counterpart here: refuse them at startup
    rather than skip a confirmation someone relies on (runcast's own is `ctx.ask`)."""
    review = getattr(node, "human_review", None)
    wants = ("requires_confirmation", "requires_user_input", "requires_output_review", "requires_iteration_review")
    if review is not None and any(getattr(review, flag, False) for flag in wants):
        raise ValueError(
            f"Agno workflow {workflow!r}, step {node.name!r}: human review is not served by runcast; "
            "use a runcast step with ctx.ask instead"
        )
    for attr in _CONTAINER_CHILDREN:
        children = getattr(node, attr, None)
        for child in children if isinstance(children, list) else []:
            _refuse_human_review(workflow, child)


def _input_check(schema: Any) -> Any:
    """Agno's own input validation against its pydantic `input_schema`; the run keeps JSON."""
    from agno.utils.agent import validate_input

    def check(value: Any) -> Any:
        if value is None:
            raise ValueError("input is required: the workflow has an input_schema")
        return as_json(validate_input(value, schema))

    return check


def _blocking(node: Any) -> bool:
    """True if `node` holds an Agno Step with a plain (not async) function: Agno's async path
    would call it on the event loop, stalling the server, so the node runs in a worker
    thread, through Agno's sync path."""
    import inspect

    for step in _agno_steps(node):
        fn = step.active_executor
        if step.executor_type == "function" and not (inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn)):
            return True
    return False


async def _execute(
    agno_workflow: Any, node: Any, index: int, names: list[str], step_input: StepInput, ctx: StepContext
) -> Any:
    """Run one top-level Agno step with Agno's machinery, its events sent as runcast's."""
    from agno.run.cancel import acleanup_member_runs, acleanup_run

    _end_interrupted(ctx, await ctx.history())
    agno_input, options = _prepared(agno_workflow, index, names, step_input, ctx)
    events = _Events(ctx)
    try:
        async for item in node.aexecute_stream(agno_input, **options):
            events.take(item)
    except asyncio.CancelledError:
        events.end_open("cancelled")
        raise
    except Exception as exc:
        events.end_open(clip_error(str(exc) or type(exc).__name__))
        raise
    finally:
        await acleanup_member_runs(ctx.run_id)
        await acleanup_run(ctx.run_id)
    return _finished(node, names[index], events)


def _execute_in_thread(
    agno_workflow: Any, node: Any, index: int, names: list[str], step_input: StepInput, ctx: StepContext
) -> Any:
    """`_execute` for a step that holds a plain function, in a worker thread, through Agno's
    sync path."""
    from agno.run.cancel import cleanup_member_runs, cleanup_run

    _end_interrupted(ctx, ctx.history_sync())
    agno_input, options = _prepared(agno_workflow, index, names, step_input, ctx)
    events = _Events(ctx)
    try:
        for item in node.execute_stream(agno_input, **options):
            events.take(item)
            if ctx.cancelled:  # the run is over; leave Agno's generator (it is closed)
                events.end_open("cancelled")
                return None
    except Exception as exc:
        events.end_open(clip_error(str(exc) or type(exc).__name__))
        raise
    finally:
        cleanup_member_runs(ctx.run_id)
        cleanup_run(ctx.run_id)
    return _finished(node, names[index], events)


def _prepared(
    agno_workflow: Any, index: int, names: list[str], step_input: StepInput, ctx: StepContext
) -> tuple[Any, dict[str, Any]]:
    """Agno's StepInput for the step, and the options its (a)execute_stream is called with:
    one Agno session per run, no store of Agno's, every event streamed."""
    from agno.run.base import RunContext
    from agno.run.workflow import WorkflowRunOutput

    agno_input = _agno_input(agno_workflow, index, names, step_input)
    run_id = ctx.run_id
    run = WorkflowRunOutput(
        run_id=run_id,
        input=agno_input.input,
        session_id=run_id,
        user_id=agno_workflow.user_id,
        workflow_id=agno_workflow.id,
        workflow_name=agno_workflow.name,
    )
    run_context = RunContext(
        run_id=run_id,
        session_id=run_id,
        user_id=agno_workflow.user_id,
        session_state=copy.deepcopy(agno_workflow.session_state or {}),
        workflow_id=agno_workflow.id,
        workflow_name=agno_workflow.name,
        dependencies=agno_workflow.dependencies,
        metadata=agno_workflow.metadata,
    )
    options = {
        "session_id": run_id,
        "user_id": agno_workflow.user_id,
        "stream_events": True,
        "stream_executor_events": True,
        "workflow_run_response": run,
        "run_context": run_context,
        "step_index": index,
        "store_executor_outputs": False,  # runcast keeps the output; nothing to pile up in memory
        "add_dependencies_to_context": agno_workflow.add_dependencies_to_context,
        "add_session_state_to_context": agno_workflow.add_session_state_to_context,
    }
    return agno_input, options


def _finished(node: Any, name: str, events: _Events) -> StepOutput:
    """The runcast output of an Agno step that ran to its end, or the error it failed with."""
    from agno.workflow.step import Step as AgnoStep

    events.end_open("the step ended before the tool call did")
    output = events.output
    if output is None:
        raise AgnoStepFailed(f"Agno step {name!r} gave no output")
    if getattr(output, "is_paused", False):
        raise AgnoStepFailed(f"Agno step {name!r} paused for a person, which runcast does not serve")
    if isinstance(node, AgnoStep) and not output.success:  # a container's flag may sum up tolerated failures
        raise AgnoStepFailed(output.error or f"Agno step {name!r} reported failure")
    return StepOutput(content=_output(node, output), stop=bool(output.stop))


def _end_interrupted(ctx: StepContext, history: list[tuple[str, dict[str, Any]]]) -> None:
    """A step run again after a crash or takeover: its calls cut off then end as "interrupted"
    (the Agno step itself runs again from its start, its tool calls too)."""
    cut_off: dict[str, str] = {}
    for event, data in history:
        if event == "tool_call_started":
            cut_off[str(data.get("call_id"))] = str(data.get("tool"))
        elif event in ("tool_call_completed", "tool_call_failed"):
            cut_off.pop(str(data.get("call_id")), None)
    for call_id, tool in cut_off.items():
        ctx.tool_event("tool_call_failed", {"call_id": call_id, "tool": tool, "error": INTERRUPTED})


def _output(node: Any, output: Any) -> Any:
    """What runcast stores for an Agno step: its content, or for a container what Agno hands
    on from it (the last inner step's content, deepest first); a Parallel's is
    {branch: content}, as runcast's own Parallel gives."""
    from agno.workflow.parallel import Parallel

    if isinstance(node, Parallel) and output.steps:
        return {str(inner.step_name): as_json(_deepest(inner)) for inner in output.steps}
    return as_json(_deepest(output))


def _deepest(output: Any) -> Any:
    while output.steps:
        output = output.steps[-1]
    return output.content


def _agno_input(agno_workflow: Any, index: int, names: list[str], step_input: StepInput) -> Any:
    """Agno's StepInput for a step: the run's input and the earlier top-level steps' outputs,
    rebuilt from what runcast stored (a Parallel's with its branches, as Agno reads them)."""
    from agno.utils.agent import validate_input
    from agno.workflow.parallel import Parallel
    from agno.workflow.types import StepInput as AgnoStepInput
    from agno.workflow.types import StepOutput as AgnoStepOutput
    from agno.workflow.types import StepType

    value = step_input.input
    if agno_workflow.input_schema is not None and value is not None:
        value = validate_input(value, agno_workflow.input_schema)  # the model instance Agno would give
    outputs: dict[str, Any] = {}
    for node, name in zip(agno_workflow.steps[:index], names, strict=False):
        if name not in step_input.previous_step_outputs:
            continue  # skipped
        stored = step_input.previous_step_outputs[name]
        if isinstance(node, Parallel) and isinstance(stored, dict):
            branches = [AgnoStepOutput(step_name=k, content=v) for k, v in stored.items()]
            content = node._build_aggregated_content(branches)
            outputs[name] = AgnoStepOutput(step_name=name, step_type=StepType.PARALLEL, content=content, steps=branches)
        else:
            outputs[name] = AgnoStepOutput(step_name=name, content=stored)
    previous = _deepest(list(outputs.values())[-1]) if outputs else None
    return AgnoStepInput(input=value, previous_step_content=previous, previous_step_outputs=outputs or None)


class _Events:
    """Agno's events during one step, sent as runcast events through the step context."""

    def __init__(self, ctx: StepContext) -> None:
        self.ctx = ctx
        self.open: dict[str, str] = {}  # call_id -> tool, of calls started and not yet ended
        self.calls = 0
        self.output: Any = None  # the last StepOutput Agno gave (the step's own comes last)
        from agno.workflow.types import StepOutput as AgnoStepOutput

        self._output_type = AgnoStepOutput

    def take(self, item: Any) -> None:
        """One item of Agno's stream: an event to send, or a StepOutput to keep."""
        if isinstance(item, self._output_type):
            self.output = item
        else:
            self.send(item)

    def send(self, event: Any) -> None:
        kind = type(event).__name__
        if kind == "RunContentEvent":
            # The step's own agent or team leader; a member's run has a parent_run_id.
            if event.parent_run_id is None and isinstance(event.content, str) and event.content:
                self.ctx.output(event.content)
        elif kind == "ToolCallStartedEvent" and event.tool is not None:
            self._started(event.tool)
        elif kind == "ToolCallCompletedEvent" and event.tool is not None:
            tool = event.tool
            if tool.tool_call_error:
                self._ended(tool, error=str(tool.result))
            else:
                self._ended(tool, result=_result(tool.result))
        elif kind == "ToolCallErrorEvent" and event.tool is not None:
            self._ended(event.tool, error=str(event.error or event.tool.result or "the tool call failed"))
        elif kind in ("StepStartedEvent", "StepCompletedEvent") and event.parent_step_id is not None:
            status = "started" if kind == "StepStartedEvent" else "completed"
            self.ctx.progress(step=event.step_name, status=status)

    def end_open(self, error: str) -> None:
        """End every call still open with tool_call_failed: each start has exactly one end."""
        for call_id, tool in list(self.open.items()):
            self.ctx.tool_event("tool_call_failed", {"call_id": call_id, "tool": tool, "error": error})
        self.open.clear()

    def _call_id(self, tool: Any) -> str:
        if tool.tool_call_id:
            return str(tool.tool_call_id)
        self.calls += 1
        return f"{tool.tool_name}-{self.calls}"

    def _started(self, tool: Any) -> None:
        call_id = self._call_id(tool)
        if call_id in self.open:
            return
        if not tool.tool_call_id:
            tool.tool_call_id = call_id  # so that its end finds it
        self.open[call_id] = str(tool.tool_name)
        data = {"call_id": call_id, "tool": str(tool.tool_name), "args": tool.tool_args or {}}
        try:
            self.ctx.tool_event("tool_call_started", data)
        except EventTooLarge as exc:
            self.ctx.tool_event("tool_call_started", {**data, "args": clip_error(str(exc))})

    def _ended(self, tool: Any, **outcome: Any) -> None:
        call_id = str(tool.tool_call_id or "")
        name = self.open.pop(call_id, None)
        if name is None:  # never started here, or already ended (an error event, then a completed one)
            return
        data = {"call_id": call_id, "tool": name, **outcome}
        if "error" in outcome:
            self.ctx.tool_event("tool_call_failed", {**data, "error": clip_error(outcome["error"])})
            return
        try:
            self.ctx.tool_event("tool_call_completed", data)
        except EventTooLarge as exc:  # as runcast's own agents report a result too large to keep
            self.ctx.tool_event("tool_call_failed", {"call_id": call_id, "tool": name, "error": clip_error(str(exc))})


def _result(text: Any) -> Any:
    """A tool's result as JSON: Agno hands results over as text, so JSON text is parsed back."""
    if not isinstance(text, str):
        return as_json(text)
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return text


def as_json(value: Any) -> Any:
    """An Agno value as JSON: pydantic models and dataclasses as objects, the unknown as text."""
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, dict):
        return {str(k): as_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [as_json(v) for v in value]
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        return dump(mode="json")
    if is_dataclass(value) and not isinstance(value, type):
        return as_json(asdict(value))
    return str(value)
