"""Steps that hold other steps: Steps, Parallel, Condition, Loop and Router.

A nested step is named by its path, e.g. "review/draft", in events and snapshots.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

from .step import Step, StepInput, StepOutput


class Group:
    """A step made of steps; `children` are run by the engine as the kind says."""

    def __init__(self, name: str, steps: Sequence[Node]) -> None:
        if not name or "/" in name:
            raise ValueError(f"step name {name!r} must be non-empty and contain no '/'")
        names = [s.name for s in steps]
        if len(set(names)) != len(names):
            raise ValueError(f"{name!r} has two steps with the same name: {names}")
        self.name: str = name
        self.children: list[Node] = list(steps)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, {[c.name for c in self.children]})"


class Steps(Group):
    """Steps run one after the other, as one named step."""

    def __init__(self, name: str, steps: Sequence[Node], *, description: str | None = None) -> None:
        super().__init__(name, steps)
        self.description = description


class Parallel(Group):
    """Steps run at the same time; the output is {step name: output}. One failure fails all."""

    def __init__(self, *steps: Node, name: str, description: str | None = None) -> None:
        super().__init__(name, steps)
        self.description = description


class Condition(Group):
    """`steps` run only if `evaluator(step_input)` (sync or async) is true; else they are skipped."""

    def __init__(
        self, name: str, evaluator: Callable[[StepInput], Any], steps: Sequence[Node], *, description: str | None = None
    ) -> None:
        super().__init__(name, steps)
        self.evaluator = evaluator
        self.description = description


class Loop(Group):
    """`steps` run again and again until `end_condition(outputs)` is true (it gets the
    iteration's StepOutputs) or `max_iterations` is reached."""

    def __init__(
        self,
        name: str,
        steps: Sequence[Node],
        end_condition: Callable[[list[StepOutput]], Any] | None = None,
        max_iterations: int = 3,
        *,
        description: str | None = None,
    ) -> None:
        super().__init__(name, steps)
        if max_iterations < 1:
            raise ValueError("max_iterations must be at least 1")
        self.end_condition = end_condition
        self.max_iterations = max_iterations
        self.description = description


class Router(Group):
    """`selector(step_input)` picks which of `choices` run: a step, a list of steps, or names."""

    def __init__(
        self,
        name: str,
        selector: Callable[[StepInput], Any],
        choices: Sequence[Node],
        *,
        description: str | None = None,
    ) -> None:
        super().__init__(name, choices)
        self.selector = selector
        self.description = description


Node = Step | Group


def walk(nodes: Sequence[Node], prefix: str = "") -> Iterator[tuple[str, Node]]:
    """Every step with its path, parents before their children, in declared order."""
    for node in nodes:
        path = f"{prefix}{node.name}"
        yield path, node
        if isinstance(node, Group):
            yield from walk(node.children, path + "/")
