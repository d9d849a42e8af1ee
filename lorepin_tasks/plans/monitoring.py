"""The monitoring's own files, judged before they reach an image. Pure: no I/O."""

from __future__ import annotations

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
