"""The CI dashboard (`invoke ci.record`, `invoke ci.report`): one JSON line per run in a
history file, and a static HTML page from it with inline SVG charts: outcome and
duration per run, coverage over time, the slowest tests, the flaky ones (failed in
a run and passed in another of the same commit) and the benchmarks' headline figures
over time. Pure: the history's text comes in, the
page goes out. docs/ci-cd.md."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

from lorepin_tasks.errors import ConfigError
from lorepin_tasks.plans.ci import Results

SLOWEST = 10
RUNS = 50  # the newest runs charted


def nox_sessions(text: str, where: str) -> dict[str, dict[str, Any]]:
    """Each session's result and seconds from `nox --report FILE`'s JSON."""
    try:
        report = json.loads(text)
        return {
            str(s["name"]): {"result": str(s["result"]), "seconds": round(float(s["duration"]), 1)}
            for s in report["sessions"]
        }
    except (ValueError, TypeError, KeyError):
        raise ConfigError(f"{where}: not a nox report (nox --report FILE)") from None


def bench_figures(text: str, where: str) -> dict[str, dict[str, Any]]:
    """The headline figures the benchmarks kept (bench/common.py's `figure`), one JSON
    line each, keyed "bench: name"; a figure measured twice keeps its last value."""
    figures: dict[str, dict[str, Any]] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            f = json.loads(line)
            key = f"{f['bench']}: {f['name']}"
            figure = {"value": float(f["value"]), "unit": str(f["unit"])}
            if f.get("baseline") is not None:
                figure["baseline"] = float(f["baseline"])
        except (ValueError, TypeError, KeyError):
            raise ConfigError(f"{where}:{number}: not a benchmark figure") from None
        if not all(math.isfinite(v) for v in figure.values() if isinstance(v, float)):
            raise ConfigError(f"{where}:{number}: not a benchmark figure (not finite)")
        figures[key] = figure
    return figures


def record(results: Results, line_rate: float | None, *, run: str, revision: str,
           at: str, slowest: Sequence[tuple[str, float]], passed: Sequence[str],
           sessions: Mapping[str, Mapping[str, Any]] | None = None,
           bench: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, Any]:  # fmt: skip
    """One run as a history line."""
    return {
        "sessions": dict(sessions or {}),
        "bench": dict(bench or {}),
        "run": run,
        "revision": revision,
        "at": at,
        "outcome": "failed" if results.failed or results.errors else "passed",
        "tests": results.tests,
        "failed": results.failed + results.errors,
        "skipped": results.skipped,
        "seconds": round(results.seconds, 1),
        "coverage": None if line_rate is None else round(line_rate, 4),
        "failures": [f.test for f in results.failures],
        "passed": sorted(passed),
        "slowest": [[name, round(seconds, 2)] for name, seconds in slowest[:SLOWEST]],
    }


def history(text: str) -> tuple[list[dict[str, Any]], list[str]]:
    """The runs of a history file, oldest first, and a warning per line skipped."""
    runs, warnings = [], []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            run = json.loads(line)
        except ValueError:
            run = None
        if not is_run(run):
            warnings.append(f"history line {number} is not a run: skipped")
            continue
        runs.append(run)
    return runs, warnings


def is_run(run: object) -> bool:
    """A history line the page can show: each field of the type ci.record writes."""

    def num(v: object) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

    def names(v: object) -> bool:
        return isinstance(v, list) and all(isinstance(t, str) for t in v)

    if not isinstance(run, dict) or not {"run", "outcome", "seconds"} <= run.keys():
        return False
    slowest, sessions = run.get("slowest", []), run.get("sessions", {})
    bench = run.get("bench", {})
    return (
        isinstance(run["run"], (str, int)) and run["outcome"] in ("passed", "failed")
        and num(run["seconds"]) and (run.get("coverage") is None or num(run["coverage"]))
        and names(run.get("failures", [])) and names(run.get("passed", []))
        and isinstance(slowest, list)
        and all(isinstance(s, list) and len(s) == 2 and isinstance(s[0], str) and num(s[1])
                for s in slowest)
        and isinstance(sessions, dict)
        and all(isinstance(v, dict) and num(v.get("seconds")) for v in sessions.values())
        and isinstance(bench, dict)
        and all(isinstance(v, dict) and num(v.get("value")) and isinstance(v.get("unit"), str)
                and (v.get("baseline") is None or num(v["baseline"])) for v in bench.values())
    )  # fmt: skip


def flaky(runs: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Tests that failed in a run and passed in another run of the same revision."""
    by_revision: dict[str, list[Mapping[str, Any]]] = {}
    for run in runs:
        by_revision.setdefault(str(run.get("revision", "")), []).append(run)
    found: dict[str, set[str]] = {}
    for revision, same in by_revision.items():
        failed = {t for r in same for t in r.get("failures", [])}
        passed = {t for r in same for t in r.get("passed", [])}
        for test in failed & passed:
            found.setdefault(test, set()).add(revision[:12])
    return [{"test": t, "revisions": sorted(r)} for t, r in sorted(found.items())]


def bars(runs: Sequence[Mapping[str, Any]], width: int = 720, height: int = 160) -> str:
    """Duration per run as bars, green for passed and red for failed."""
    if not runs:
        return '<p class="none">no runs yet</p>'
    top = max(float(r["seconds"]) for r in runs) or 1.0
    step = width / len(runs)
    out = []
    for i, r in enumerate(runs):
        h = max(2.0, float(r["seconds"]) / top * (height - 20))
        colour = "#2e8540" if r["outcome"] == "passed" else "#c62828"
        out.append(
            f'<rect class="run {escape(r["outcome"])}" x="{i * step + 2:.1f}" '
            f'y="{height - h:.1f}" width="{max(step - 4, 1):.1f}" height="{h:.1f}" '
            f'fill="{colour}"><title>{escape(str(r["run"]))}: {escape(r["outcome"])}, '
            f"{float(r['seconds']) / 60:.1f} min</title></rect>"
        )
    axis = f'<text x="0" y="12" class="axis">{top / 60:.1f} min</text>'
    return (f'<svg class="chart" viewBox="0 0 {width} {height}" width="{width}" '
            f'height="{height}" role="img" aria-label="duration per run">{axis}'
            f'{"".join(out)}</svg>')  # fmt: skip


def line(runs: Sequence[Mapping[str, Any]], width: int = 720, height: int = 160) -> str:
    """Coverage per run as a line (runs without coverage are left out)."""
    points = [(i, float(r["coverage"])) for i, r in enumerate(runs)
              if isinstance(r.get("coverage"), (int, float))]  # fmt: skip
    if not points:
        return '<p class="none">no coverage recorded</p>'
    low = min(v for _, v in points)
    floor = max(0.0, low - 0.05)
    step = width / max(len(runs) - 1, 1)

    def y(v: float) -> float:
        return height - 10 - (v - floor) / ((1.0 - floor) or 1.0) * (height - 30)

    path = " ".join(f"{'M' if n == 0 else 'L'}{i * step:.1f},{y(v):.1f}"
                    for n, (i, v) in enumerate(points))  # fmt: skip
    dots = "".join(f'<circle class="point" cx="{i * step:.1f}" cy="{y(v):.1f}" r="3">'
                   f"<title>{v:.1%}</title></circle>" for i, v in points)  # fmt: skip
    return (f'<svg class="chart" viewBox="-5 0 {width + 10} {height}" width="{width}" '
            f'height="{height}" role="img" aria-label="coverage per run">'
            f'<text x="0" y="12" class="axis">{floor:.0%} to 100%</text>'
            f'<path d="{path}" fill="none" stroke="#2456c8" stroke-width="2"/>'
            f"{dots}</svg>")  # fmt: skip


def spark(values: Sequence[float | None], width: int = 160, height: int = 28) -> str:
    """A figure's values over the runs as a small line with a dot per run that measured
    it (a run that did not is passed over)."""
    points = [(i, v) for i, v in enumerate(values) if v is not None]
    if not points:
        return ""
    low, high = min(v for _, v in points), max(v for _, v in points)
    step = width / max(len(values) - 1, 1)

    xy = [(i * step, height - 4 - (v - low) / ((high - low) or 1.0) * (height - 8), v)
          for i, v in points]  # fmt: skip
    path = " ".join(f"{'L' if n else 'M'}{x:.1f},{y:.1f}" for n, (x, y, _) in enumerate(xy))
    dots = "".join(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2"><title>{v:.4g}</title></circle>'
                   for x, y, v in xy)  # fmt: skip
    return (f'<svg class="spark" viewBox="-3 0 {width + 6} {height}" width="{width}" '
            f'height="{height}" role="img" aria-label="over the runs"><path d="{path}" '
            f'fill="none" stroke="#2456c8" stroke-width="1.5"/>{dots}</svg>')  # fmt: skip


def bench_table(runs: Sequence[Mapping[str, Any]]) -> str:
    """A row per benchmark figure: its line over the runs, the last value, its baseline
    measured in the same run, and the change from the run before that measured it."""
    names = sorted({n for r in runs for n in (r.get("bench") or {})})
    if not names:
        return '<p class="none">no benchmark figures recorded (ci.record --bench)</p>'
    rows = []
    for name in names:
        seen = [(r.get("bench") or {}).get(name) for r in runs]
        values = [float(f["value"]) if f else None for f in seen]
        measured = [f for f in seen if f]
        last = measured[-1]
        base = "-" if last.get("baseline") is None else f"{float(last['baseline']):.4g}"
        change = "-"
        if len(measured) > 1 and float(measured[-2]["value"]):
            change = f"{float(last['value']) / float(measured[-2]['value']) - 1:+.1%}"
        rows.append(f'<tr class="figure"><th>{escape(name)}</th><td>{spark(values)}</td>'
                    f"<td>{float(last['value']):.4g} {escape(str(last['unit']))}</td>"
                    f"<td>{escape(base)}</td><td>{escape(change)}</td></tr>")  # fmt: skip
    head = "".join(f"<th>{h}</th>" for h in ("figure", "over the runs", "last", "baseline",
                                              "vs the run before"))  # fmt: skip
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


def session_table(runs: Sequence[Mapping[str, Any]]) -> str:
    """A row per nox session, a cell per run: its minutes, green or red by its result."""
    names = sorted({n for r in runs for n in (r.get("sessions") or {})})
    if not names:
        return '<p class="none">no session recorded (ci.record --nox-report)</p>'
    head = "".join(f"<th>{escape(str(r['run']))}</th>" for r in runs)
    rows = []
    for name in names:
        cells = []
        for r in runs:
            s = (r.get("sessions") or {}).get(name)
            if not isinstance(s, dict):
                cells.append("<td></td>")
                continue
            colour = "#dff3e4" if s.get("result") == "success" else "#fbe3e3"
            minutes = float(s.get("seconds", 0)) / 60
            cells.append(f'<td class="session {escape(str(s.get("result")))}" '
                         f'style="background:{colour}">{minutes:.1f}</td>')  # fmt: skip
        rows.append(f"<tr><th>{escape(name)}</th>{''.join(cells)}</tr>")
    return f"<table><tr><th>session</th>{head}</tr>{''.join(rows)}</table>"


def page(runs: Sequence[Mapping[str, Any]], warnings: Sequence[str], generated: str) -> str:
    """The dashboard: self-contained HTML (no script, no external file)."""
    shown = list(runs)[-RUNS:]
    last = shown[-1] if shown else None
    passed = sum(1 for r in shown if r["outcome"] == "passed")

    def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
        if not rows:
            return '<p class="none">none</p>'
        head = "".join(f"<th>{escape(h)}</th>" for h in headers)
        body = "".join("<tr>" + "".join(f"<td>{escape(str(c))}</td>" for c in row) + "</tr>"
                       for row in rows)  # fmt: skip
        return f"<table><tr>{head}</tr>{body}</table>"

    recent = [(r["run"], r.get("at", ""), r["outcome"], r.get("tests", ""), r.get("failed", ""),
               f"{float(r['seconds']) / 60:.1f} min",
               "-" if r.get("coverage") is None else f"{float(r['coverage']):.1%}")
              for r in reversed(shown[-10:])]  # fmt: skip
    slowest = [(name, f"{seconds:.1f} s") for name, seconds in (last or {}).get("slowest", [])]
    flakes = [(f["test"], ", ".join(f["revisions"])) for f in flaky(shown)]
    sessions = session_table(shown[-10:])
    notes = "".join(f'<p class="warning">{escape(w)}</p>' for w in warnings)
    summary = (f"{len(shown)} runs, {passed} passed, {len(shown) - passed} failed"
               if shown else "no runs recorded")  # fmt: skip
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>LorePin CI</title><style>
body{{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#1d2330;background:#f6f7f9}}
section{{background:#fff;border:1px solid #dde1e7;border-radius:6px;padding:10px 14px;
margin:0 0 14px}}h1{{font-size:22px;margin:0 0 4px}}h2{{font-size:15px;margin:0 0 8px}}
table{{border-collapse:collapse}}td,th{{padding:3px 8px;border-top:1px solid #eef0f3;
text-align:left}}.axis{{font-size:11px;fill:#5a6270}}.none{{color:#8a919c}}
.warning{{color:#a05a00}}</style></head><body>
<h1>LorePin CI</h1><p>{escape(summary)}; generated {escape(generated)}</p>{notes}
<section id="runs"><h2>Outcome and duration per run</h2>{bars(shown)}</section>
<section id="coverage"><h2>Coverage</h2>{line(shown)}</section>
<section id="sessions"><h2>Nox sessions, the last runs (minutes)</h2>{sessions}</section>
<section id="recent"><h2>Recent runs</h2>{
        table(["run", "at", "outcome", "tests", "failed", "time", "coverage"], recent)
    }</section>
<section id="slowest"><h2>Slowest tests (last run)</h2>{table(["test", "time"], slowest)}</section>
<section id="flaky"><h2>Flaky tests</h2>{table(["test", "revisions"], flakes)}</section>
<section id="bench"><h2>Benchmarks (nox -s bench)</h2>{bench_table(shown)}</section>
</body></html>
"""
