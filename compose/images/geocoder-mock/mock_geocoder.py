"""A stand-in for the reverse-geocoding API the CMS uses, for local and feature environments.

GET /reverse?lat=..&lon=.. -> {"name": "..."}: a made-up but stable name for the
coordinates (the same point always gets the same name). GET /healthz -> {"status": "ok"}.
"""

import hashlib
import json
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

FIRST = ["Old", "Grey", "Whispering", "Hollow", "Silver", "Sunken", "Crooked", "Lantern"]
SECOND = ["Ford", "Moor", "Harbour", "Crossing", "Wood", "Tor", "Mill", "Chapel"]


def name_for(lat: float, lon: float) -> str:
    digest = hashlib.sha256(f"{lat:.4f},{lon:.4f}".encode()).digest()
    return f"{FIRST[digest[0] % len(FIRST)]} {SECOND[digest[1] % len(SECOND)]}"


class Handler(BaseHTTPRequestHandler):
    def reply(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        url = urlparse(self.path)
        if url.path == "/healthz":
            return self.reply(200, {"status": "ok"})
        if url.path != "/reverse":
            return self.reply(404, {"error": "not found"})
        query = parse_qs(url.query)
        try:
            lat, lon = float(query["lat"][0]), float(query["lon"][0])
        except (KeyError, ValueError):
            return self.reply(400, {"error": "lat and lon are required numbers"})
        if not (-90 <= lat <= 90 and -180 <= lon <= 180):
            return self.reply(400, {"error": "coordinates out of range"})
        return self.reply(200, {"name": name_for(lat, lon)})

    def log_message(self, *args: object) -> None:
        pass


if __name__ == "__main__":
    # As PID 1 nothing handles SIGTERM by default: without this, `docker stop` waits 10 s.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    ThreadingHTTPServer(("0.0.0.0", 8000), Handler).serve_forever()  # noqa: S104 (in-container)
