"""The CMS's autoscaler on Swarm (compose/swarm.yaml's `autoscaler`; docs/production-swarm.md).

Every LOREPIN_AUTOSCALE_INTERVAL seconds it reads the CMS's p99 latency over the last
minute from the stack's Prometheus, decides how many replicas the CMS service should run
within LOREPIN_AUTOSCALE_MIN..MAX, and sets them through the manager's Docker API (as
`docker service scale` does). Like Kubernetes' HPA: replicas grow in proportion to how
far p99 is above the target, at once but not again within the cooldown; they shrink one
at a time, only after p99 has stayed under half the target for a while (hysteresis: no
flapping around the target). It never acts while the service is being updated (a deploy
or a rollback is rolling) and it never leaves the bounds.

Every decision (a change, or a failed attempt) is a JSON line on stdout and in its
decision log on its volume; the toolkit seals the log's new lines into the environment's
trail the next time it writes it (`invoke deploy.history` then shows them). Switched off
(LOREPIN_AUTOSCALE_ENABLED=0), it decides nothing and only keeps that log readable.

Python's standard library only.
"""

from __future__ import annotations

import http.client
import json
import math
import os
import socket
import sys
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# Health checks and probes answer in no time and would hide the users' latency.
QUERY = (
    "histogram_quantile(0.99, sum by (le) (rate(lorepin_http_request_duration_seconds_bucket"
    '{{job="cms",route!~"/(healthz|readyz|version)"}}[{window}])))'
)
# The CMS's replicas Prometheus scraped at its last look: with none, no p99 is blindness,
# not idleness.
SCRAPED = 'count(up{job="cms"} == 1)'
# An update rolling, or paused by Swarm for a person to look at: hands off.
UPDATING = ("updating", "rollback_started", "paused", "rollback_paused")


@dataclass(frozen=True)
class Policy:
    min: int
    max: int
    target_ms: float
    cooldown_s: float  # after any change, none for this long
    down_after_s: float  # p99 under half the target this long before one replica goes
    tolerance: float = 0.1  # within 10 % above the target: no change


@dataclass
class State:
    last_change: float = -math.inf
    low_since: float | None = None
    seen: int | None = None  # the replicas at the last look


def decide(policy: Policy, state: State, current: int, p99_ms: float | None,
           now: float, blind: bool = False) -> tuple[int, str] | None:  # fmt: skip
    """The replicas to set and why, or None to leave them. No traffic (no p99) is idle,
    but not when Prometheus scrapes no replica (`blind`): then only the bounds are kept.
    A count someone else set (`invoke scale`, a deploy) is a change too: the cooldown
    starts again from it, so a person's scale is not undone at the next look."""
    if state.seen is not None and current != state.seen:
        state.last_change, state.low_since = now, None
    state.seen = current
    if current < policy.min or current > policy.max:
        state.last_change, state.low_since = now, None
        wanted = min(max(current, policy.min), policy.max)
        state.seen = wanted
        return wanted, f"{current} replicas is outside {policy.min}..{policy.max}"
    if blind:  # no metrics: neither busy nor idle, and the low period starts again
        state.low_since = None
        return None
    latency = p99_ms or 0.0
    ratio = latency / policy.target_ms
    cooling = now - state.last_change < policy.cooldown_s
    if ratio > 1 + policy.tolerance:
        state.low_since = None
        wanted = min(policy.max, math.ceil(current * ratio))
        if wanted <= current or cooling:
            return None
        state.last_change, state.seen = now, wanted
        return wanted, f"p99 {latency:.0f} ms is above the target {policy.target_ms:.0f} ms"
    if ratio >= 0.5:
        state.low_since = None
        return None
    if state.low_since is None:
        state.low_since = now
    if current <= policy.min or cooling or now - state.low_since < policy.down_after_s:
        return None
    state.last_change, state.low_since, state.seen = now, now, current - 1
    idle = "no requests" if p99_ms is None else f"p99 {latency:.0f} ms"
    return current - 1, (
        f"{idle}, under half the target {policy.target_ms:.0f} ms for {policy.down_after_s:.0f} s"
    )


class Engine(http.client.HTTPConnection):
    """Docker's API on its unix socket."""

    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=10)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(10)
        self.sock.connect(self.path)


