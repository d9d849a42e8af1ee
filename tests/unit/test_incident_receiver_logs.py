"""The incident receiver's log lines: JSON, in the shape of the CMS's (docs/logging.md)."""

from __future__ import annotations

import importlib.util
import json
import logging

import pytest

from tests.conftest import ROOT


def test_a_record_is_one_json_line_with_the_fields_logs_search_reads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spec = importlib.util.spec_from_file_location(
        "incident_receiver", ROOT / "monitoring/incident_receiver.py"
    )
    assert spec and spec.loader
    receiver = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(receiver)
    monkeypatch.setenv("LOREPIN_ENV", "staging")
    message = "the database did not take it (%s)"
    record = logging.LogRecord("incident-receiver", logging.ERROR, __file__, 1, message,
                               ("OperationalError",), None)  # fmt: skip
    record.created, record.msecs = 1764590400.25, 250.0  # 2025-12-01T12:00:00.250Z
    line = receiver.JsonLines().format(record)
    assert "\n" not in line
    assert json.loads(line) == {
        "event": "log",
        "time": "2025-12-01T12:00:00.250Z",
        "level": "error",
        "service": "incident-receiver",
        "env": "staging",
        "logger": "incident-receiver",
        "message": "the database did not take it (OperationalError)",
    }
