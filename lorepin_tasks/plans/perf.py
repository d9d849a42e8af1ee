"""`invoke perf`'s reports and their comparison. Pure: locust's CSV in, a report out;
two reports and a policy in, the regressions out (each naming its endpoint).

A report is kept per environment and version (perf/<version>.json in its state
directory); a run is compared with the report of the newest other version older than it.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import semver

from lorepin_tasks.errors import ConfigError
from lorepin_tasks.settings import PerfPolicy

DURATION = re.compile(r"^(?P<n>[1-9][0-9]{0,3})(?P<unit>[sm])$")
MAX_SECONDS = 1800
MAX_USERS = 500
LOCUSTFILE = Path("perf/locustfile.py")
KINDS = ("list", "filter", "read", "create")


def duration(text: str) -> int:
    """--duration: 30s, 5m (at most 30 minutes)."""
    match = DURATION.fullmatch(text.strip())
    if not match:
        raise ConfigError(f"--duration must look like 60s or 5m, got {text!r}")
    seconds = int(match["n"]) * (60 if match["unit"] == "m" else 1)
    if seconds > MAX_SECONDS:
        raise ConfigError(f"--duration must be at most {MAX_SECONDS // 60}m, got {text!r}")
    return seconds


def users(text: str) -> int:
    digits = text.strip()
    if not (digits.isascii() and digits.isdigit()) or not 1 <= int(digits) <= MAX_USERS:
        raise ConfigError(f"--users must be a whole number from 1 to {MAX_USERS}, got {text!r}")
    return int(text)


def locust_argv(python: str, root: Path, host: str, seconds: int, count: int,
                csv_prefix: str, *, writes: bool) -> list[str]:  # fmt: skip
    """locust, headless, for a bounded time and number of users, CSV out."""
    return [
        # It dies with the task (kill -9 included): no load goes on with nobody watching.
        "setpriv", "--pdeathsig", "KILL", "--",
        python, "-m", "locust", "-f", str(root / LOCUSTFILE), "--headless", "--host", host,
        "--users", str(count), "--spawn-rate", str(max(1, count // 2)),
        "--run-time", f"{seconds}s", "--stop-timeout", "5", "--csv", csv_prefix,
        "--only-summary", "--loglevel", "WARNING", "--exit-code-on-error", "0",
        "Reader", *(["Editor"] if writes else []),
    ]  # fmt: skip


def _ms(value: str) -> float:
    try:
        return float(value)
    except ValueError:  # "N/A" when nothing was measured
        return 0.0


def report(stats_csv: str, *, env: str, version: str, at: str, seconds: int, count: int
           ) -> dict[str, Any]:  # fmt: skip
    """The run, from locust's `<prefix>_stats.csv`: per endpoint and in all."""
    endpoints: dict[str, dict[str, float]] = {}
    total: dict[str, float] = {}
    for row in csv.DictReader(io.StringIO(stats_csv)):
        figures = {
            "requests": int(row["Request Count"]),
            "failures": int(row["Failure Count"]),
            "p50_ms": _ms(row["50%"]),
            "p95_ms": _ms(row["95%"]),
            "p99_ms": _ms(row["99%"]),
            "rps": round(_ms(row["Requests/s"]), 2),
        }
        if row["Name"] == "Aggregated":
            total = figures
        else:
            endpoints[row["Name"]] = figures
    if not total or not total["requests"]:
        raise ValueError("the load test made no request")
    return {"env": env, "version": version, "at": at, "seconds": seconds, "users": count,
            "endpoints": endpoints, "total": total}  # fmt: skip


def previous(reports: Mapping[str, Mapping[str, Any]], version: str) -> Mapping[str, Any] | None:
    """The report of the newest version older than `version` (semver order) whose run
    passed: a run that failed is never a baseline."""
    try:
        this = semver.Version.parse(version)
    except ValueError:
        return None
    older = []
    for other, data in reports.items():
        try:
            parsed = semver.Version.parse(other)
        except ValueError:
            continue
        if parsed < this and data.get("passed", True) is not False:
            older.append((parsed, data))
    return max(older, key=lambda pair: pair[0])[1] if older else None


