"""The proxy of server environments (Caddy) as data: its whole JSON config. Pure.

The toolkit owns the config: every deploy and rollback loads a complete one through
Caddy's admin API (inside the proxy container), naming the active colour's upstream.
Caddy applies a new config gracefully: requests in flight finish on the old one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

ADMIN = "http://127.0.0.1:2019"
HTTP_PORT, HTTPS_PORT = 8080, 8443  # inside the container (a non-root user binds them)
CERT, KEY = "/run/secrets/tls_cert", "/run/secrets/tls_key"
REQUEST_ID = "X-Request-Id"
# What the CMS takes into its logs and SQL (lorepin_cms.logs.REQUEST_ID_FORMAT): any other
# client id (empty, too long, with quotes or comment marks) gets the proxy's own instead.
SANE_ID = r"[A-Za-z0-9._:-]{1,128}"  # the toolkit's one copy of the rule
REQUEST_ID_FORMAT = f"^{SANE_ID}$"  # Caddy's (RE2: `$` is the end of the text)
SANE_REQUEST_ID = {REQUEST_ID: {"pattern": REQUEST_ID_FORMAT}}
# What every response carries (the CMS's admin page loads only its own files).
SECURITY_HEADERS = {
    "Strict-Transport-Security": ["max-age=31536000; includeSubDomains"],
    "Content-Security-Policy": [
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "object-src 'none'; frame-ancestors 'none'; base-uri 'self'; form-action 'self'"
    ],
    "X-Content-Type-Options": ["nosniff"],
    "Referrer-Policy": ["strict-origin-when-cross-origin"],
    "X-Frame-Options": ["DENY"],
}


# TLS 1.2 suites the proxy offers (Caddy's names are IANA's): forward secrecy (ECDHE)
# and an AEAD cipher only. TLS 1.3's suites are all of that kind.
STRONG_TLS_1_2 = (
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
)


CMS_ID = "cms"  # the @id of the reverse proxy to the serving colour (Caddy's admin API)
METRICS_PORT = 9180  # the proxy's own metrics: the environment's network only
MONITORING_USER = "monitor"
PROMETHEUS = "prometheus:9090"
# The monitoring's pages carry inline styles and scripts; everything else stays as strict.
MONITORING_HEADERS = {
    **SECURITY_HEADERS,
    "Content-Security-Policy": [
        "default-src 'self' 'unsafe-inline' data:; object-src 'none'; frame-ancestors 'none'"
    ],
}


@dataclass(frozen=True, kw_only=True)
class Monitoring:
    """Who may reach the monitoring's pages through the proxy (/monitoring/prometheus/):
    clients from `allow` (CIDRs) with the password whose bcrypt hash is given."""

    allow: tuple[str, ...]
    password_hash: str


@dataclass(frozen=True, kw_only=True)
class Route:
    upstream: str | None  # "cms-green:8000"; None: nothing deployed, answer 503
    public_https_port: int  # where clients reach HTTPS (for the HTTP -> HTTPS redirect)
    server_name: str = "localhost"  # the certificate's name, for clients that send none
    monitoring: Monitoring | None = None  # None: /monitoring/ is the CMS's (a 404)
    admin_allow: tuple[str, ...] = ()  # who may load /admin/ (CIDRs); empty: everyone


def admin_route(allow: tuple[str, ...]) -> dict[str, Any]:
    """/admin/ (and /admin) from outside the allow-list: a 403 before the CMS is asked."""
    return {
        "match": [
            {"path": ["/admin", "/admin/*"], "not": [{"remote_ip": {"ranges": list(allow)}}]}
        ],
        "handle": [{"handler": "static_response", "status_code": 403,
                    "body": "not from this address\n"}],
        "terminal": True,
    }  # fmt: skip


def monitoring_route(access: Monitoring) -> dict[str, Any]:
    """/monitoring/*: refused (403) outside the allow-list, then HTTP basic authentication,
    then Prometheus (its UI, API and consoles live under /monitoring/prometheus/)."""
    headers = {"handler": "headers", "response": {"set": MONITORING_HEADERS, "deferred": True}}
    return {
        "match": [{"path": ["/monitoring/*"]}],
        "terminal": True,
        "handle": [
            headers,
            {
                "handler": "subroute",
                "routes": [
                    {
                        "match": [{"not": [{"remote_ip": {"ranges": list(access.allow)}}]}],
                        "handle": [{"handler": "static_response", "status_code": 403,
                                    "body": "not from this address\n"}],
                        "terminal": True,
                    },
                    {
                        "handle": [
                            {
                                "handler": "authentication",
                                "providers": {
                                    "http_basic": {
                                        "accounts": [{"username": MONITORING_USER,
                                                      "password": access.password_hash}],
                                        "realm": "LorePin monitoring",
                                        "hash_cache": {},  # bcrypt once, not per request
                                    }
                                },
                            }
                        ]
                    },
                    {
                        "match": [{"path": ["/monitoring/prometheus/*"]}],
                        "handle": [{"handler": "reverse_proxy",
                                    "upstreams": [{"dial": PROMETHEUS}]}],
                        "terminal": True,
                    },
                    {"handle": [{"handler": "static_response", "status_code": 404}]},
                ],
            },
        ],
    }  # fmt: skip


def config(route: Route) -> dict[str, Any]:
    """Caddy's config: HTTPS with the environment's certificate, HTTP redirecting to it,
    security headers, an X-Request-Id on every request (kept when the client sent one),
    JSON access logs on stdout, and the active colour as the only upstream."""
    if route.upstream is None:
        backend: dict[str, Any] = {
            "handler": "static_response",
            "status_code": 503,
            "body": "no release deployed yet\n",
        }
    else:
        backend = {
            "@id": CMS_ID,  # how the toolkit finds the upstream it routes to
            "handler": "reverse_proxy",
            "upstreams": [{"dial": route.upstream}],
            # A colour being replaced may refuse a dial for a moment: retry, never fail.
            "load_balancing": {"try_duration": "5s", "try_interval": "100ms"},
            "headers": {"response": {"delete": ["Server"]}},  # the proxy's own is enough
        }
    port = "" if route.public_https_port == 443 else f":{route.public_https_port}"
    return {
        "admin": {"listen": ADMIN.removeprefix("http://")},
        "logging": {
            "logs": {
                "default": {"level": "WARN", "exclude": ["http.log.access.access"]},
                "access": {
                    "writer": {"output": "stdout"},
                    "encoder": {"format": "json"},
                    "include": ["http.log.access.access"],
                },
            }
        },
        "apps": {
            "tls": {"certificates": {"load_files": [{"certificate": CERT, "key": KEY}]}},
            "http": {
                "servers": {
                    "redirect": {
                        "listen": [f":{HTTP_PORT}"],
                        "routes": [
                            {
                                "handle": [
                                    {
                                        "handler": "static_response",
                                        "status_code": 308,
                                        "headers": {
                                            "Location": [
                                                f"https://{{http.request.host}}{port}"
                                                "{http.request.uri}"
                                            ]
                                        },
                                    }
                                ]
                            }
                        ],
                        "automatic_https": {"disable": True},
                    },
                    # The proxy's own metrics (requests, latency by handler and code),
                    # scraped by the monitoring; the port is not published.
                    "metrics": {
                        "listen": [f":{METRICS_PORT}"],
                        "routes": [{"handle": [{"handler": "metrics"}]}],
                        "automatic_https": {"disable": True},
                    },
                    "public": {
                        "listen": [f":{HTTPS_PORT}"],
                        "protocols": ["h1", "h2"],  # no HTTP/3: its UDP port is not published
                        # A client reaching an IP address sends no server name (SNI).
                        # TLS 1.2 and 1.3 only; 1.2 with forward-secret AEAD suites only
                        # (Caddy's defaults today, pinned: a newer Caddy cannot loosen them).
                        "tls_connection_policies": [
                            {
                                "default_sni": route.server_name,
                                "protocol_min": "tls1.2",
                                "cipher_suites": list(STRONG_TLS_1_2),
                            }
                        ],
                        "automatic_https": {"disable": True},
                        "logs": {"default_logger_name": "access"},
                        "routes": [
                            {  # a sane client id is kept; none, or any other, is replaced
                                "match": [{"not": [{"header_regexp": SANE_REQUEST_ID}]}],
                                "handle": [
                                    {
                                        "handler": "headers",
                                        "request": {"set": {REQUEST_ID: ["{http.request.uuid}"]}},
                                    }
                                ],
                            },
                            *([monitoring_route(route.monitoring)] if route.monitoring else []),
                            *([admin_route(route.admin_allow)] if route.admin_allow else []),
                            {
                                "handle": [
                                    {
                                        "handler": "headers",
                                        "response": {
                                            "set": {
                                                **SECURITY_HEADERS,
                                                REQUEST_ID: [
                                                    f"{{http.request.header.{REQUEST_ID}}}"
                                                ],
                                            },
                                            "deferred": True,
                                        },
                                    },
                                    backend,
                                ]
                            },
                        ],
                    },
                }
            },
        },
    }


def upstream(service: str) -> str:
    return f"{service}:8000"
