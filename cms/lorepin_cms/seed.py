"""Deterministic, realistic test data for throwaway environments.

`python -m lorepin_cms.seed --count 3000 --seed 42`: the same seed always gives the same
pins (titles, stories, tags, places, statuses). An environment that already has pins is
left alone, so running it again never duplicates anything. With `--token`, the first seeding
also adds the user `developer` (admin) and prints a token of theirs, once: a throwaway
environment's own key to its drafts and writes.
"""

from __future__ import annotations

import argparse
import random
import sys
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Table, create_engine, func, insert, select

from lorepin_cms import access
from lorepin_cms.config import database_url
from lorepin_cms.models import Pin, slugify

ADJECTIVES = [
    "Drowned",
    "Silent",
    "Burning",
    "Forgotten",
    "Weeping",
    "Hidden",
    "Iron",
    "Crooked",
    "Golden",
    "Hollow",
    "Lantern",
    "Salt",
    "Thorned",
    "Wandering",
]
NOUNS = [
    "Bell",
    "Ferryman",
    "Oak",
    "Chapel",
    "Well",
    "Stone",
    "Mill",
    "Bridge",
    "Hound",
    "Lady",
    "Tower",
    "Cairn",
    "Orchard",
    "Shepherd",
    "Harp",
    "Gate",
]
TAGS = [
    "legend",
    "ghost",
    "battle",
    "saint",
    "sea",
    "river",
    "forest",
    "giant",
    "witch",
    "treasure",
    "fairy",
    "king",
    "plague",
    "miracle",
    "smuggler",
    "mine",
]
SENTENCES = [
    "Villagers say it can still be heard on winter nights.",
    "The story was first written down by a travelling priest.",
    "Children leave a coin here for luck.",
    "No one who went looking for it came back the same.",
    "The stones were moved once, and put back within the year.",
    "An old map marks the spot with a small cross.",
]
# Rough boxes (lat, lon) around regions rich in folklore, so points cluster like real data.
REGIONS = [
    ((50.0, 58.5), (-8.0, 1.5)),
    ((43.0, 51.0), (-4.5, 7.5)),
    ((45.5, 55.0), (6.0, 15.0)),
    ((36.0, 44.0), (-9.0, 3.0)),
    ((55.0, 69.0), (5.0, 25.0)),
]


PINS: Table = Pin.__table__  # type: ignore[assignment]


def pins(count: int, seed: int) -> Iterator[dict[str, Any]]:
    rng = random.Random(seed)
    start = datetime(2025, 1, 1, tzinfo=UTC)
    for i in range(count):
        title = f"The {rng.choice(ADJECTIVES)} {rng.choice(NOUNS)} of {rng.choice(NOUNS)}s"
        (lat_lo, lat_hi), (lon_lo, lon_hi) = rng.choice(REGIONS)
        created = start + timedelta(minutes=37 * i + rng.randrange(30))
        yield {
            "title": f"{title} #{i + 1}",
            "slug": slugify(f"{title} #{i + 1}"),
            "story": " ".join(rng.sample(SENTENCES, k=rng.randint(1, 3))),  # the API's body
            "latitude": round(rng.uniform(lat_lo, lat_hi), 5),
            "longitude": round(rng.uniform(lon_lo, lon_hi), 5),
            "tags": sorted(rng.sample(TAGS, k=rng.randint(1, 3))),
            "status": "published" if rng.random() < 0.7 else "draft",
            "place_name": None,
            "created_at": created,
            "updated_at": created,
        }


def seed(
    url: Any, count: int, seed_value: int, *, batch: int = 1000, token: bool = False
) -> tuple[int, str | None]:
    """Insert `count` pins unless the table has any (and with `token`, the developer's
    token): how many were inserted, and the token."""
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            if conn.execute(select(func.count()).select_from(Pin)).scalar():
                return 0, None
            rows = list(pins(count, seed_value))
            for i in range(0, len(rows), batch):
                conn.execute(insert(PINS), rows[i : i + batch])  # column names
            return len(rows), access.user_with_token(
                conn, "developer", "admin", 30
            ) if token else None
    finally:
        engine.dispose()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lorepin_cms.seed", description=__doc__)
    parser.add_argument("--count", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--token", action="store_true", help="add `developer`, print a token")
    args = parser.parse_args(argv)
    if not 0 < args.count <= 1_000_000:
        print("error: --count must be between 1 and 1000000", file=sys.stderr)
        return 2
    inserted, token = seed(database_url(), args.count, args.seed, token=args.token)
    said = f"seeded {inserted} pins" if inserted else "already has pins; nothing seeded"
    print(f"{said}; admin token of developer (shown once): {token}" if token else said)
    return 0


if __name__ == "__main__":
    sys.exit(main())