def regressions(before: Mapping[str, Any] | None, now: Mapping[str, Any], policy: PerfPolicy
                ) -> list[str]:  # fmt: skip
    """What makes this run fail, each naming its endpoint; errors count without a
    previous report too."""
    found = []
    for name, figures in sorted(now["endpoints"].items()):
        if figures["requests"] and (
            figures["failures"] * 100 > policy.error_percent * figures["requests"]
        ):
            found.append(f"{name}: {figures['failures']} of {figures['requests']} requests "
                         f"failed (at most {policy.error_percent}%)")  # fmt: skip
    if before is None:
        return found
    slower: list[tuple[float, str]] = []
    for name, figures in sorted(now["endpoints"].items()):
        old = before["endpoints"].get(name)
        if not old:
            continue
        for key, allowed in (("p95_ms", policy.p95_increase_percent),
                             ("p99_ms", policy.p99_increase_percent)):  # fmt: skip
            grown = figures[key] - old[key]
            if grown > policy.noise_ms and figures[key] > old[key] * (1 + allowed / 100):
                slower.append((grown, f"{name}: {key[:3]} {figures[key]:.0f} ms, was "
                               f"{old[key]:.0f} ms in {before['version']} (at most "
                               f"+{allowed}%)"))  # fmt: skip
    found += [text for _, text in sorted(slower, key=lambda pair: -pair[0])]  # worst first
    rps, old_rps = now["total"]["rps"], before["total"]["rps"]
    if old_rps and rps < old_rps * (1 - policy.throughput_drop_percent / 100):
        found.append(f"throughput {rps:.1f}/s, was {old_rps:.1f}/s in {before['version']} "
                     f"(at most -{policy.throughput_drop_percent}%)")  # fmt: skip
    return found


def table(now: Mapping[str, Any], before: Mapping[str, Any] | None) -> str:
    """The run per endpoint, with the previous version's p95 beside it."""
    head = f"{'endpoint':<10} {'requests':>9} {'errors':>7}" + "".join(
        f" {h:>7}" for h in ("p50", "p95", "p99", "rps")
    )
    if before:
        head += f"   p95 in {before['version']}"
    lines = [head]
    for name, f in [*sorted(now["endpoints"].items()), ("all", now["total"])]:
        line = (f"{name:<10} {f['requests']:>9} {f['failures']:>7} {f['p50_ms']:>5.0f}ms "
                f"{f['p95_ms']:>5.0f}ms {f['p99_ms']:>5.0f}ms {f['rps']:>7.1f}")  # fmt: skip
        old = (
            (before["endpoints"].get(name) if name != "all" else before["total"])
            if before
            else None
        )
        if old:
            line += f"   {old['p95_ms']:.0f}ms"
        lines.append(line)
    return "\n".join(lines)


FIGURES = ("requests", "failures", "p50_ms", "p95_ms", "p99_ms", "rps")


def _sound(data: Any) -> bool:
    """A report as this module writes it (a hand-edited or damaged one is not)."""

    def figures(f: Any) -> bool:
        return isinstance(f, dict) and all(
            isinstance(f.get(k), int | float) and not isinstance(f.get(k), bool) for k in FIGURES
        )

    return (
        isinstance(data, dict) and isinstance(data.get("version"), str)
        and isinstance(data.get("endpoints"), dict)
        and all(isinstance(k, str) and figures(v) for k, v in data["endpoints"].items())
        and figures(data.get("total"))
    )  # fmt: skip


def load_reports(directory: Path) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """The environment's reports by version, and the files left out as unreadable."""
    out, bad = {}, []
    for path in sorted(directory.glob("*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            data = None
        if _sound(data) and data["version"] == path.stem:
            out[path.stem] = data
        else:
            bad.append(path.name)
    return out, bad