def api(path: str, method: str = "GET", body: Any = None) -> Any:
    engine = Engine(os.environ.get("LOREPIN_DOCKER_SOCKET", "/var/run/docker.sock"))
    try:
        data = None if body is None else json.dumps(body).encode()
        engine.request(method, path, body=data, headers={"Content-Type": "application/json"})
        answer = engine.getresponse()
        text = answer.read().decode()
        if answer.status >= 300:
            raise RuntimeError(f"{method} {path}: {answer.status} {text.strip()[:200]}")
        return json.loads(text) if text.strip() else None
    finally:
        engine.close()


def query(prometheus: str, promql: str) -> float | None:
    """An instant query's one value; None when it has none."""
    query = urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(f"{prometheus}/api/v1/query?{query}", timeout=5) as answer:  # noqa: S310 (the stack's own)
        result = json.loads(answer.read())["data"]["result"]
    if not result:
        return None
    value = float(result[0]["value"][1])
    return None if math.isnan(value) else value


def p99_ms(prometheus: str, window: str) -> float | None:
    value = query(prometheus, QUERY.format(window=window))
    return None if value is None else value * 1000


def record(log: Path, decision: dict[str, Any]) -> None:
    line = json.dumps(decision, sort_keys=True)
    print(line, flush=True)
    with log.open("a") as file:
        file.write(line + "\n")


def step(policy: Policy, state: State, service: str, prometheus: str, window: str,
         log: Path) -> None:  # fmt: skip
    found = api(f"/services/{service}")
    if (found.get("UpdateStatus") or {}).get("State") in UPDATING:
        return  # a deploy or a rollback is rolling: it keeps the scale it found
    current = int(found["Spec"]["Mode"]["Replicated"]["Replicas"])
    blind = not query(prometheus, SCRAPED)
    latency = None if blind else p99_ms(prometheus, window)
    decided = decide(policy, state, current, latency, time.monotonic(), blind=blind)
    if decided is None:
        return
    wanted, why = decided
    entry = {"at": datetime.now(UTC).isoformat(timespec="milliseconds"), "service": service,
             "from": current, "to": wanted, "target_ms": policy.target_ms, "reason": why,
             "p99_ms": None if latency is None else round(latency, 1)}  # fmt: skip
    spec = found["Spec"]
    spec["Mode"]["Replicated"]["Replicas"] = wanted
    try:
        api(f"/services/{found['ID']}/update?version={found['Version']['Index']}", "POST", spec)
    except (OSError, RuntimeError) as exc:
        record(log, {**entry, "outcome": "failed", "error": str(exc)[:300]})
        return
    record(log, {**entry, "outcome": "ok"})


def main() -> None:
    env = os.environ
    policy = Policy(
        min=int(env["LOREPIN_AUTOSCALE_MIN"]),
        max=int(env["LOREPIN_AUTOSCALE_MAX"]),
        target_ms=float(env["LOREPIN_AUTOSCALE_P99_MS"]),
        cooldown_s=float(env["LOREPIN_AUTOSCALE_COOLDOWN"]),
        down_after_s=float(env["LOREPIN_AUTOSCALE_DOWN_AFTER"]),
    )
    interval = float(env.get("LOREPIN_AUTOSCALE_INTERVAL", "15"))
    service, prometheus = env["LOREPIN_AUTOSCALE_SERVICE"], env["LOREPIN_PROMETHEUS_URL"]
    window = env.get("LOREPIN_AUTOSCALE_WINDOW", "1m")
    log = Path(env.get("LOREPIN_AUTOSCALE_LOG", "/var/lib/lorepin-autoscaler/decisions.jsonl"))
    log.parent.mkdir(parents=True, exist_ok=True)
    state = State(last_change=time.monotonic())  # a (re)start waits a cooldown first
    enabled = env.get("LOREPIN_AUTOSCALE_ENABLED", "1") == "1"
    print(json.dumps({"event": "autoscaler_started", "service": service, "enabled": enabled,
                      "policy": policy.__dict__}), flush=True)  # fmt: skip
    while not enabled:  # off: it only keeps its decision log readable for the toolkit
        time.sleep(3600)
    while True:
        try:
            step(policy, state, service, prometheus, window, log)
        except Exception as exc:  # a bad turn is logged; the next one tries
            print(json.dumps({"event": "autoscaler_error", "error": str(exc)[:300]}),
                  file=sys.stderr, flush=True)  # fmt: skip
        time.sleep(interval)


if __name__ == "__main__":
    main()
