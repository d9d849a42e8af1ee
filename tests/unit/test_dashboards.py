"""The dashboards: one definition, the files it renders kept equal to it."""

from __future__ import annotations

import json

from lorepin_tasks.plans import dashboards
from tests.conftest import ROOT


def test_the_committed_consoles_and_grafana_files_are_the_definitions() -> None:
    stale = [p for p, text in dashboards.files().items() if (ROOT / p).read_text() != text]
    assert stale == [], "run `invoke monitor.dashboards`"


def test_every_dashboard_is_a_console_and_a_grafana_model_with_the_same_queries() -> None:
    uids = set()
    for board in dashboards.DASHBOARDS:
        model = json.loads(dashboards.grafana(board))
        uids.add(model["uid"])
        assert [p["targets"][0]["expr"] for p in model["panels"]] == [p.expr for p in board.panels]
        page = dashboards.console(board)
        for panel in board.panels:
            assert f"query `sort_desc({panel.expr})`" in page
            assert panel.unit in dashboards.FORMAT
        assert page.count("<section>") == len(board.panels)
        assert all(f'href="{b.slug}.html"' in page for b in dashboards.DASHBOARDS)
    assert len(uids) == len(dashboards.DASHBOARDS)


def test_the_seven_dashboards_the_team_looks_at() -> None:
    assert [b.slug for b in dashboards.DASHBOARDS] == [
        "cms", "activity", "errors", "logs", "server", "database", "network"
    ]  # fmt: skip
