"""The mix `invoke perf` puts on an environment (locust, headless): readers listing,
filtering and reading pins, and editors creating some. Each request is named after its
kind, so a report compares endpoints, not URLs.

The task gives it, in the environment: LOREPIN_PERF_TOKEN (an editor's token made for
the run and revoked after it; unset: no writes, as in production), LOREPIN_PERF_CA (the
certificate the environment's proxy presents). Pins it creates are tagged `test-data`
and `perf`, so `invoke data.cleanup` removes them.
"""

from __future__ import annotations

import os
import random

from locust import HttpUser, between, task

TAGS = ("history", "food", "art", "nature", "architecture", "music")


class Reader(HttpUser):
    wait_time = between(0.05, 0.2)
    weight = 9

    def on_start(self) -> None:
        self.client.verify = os.environ.get("LOREPIN_PERF_CA") or True
        answer = self.client.get("/api/pins?limit=100", name="list")
        items = answer.json().get("items", []) if answer.ok else []
        self.ids = [p["id"] for p in items] or [1]

    @task(5)
    def list_pins(self) -> None:
        self.client.get(f"/api/pins?limit=20&offset={random.randrange(0, 200)}", name="list")

    @task(3)
    def filter_pins(self) -> None:
        self.client.get(f"/api/pins?tag={random.choice(TAGS)}&limit=20", name="filter")

    @task(4)
    def read_pin(self) -> None:
        with self.client.get(f"/api/pins/{random.choice(self.ids)}", name="read",
                             catch_response=True) as answer:  # fmt: skip
            if answer.status_code == 404:  # a pin removed meanwhile is an answer, not an error
                answer.success()


class Editor(HttpUser):
    wait_time = between(0.2, 0.5)
    weight = 1  # named on locust's command line only when there is a token

    def on_start(self) -> None:
        self.client.verify = os.environ.get("LOREPIN_PERF_CA") or True
        self.client.headers["Authorization"] = f"Bearer {os.environ['LOREPIN_PERF_TOKEN']}"

    @task
    def create_pin(self) -> None:
        pin = {
            "title": f"Perf pin {random.randrange(1_000_000)}",
            "latitude": round(random.uniform(-60, 60), 5),
            "longitude": round(random.uniform(-170, 170), 5),
            "tags": ["test-data", "perf", random.choice(TAGS)],
        }
        self.client.post("/api/pins", json=pin, name="create")
