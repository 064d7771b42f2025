"""The Grafana dashboard shows the SLO panels, with the same KQL as ops/grafana/queries.kql,
the same objective as the burn-rate alerts, and metric names the app really emits."""

from __future__ import annotations

import json
import re
from pathlib import Path

from shared import telemetry

GRAFANA = Path(__file__).parents[2] / "ops" / "grafana"
ALERTS = Path(__file__).parents[2] / "bicep" / "modules" / "alerts.bicep"


def dashboard() -> dict[str, object]:
    data: dict[str, object] = json.loads((GRAFANA / "advisoros-slo.json").read_text())
    return data


def queries() -> dict[str, str]:
    parts = re.split(r"^// panel: (.+)$", (GRAFANA / "queries.kql").read_text(), flags=re.M)
    return {parts[i].strip(): parts[i + 1].strip() for i in range(1, len(parts), 2)}


def panels() -> list[dict[str, object]]:
    found = dashboard()["panels"]
    assert isinstance(found, list)
    return found


def test_every_panel_runs_the_query_of_the_kql_file() -> None:
    shown = {
        p["title"]: p["targets"][0]["azureLogAnalytics"]["query"]  # type: ignore[index]
        for p in panels()
    }
    assert shown == queries()


def test_the_slo_panels_are_there() -> None:
    titles = [str(p["title"]) for p in panels()]
    for wanted in ("Availability", "p99 latency", "Error budget left", "burn rate"):
        assert any(wanted in t for t in titles), wanted


def test_the_objective_is_the_alerts_objective() -> None:
    target = re.search(r"param availabilityTarget string = '([0-9.]+)'", ALERTS.read_text())
    assert target is not None
    for title, query in queries().items():
        if "budget" in title.lower():
            assert f"(1.0 - {target.group(1)})" in query, title


def test_the_metrics_queried_are_the_metrics_the_app_emits() -> None:
    source = Path(telemetry.__file__).read_text()
    named = set(re.findall(r'name == "([a-z_.]+)"', "\n".join(queries().values())))
    assert named == {"advisoros.webhook.events", "advisoros.servicebus.dead_letters"}
    for name in named:
        assert f'"{name}"' in source, name


def test_panels_do_not_overlap() -> None:
    cells = set()
    for panel in panels():
        grid = panel["gridPos"]
        assert isinstance(grid, dict)
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, panel["title"]
                cells.add((x, y))
        assert grid["x"] + grid["w"] <= 24
