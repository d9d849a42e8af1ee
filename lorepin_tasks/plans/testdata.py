"""Test data for `invoke data.generate`: realistic, deterministic rows in PostgreSQL's COPY
text format. Pure: the same seed gives the same rows, byte for byte.

Faker writes pools once per run (titles and stories in eight languages, people's user
names; places are Faker's list of real towns), and a seeded generator combines them per
row: a million pins is a few seconds of Python, and the database takes them by COPY.
Every generated pin carries the tags `test-data` and `test-data-<seed>`, and every user
the name suffix `.td<seed>`, so `data.cleanup` can tell them from real content (and a run
its own rows from everything else).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from lorepin_cms.models import slugify
from lorepin_tasks.errors import ConfigError

MARK = "test-data"  # the tag of every generated pin
LOCALES = ("en_US", "fr_FR", "de_DE", "es_ES", "it_IT", "ja_JP", "pt_BR", "nl_NL")
TAGS = (
    "legend", "ghost", "history", "folklore", "battle", "saint", "witch", "treasure",
    "bridge", "castle", "river", "forest", "mountain", "harbour", "market", "church",
)  # fmt: skip
ROLES = (("viewer", 80), ("editor", 15), ("admin", 5))  # user roles and their weights
POOL = 400  # titles per language: variety enough, cheap to make
STORIES = POOL // 4  # stories and user names per language
MAX_PINS = 10_000_000
MAX_USERS = 1_000_000
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)  # generated pins were made in the year before it
PIN_COLUMNS = (
    "title, slug, story, place_name, latitude, longitude, tags, status, created_at, updated_at"
)
USER_COLUMNS = "name, role"


def copy_pins() -> str:
    return f"COPY public.pins ({PIN_COLUMNS}) FROM STDIN"


def copy_users() -> str:
    return f"COPY public.cms_users ({USER_COLUMNS}) FROM STDIN"


def _whole(value: str | int, what: str) -> int:
    text = str(value).strip()
    if not text.lstrip("-").isdigit() or len(text) > 20:
        raise ConfigError(f"{what} must be a whole number, got {str(value)!r}")
    return int(text)


def counts(pins: str | int, users: str | int, seed: str | int) -> tuple[int, int, int]:
    """The request (as typed), checked: whole numbers within bounds (one-line errors)."""
    numbers = _whole(pins, "--pins"), _whole(users, "--users"), _whole(seed, "--seed")
    for what, value, most in (("--pins", numbers[0], MAX_PINS), ("--users", numbers[1], MAX_USERS)):
        if not 0 <= value <= most:
            raise ConfigError(f"{what} must be between 0 and {most:,}, not {value}")
    if numbers[0] == numbers[1] == 0:
        raise ConfigError("say what to generate: --pins N and/or --users M")
    if not 0 <= numbers[2] < 2**32:
        raise ConfigError(f"--seed must be between 0 and {2**32 - 1}, not {numbers[2]}")
    return numbers


def _escape(text: str) -> str:
    """A value in COPY's text format (tab-separated, backslash escapes)."""
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


@dataclass(frozen=True)
class Pools:
    titles: list[str]
    stories: list[str]
    places: list[tuple[float, float, str]]
    people: list[str]


def pools(seed: int) -> Pools:
    """What Faker writes for this seed: titles and stories in every language, user names,
    and its real towns (latitude, longitude, name)."""
    from faker import Faker
    from faker.providers.geo import Provider as Geo

    titles: list[str] = []
    stories: list[str] = []
    people: list[str] = []
    for n, locale in enumerate(LOCALES):
        fake = Faker(locale)
        fake.seed_instance(seed * len(LOCALES) + n)
        titles += [fake.sentence(nb_words=6).rstrip(".。")[:200] for _ in range(POOL)]
        stories += [fake.paragraph(nb_sentences=3) for _ in range(STORIES)]
        people += [fake.user_name() for _ in range(STORIES)]
    places = [(float(lat), float(lon), name) for lat, lon, name, _cc, _tz in Geo.land_coords]
    return Pools(titles, stories, places, people)


