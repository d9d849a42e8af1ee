from __future__ import annotations

import pytest

from lorepin_tasks.errors import ConfigError
from lorepin_tasks.plans import images as plan


def test_tags_version_sha_and_branch_off_the_release_branch() -> None:
    assert plan.tags("1.2.0", "abcdef0123", "main", "main") == ["1.2.0", "sha-abcdef0"]
    assert plan.tags("1.2.0-rc.1+build.5", "abcdef0123", "feat/Map Search", "main") == [
        "1.2.0-rc.1-build.5",
        "sha-abcdef0",
        "branch-feat-map-search",
    ]
    assert plan.tags("0.0.0-dev", "abcdef0123", None, "main") == ["0.0.0-dev", "sha-abcdef0"]


def test_tag_safe() -> None:
    assert plan.tag_safe("0.0.0-dev+g1234567-dirty") == "0.0.0-dev-g1234567-dirty"
    assert plan.tag_safe(".hidden") == "hidden"
    assert len(plan.tag_safe("x" * 300)) == 128


@pytest.mark.parametrize("good", ["127.0.0.1:5000", "localhost:5000", "registry.example:443"])
def test_registries(good: str) -> None:
    assert plan.registry(good) == good


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "127.0.0.1",
        "http://127.0.0.1:5000",
        "a b:1",
        "x:port",
        "127.0.0.1:99999",
        "127.0.0.1:0",
        "..:1",
        "a..b:5000",
        "-x:5000",
    ],
)
def test_bad_registries(bad: str) -> None:
    with pytest.raises(ConfigError, match="invalid registry"):
        plan.registry(bad)


@pytest.mark.parametrize("good", ["1.2.0", "v1.2.0", "1.3.0-rc.1", "sha-abcdef0"])
def test_versions_name_tags(good: str) -> None:
    assert plan.version_tag(good) == good.removeprefix("v")


@pytest.mark.parametrize("bad", ["", "../../etc", "latest", "1.2.0+build.5", "v", "sha-xyz"])
def test_anything_else_is_no_version(bad: str) -> None:
    with pytest.raises(ConfigError, match="invalid version"):
        plan.version_tag(bad)


def test_unknown_services_are_refused() -> None:
    assert plan.services([]) == ["cms", "db", "geocoder", "proxy", "collector"]
    with pytest.raises(ConfigError, match="unknown service"):
        plan.services(["cms", "nginx"])


def image(id_: str, tag: str) -> plan.LocalImage:
    return plan.LocalImage(id=id_, repository="lorepin/cms", tag=tag)


def test_prune_keeps_newest_versions_and_images_in_use() -> None:
    local = [
        image("i1", "1.0.0"),
        image("i1", "sha-1111111"),
        image("i2", "1.1.0"),
        image("i3", "1.2.0"),
        image("i4", "2.0.0-rc.1"),
        image("i5", "2.0.0"),
        image("i5", "sha-5555555"),
        image("i6", "dev"),  # an environment's tag: never pruned here
        image("i7", "sha-7777777"),
    ]
    remove, kept = plan.prune_plan(local, in_use={"i1"}, keep=2)
    assert {(i.id, i.tag) for i in remove} == {
        ("i2", "1.1.0"),
        ("i3", "1.2.0"),
        ("i7", "sha-7777777"),
    }
    reasons = {(i.id, i.tag): why for i, why in kept}
    assert reasons == {
        ("i1", "1.0.0"): "used by a container",
        ("i1", "sha-1111111"): "used by a container",
        ("i4", "2.0.0-rc.1"): "among the newest 2 versions",
        ("i5", "2.0.0"): "among the newest 2 versions",
        ("i5", "sha-5555555"): "among the newest 2 versions",
    }
