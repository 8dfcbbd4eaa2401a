"""Agents whose tool has side effects (a payment), one workflow per `on_unknown` policy,
for tests/test_side_effects.py. `pay` writes each call's idempotency key to a file under
RUNCAST_AGENT_DIR, and the first time blocks long enough to be killed."""

from __future__ import annotations

import os
import time
from pathlib import Path

from server import Agent, Step, Workflow, current_tool_call, tool
from tests.agent_flows import ScriptedModel


def _record(name: str) -> bool:
    """Write this call's idempotency key down; True the first time."""
    path = Path(os.environ.get("RUNCAST_AGENT_DIR", ".")) / f"{name}.keys"
    first = not path.exists()
    with path.open("a") as f:
        f.write(current_tool_call().idempotency_key + "\n")
    return first


def _pay(policy: str):  # one tool per policy, named pay
    @tool(name="pay", timeout=120, side_effects=True, on_unknown=policy)  # type: ignore[arg-type]
    def pay(amount: int) -> str:
        """Charge the customer."""
        if _record(f"pay-{policy}"):
            time.sleep(90)
        return f"charged {amount}"

    return pay


SCRIPT = [("Paying.", [("pay", {"amount": 30})]), (" Then: {results}.", [])]
workflows = {
    policy: Workflow(
        f"pay_{policy}",
        [Step("bill", agent=Agent("Biller", model=ScriptedModel("biller", SCRIPT), tools=[_pay(policy)]))],
    )
    for policy in ("ask", "fail", "retry")
}
pay_ask, pay_fail, pay_retry = workflows["ask"], workflows["fail"], workflows["retry"]