def pin_rows(seed: int, count: int, pools_: Pools) -> Iterator[str]:
    """`count` pins as COPY lines: near a real town (within about 5 km), a title and a
    story in one of eight languages, two to four tags besides the mark, three in four
    published, made over the year before EPOCH."""
    rng = random.Random(seed)
    choice, randint, uniform = rng.choice, rng.randint, rng.uniform
    titles, stories, places = pools_.titles, pools_.stories, pools_.places
    escaped_titles = [_escape(t) for t in titles]
    slugs = [_escape(slugify(t)) for t in titles]
    escaped_stories = [_escape(s) for s in stories]
    escaped_places = [(lat, lon, _escape(name)) for lat, lon, name in places]
    year = 365 * 24 * 3600
    start = EPOCH - timedelta(seconds=year)
    seed_tag = f"{MARK}-{seed}"  # which run made it (data.generate checks its own rows)
    for _ in range(count):
        t = randint(0, len(titles) - 1)
        story = escaped_stories[t // POOL * STORIES + randint(0, STORIES - 1)]  # its language
        lat, lon, place = choice(escaped_places)
        lat = min(90.0, max(-90.0, lat + uniform(-0.05, 0.05)))
        lon = min(180.0, max(-180.0, lon + uniform(-0.05, 0.05)))
        tags = ",".join([*rng.sample(TAGS, randint(2, 4)), MARK, seed_tag])
        status = "published" if rng.random() < 0.75 else "draft"
        made = start + timedelta(seconds=randint(0, year))
        stamp = made.isoformat()
        yield (
            f"{escaped_titles[t]}\t{slugs[t]}\t{story}\t{place}\t"
            f"{lat:.5f}\t{lon:.5f}\t{{{tags}}}\t{status}\t{stamp}\t{stamp}\n"
        )


def user_rows(seed: int, count: int, pools_: Pools) -> Iterator[str]:
    """`count` users as COPY lines: a Faker user name made unique and marked
    (`<name>.<n>.td<seed>`, as the CMS's name rule wants), a role by weight."""
    rng = random.Random(seed + 1)
    roles = [r for r, _ in ROLES]
    weights = [w for _, w in ROLES]
    for n in range(count):
        person = rng.choice(pools_.people).lower()
        base = "".join(c for c in person if c.isascii() and (c.isalnum() or c in "._-"))
        name = base.lstrip("._-")[:40] or "user"
        yield f"{name}.{n}.td{seed}\t{rng.choices(roles, weights)[0]}\n"


def seed_rows_sql(seed: int) -> str:
    """The pins and users of this seed there are (one row): 0 and 0 before a run, what
    it wrote after (other writes meanwhile do not count)."""
    pins = f"SELECT count(*) FROM public.pins WHERE tags @> ARRAY['{MARK}-{int(seed)}']"  # noqa: S608
    users = f"SELECT count(*) FROM public.cms_users WHERE name LIKE '%.td{int(seed)}'"  # noqa: S608
    return f"SELECT ({pins}), ({users})"


# -- data.cleanup ----------------------------------------------------------------------

USERS_MARKED = r"name ~ '\.td[0-9]+$'"  # what user_rows names end with


def cleanup_sql(seconds: int) -> tuple[str, list[str]]:
    """What `data.cleanup` would remove (one row: pins, users), and the statements that
    remove it: pins tagged MARK and marked users (their tokens first) made more than
    `seconds` ago. Nothing unmarked, ever."""
    before = f"now() - interval '{int(seconds)} seconds'"
    pins = f"public.pins WHERE tags @> ARRAY['{MARK}'] AND created_at < {before}"
    users = f"SELECT id FROM public.cms_users WHERE {USERS_MARKED} AND created_at < {before}"  # noqa: S608
    count = f"SELECT (SELECT count(*) FROM {pins}), (SELECT count(*) FROM ({users}) u)"  # noqa: S608
    return count, [
        f"DELETE FROM {pins}",  # noqa: S608 (constants and a whole number)
        f"DELETE FROM public.api_tokens WHERE user_id IN ({users})",  # noqa: S608
        f"DELETE FROM public.cms_users WHERE id IN ({users})",  # noqa: S608
    ]
