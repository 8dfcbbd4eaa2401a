"""Workflows with schedules in code (contract 8.3), for tests/test_schedules.py."""

from server import Schedule, Step, Workflow

ticker = Workflow(
    "ticker",
    [Step("tick", lambda si: si.input)],
    schedules=[Schedule("each-second", every=1, input={"from": "code"})],
)
nightly = Workflow(
    "nightly",
    [Step("batch", lambda si: "done")],
    schedules=[Schedule("nightly", cron="0 3 * * *", timezone="Europe/Paris", input={"customers": "all"})],
)
