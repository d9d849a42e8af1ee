"""The monitoring's dashboards, defined once, rendered twice: as Prometheus console
templates (served by Prometheus itself: monitoring/consoles/) and as Grafana dashboards
with their provisioning (monitoring/grafana/), for sites that run Grafana.
`invoke monitor.dashboards` writes both; a unit test keeps the files equal to this
definition. Pure: no I/O."""

from __future__ import annotations

import json
from dataclasses import dataclass
from html import escape


@dataclass(frozen=True)
class Panel:
    title: str
    expr: str  # PromQL: one row (console) or line (Grafana) per series
    unit: str  # Grafana's unit: reqps, s, percentunit, bytes, short
    legend: tuple[str, ...] = ()  # the labels that name a series


@dataclass(frozen=True)
class Dashboard:
    slug: str
    title: str
    about: str
    panels: tuple[Panel, ...]


ROUTE = ("route",)
DASHBOARDS = (
    Dashboard("cms", "CMS: traffic, latency, errors", "What users get from the CMS, per route.", (
        Panel("Requests per second", "sum by (route) (rate(lorepin_http_requests_total[5m]))",
              "reqps", ROUTE),
        Panel("p50 latency", "route:lorepin_http_request_duration_seconds:p50_5m", "s", ROUTE),
        Panel("p99 latency", "route:lorepin_http_request_duration_seconds:p99_5m", "s", ROUTE),
        Panel("5xx ratio", "route:lorepin_http_errors:ratio_rate5m", "percentunit", ROUTE),
        Panel("Requests in flight", "sum(lorepin_http_requests_in_flight)", "short"),
        Panel("Database pool in use",
              "sum(lorepin_db_pool_in_use) / sum(lorepin_db_pool_size)", "percentunit"),
    )),
    Dashboard("activity", "Activity", "How visitors use the CMS, privacy-first: sessions "
              "from its first-party cookie, never addresses (`invoke activity.report` has "
              "the flows).", (
        Panel("Active sessions (15 min)", "lorepin_activity_sessions_15m", "short"),
        Panel("Active sessions (1 h)", "lorepin_activity_sessions_1h", "short"),
        Panel("New sessions per second", "sum(rate(lorepin_sessions_started_total[5m]))",
              "reqps"),
        Panel("Top routes (requests in the last hour)",
              "topk(10, sum by (method, route) (increase(lorepin_http_requests_total"
              '{route!~"/healthz|/readyz|/version"}[1h])))', "short", ("method", "route")),
        Panel("Activity events recorded per second",
              "sum(rate(lorepin_activity_recorded_total[5m]))", "reqps"),
        Panel("Activity events dropped (1 h)",
              "sum(increase(lorepin_activity_dropped_total[1h]))", "short"),
    )),
    Dashboard("errors", "Errors", "Errors by category and unhandled ones by fingerprint "
              "(`invoke errors` shows where).", (
        Panel("Errors per second by category",
              "sum by (category) (rate(lorepin_errors_total[5m]))", "reqps", ("category",)),
        Panel("5xx per second by status",
              'sum by (status) (rate(lorepin_http_requests_total{status=~"5.."}[5m]))',
              "reqps", ("status",)),
        Panel("Unhandled errors in the last hour",
              "sum by (fingerprint, type) (increase(lorepin_unhandled_errors_total[1h]))",
              "short", ("type", "fingerprint")),
    )),
    Dashboard("logs", "Logs", "The central log by service: lines filed and error lines, "
              "counted by mtail in the collector (`invoke logs.search` reads them).", (
        Panel("Error lines per minute by service",
              "sum by (service) (rate(lorepin_log_errors_total[5m])) * 60", "short",
              ("service",)),
        Panel("Lines per second by service",
              "sum by (service) (rate(lorepin_log_lines_total[5m]))", "reqps", ("service",)),
        Panel("Error lines in the last hour",
              "sum by (service) (increase(lorepin_log_errors_total[1h]))", "short",
              ("service",)),
        Panel("Collector takes lines", 'probe_success{job="probe_collector"}', "short"),
    )),
    Dashboard("server", "Server", "The host the environment runs on (node exporter).", (
        Panel("CPU busy", '1 - avg(rate(node_cpu_seconds_total{mode="idle"}[5m]))',
              "percentunit"),
        Panel("Load (1 min)", "node_load1", "short"),
        Panel("Memory available", "node_memory_MemAvailable_bytes / node_memory_MemTotal_bytes",
              "percentunit"),
        Panel("Disk free", 'node_filesystem_avail_bytes{fstype!~"tmpfs|overlay|squashfs"} '
              '/ node_filesystem_size_bytes{fstype!~"tmpfs|overlay|squashfs"}', "percentunit",
              ("mountpoint",)),
        Panel("Network received", 'sum by (device) (rate(node_network_receive_bytes_total'
              '{device!~"lo|veth.*|br-.*|docker.*"}[5m]))', "Bps", ("device",)),
    )),
    Dashboard("database", "Database", "PostgreSQL, its replica, WAL archive and backups.", (
        Panel("Database up", "pg_up", "short"),
        Panel("Client connections in use",
              "lorepin_connections_used / lorepin_connections_available", "percentunit"),
        Panel("Replica behind (bytes)", "lorepin_replication_lag_bytes", "bytes",
              ("application_name",)),
        Panel("Since the last WAL file archived",
              "time() - lorepin_archiver_last_archived_time_seconds", "s"),
        Panel("WAL archive failures (1 h)", "increase(lorepin_archiver_failed_count[1h])",
              "short"),
        Panel("Since the last good scheduled backup",
              "time() - lorepin_backup_last_success_timestamp_seconds", "s", ("type",)),
        Panel("Database size", "pg_database_size_bytes", "bytes", ("datname",)),
    )),
    Dashboard("network", "Network", "Blackbox probes (the public URL through the proxy, "
              "each colour directly, the database port) and the proxy's own answers.", (
        Panel("Probe up", "probe_success", "short", ("job", "instance")),
        Panel("Proxy responses per second by code",
              "sum by (code) "
              '(rate(caddy_http_request_duration_seconds_count{server="public"}[5m]))',
              "reqps", ("code",)),
        Panel("Probe time", "probe_duration_seconds", "s", ("job", "instance")),
        Panel("Certificate days left", "(probe_ssl_earliest_cert_expiry - time()) / 86400",
              "short", ("instance",)),
    )),
)  # fmt: skip

