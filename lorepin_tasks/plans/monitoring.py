"""The monitoring's own files, judged before they reach an image. Pure: no I/O."""

from __future__ import annotations

import json
import re
from typing import Any

import yaml

USAGES = ("LABEL", "COUNTER", "GAUGE", "DISCARD", "MAPPEDMETRIC", "DURATION")


def query_problems(text: str) -> list[str]:
    """What is wrong with a postgres exporter queries file (its exporter has no checker and
    would only log, at every scrape, a query it cannot use); empty: nothing."""
    try:
        loaded: Any = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        return [f"{where}not YAML ({getattr(exc, 'problem', None) or exc})"]
    if not isinstance(loaded, dict) or not loaded:
        return ["not a mapping of query names to queries"]
    problems = []
    for name, spec in loaded.items():
        if not isinstance(spec, dict) or not isinstance(spec.get("query"), str):
            problems.append(f"{name}: needs a `query` (SQL text)")
            continue
        metrics = spec.get("metrics")
        if not isinstance(metrics, list) or not metrics:
            problems.append(f"{name}: needs `metrics`, a list of columns")
            continue
        for metric in metrics:
            if not isinstance(metric, dict) or len(metric) != 1:
                problems.append(f"{name}: each metric is one `column: {{usage, description}}`")
                continue
            ((column, about),) = metric.items()
            usage = about.get("usage") if isinstance(about, dict) else None
            if usage not in USAGES:
                problems.append(f"{name}.{column}: usage must be one of {', '.join(USAGES)}")
    return problems


SINCE = re.compile(r"^([1-9][0-9]{0,3})([mhdw])$")
SECONDS = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
REPORT_MAX = 3650 * 86400  # ten years of daily points: under Prometheus's 11,000 a query


def since_seconds(text: str, flag: str = "--since") -> int:
    """A look-back like 30m, 24h, 7d or 2w, in seconds; a one-line error otherwise."""
    found = SINCE.match(text.strip())
    if not found:
        raise ValueError(f"{flag} must look like 30m, 24h, 7d or 2w, got {text!r}")
    return int(found[1]) * SECONDS[found[2]]


def report_queries(since: str) -> dict[str, str]:
    """The trend of `monitor.report` per route over `since` (a Prometheus duration)."""
    rate = f"rate(lorepin_http_request_duration_seconds_bucket[{since}])"
    return {
        "requests": f"sum by (route) (increase(lorepin_http_requests_total[{since}]))",
        "errors": "sum by (route) "
        f'(increase(lorepin_http_requests_total{{status=~"5.."}}[{since}]))',
        "p50": f"histogram_quantile(0.5, sum by (route, le) ({rate}))",
        "p99": f"histogram_quantile(0.99, sum by (route, le) ({rate}))",
    }


DAILY = {
    "requests": "sum(increase(lorepin_http_requests_total[1d]))",
    # No 5xx series at all is a ratio of 0, not no answer.
    "error_ratio": '(sum(increase(lorepin_http_requests_total{status=~"5.."}[1d])) or vector(0)) '
    "/ sum(increase(lorepin_http_requests_total[1d]))",
    "p99": "histogram_quantile(0.99, sum by (le) "
    "(increase(lorepin_http_request_duration_seconds_bucket[1d])))",
}


def error_groups(lines: list[str]) -> list[dict[str, Any]]:
    """The CMS's unhandled-error events (one JSON line each, see lorepin_cms.metrics)
    grouped by fingerprint: count, first and last seen, where; most frequent first."""
    groups: dict[str, dict[str, Any]] = {}
    for line in lines:
        start = line.find('{"event": "unhandled_error"')
        if start < 0:
            continue
        try:
            event = json.loads(line[start:])
        except ValueError:
            continue
        mark = str(event.get("fingerprint"))
        group = groups.setdefault(
            mark,
            {"fingerprint": mark, "type": event.get("type"), "category": event.get("category"),
             "count": 0, "first": event.get("time"), "last": event.get("time"), "routes": [],
             "frames": event.get("frames"), "request_ids": []},
        )  # fmt: skip
        group["count"] += 1
        group["first"] = min(group["first"] or "", event.get("time") or "") or group["first"]
        group["last"] = max(group["last"] or "", event.get("time") or "")
        route = f"{event.get('method')} {event.get('route')}"
        if route not in group["routes"]:
            group["routes"].append(route)
        if event.get("request_id") and len(group["request_ids"]) < 3:
            group["request_ids"].append(event["request_id"])
    return sorted(groups.values(), key=lambda g: (-g["count"], g["fingerprint"]))