# How a console shows a value (Prometheus's template functions).
FORMAT = {
    "reqps": '{{ printf "%.2f" .Value }}/s',
    "Bps": "{{ humanize1024 .Value }}B/s",
    "s": "{{ humanizeDuration .Value }}",
    "percentunit": "{{ humanizePercentage .Value }}",
    "bytes": "{{ humanize1024 .Value }}B",
    "short": "{{ humanize .Value }}",
}
STYLE = """body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#1d2330;background:#f6f7f9}
h1{font-size:22px;margin:0 0 4px}p.about{color:#5a6270;margin:0 0 16px}
nav a{margin-right:14px;color:#2456c8}.grid{display:flex;flex-wrap:wrap;gap:14px}
section{background:#fff;border:1px solid #dde1e7;border-radius:6px;padding:10px 14px;
min-width:300px;flex:1 1 380px}h2{font-size:15px;margin:0 0 8px}
table{border-collapse:collapse;width:100%}td{padding:3px 6px;border-top:1px solid #eef0f3}
td.v{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.none{color:#8a919c}"""


def _legend(panel: Panel) -> str:
    if not panel.legend:
        return "all"
    return " ".join(f"{{{{ .Labels.{label} }}}}" for label in panel.legend)


def console(board: Dashboard) -> str:
    """A console template: a table per panel, each series's value now."""
    nav = " ".join(f'<a href="{d.slug}.html">{escape(d.title)}</a>' for d in DASHBOARDS)
    sections = []
    for panel in board.panels:
        value = FORMAT[panel.unit]
        rows = (
            f"{{{{ range query `sort_desc({panel.expr})` }}}}<tr><td>{_legend(panel)}</td>"
            f'<td class="v">{value}</td></tr>'
            f'{{{{ else }}}}<tr><td class="none" colspan="2">no data</td></tr>{{{{ end }}}}'
        )
        sections.append(f"<section><h2>{escape(panel.title)}</h2><table>{rows}</table></section>")
    return (
        '<!doctype html>\n<html><head><meta charset="utf-8">'
        f"<title>LorePin: {escape(board.title)}</title><style>{STYLE}</style></head><body>\n"
        f"<nav>{nav}</nav>\n<h1>{escape(board.title)}</h1>"
        f'<p class="about">{escape(board.about)} As of '
        '{{ with query "time()" }}{{ with index . 0 }}{{ .Value | humanizeTimestamp }}'
        "{{ end }}{{ end }}</p>\n"
        f'<div class="grid">{"".join(sections)}</div>\n</body></html>\n'
    )


DATASOURCE = {
    "name": "datasource",
    "type": "datasource",
    "query": "prometheus",
    "label": "Prometheus",
}


DATASOURCE = {
    "name": "datasource",
    "type": "datasource",
    "query": "prometheus",
    "label": "Prometheus",
}


def grafana(board: Dashboard) -> str:
    """The same dashboard as Grafana's JSON model (a time series per panel)."""
    panels = []
    for n, panel in enumerate(board.panels):
        legend = " ".join(f"{{{{{label}}}}}" for label in panel.legend) or panel.title
        panels.append(
            {
                "id": n + 1,
                "type": "timeseries",
                "title": panel.title,
                "gridPos": {"h": 8, "w": 12, "x": (n % 2) * 12, "y": (n // 2) * 8},
                "datasource": {"type": "prometheus", "uid": "${datasource}"},
                "fieldConfig": {"defaults": {"unit": panel.unit}, "overrides": []},
                "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
                "targets": [{"expr": panel.expr, "legendFormat": legend, "refId": "A"}],
            }
        )
    model = {
        "uid": f"lorepin-{board.slug}",
        "title": f"LorePin: {board.title}",
        "description": board.about,
        "tags": ["lorepin"],
        "schemaVersion": 39,
        "editable": False,
        "time": {"from": "now-6h", "to": "now"},
        "refresh": "30s",
        "templating": {"list": [DATASOURCE]},
        "panels": panels,
    }
    return json.dumps(model, indent=2) + "\n"


PROVISIONING = """# Grafana provisioning of the LorePin dashboards (for sites that run
# Grafana): copy monitoring/grafana/ to /etc/grafana/provisioning/dashboards/lorepin/
# and this file to /etc/grafana/provisioning/dashboards/lorepin.yaml.
# Written by `invoke monitor.dashboards`.
apiVersion: 1
providers:
  - name: lorepin
    folder: LorePin
    type: file
    disableDeletion: true
    allowUiUpdates: false
    options:
      path: /etc/grafana/provisioning/dashboards/lorepin
"""


def files() -> dict[str, str]:
    """Every generated file, by its path in the repository."""
    out = {f"monitoring/consoles/{b.slug}.html": console(b) for b in DASHBOARDS}
    out |= {f"monitoring/grafana/{b.slug}.json": grafana(b) for b in DASHBOARDS}
    out["monitoring/grafana/provisioning.yaml"] = PROVISIONING
    return out
