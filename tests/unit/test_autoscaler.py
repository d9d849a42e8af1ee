"""The autoscaler's decisions (monitoring/autoscaler.py, run in the swarm stack): in
proportion above the target, one replica at a time below half of it after a while, never
within the cooldown, never outside the bounds."""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType

import pytest

from tests.conftest import ROOT


@pytest.fixture(scope="module")
def autoscaler() -> ModuleType:
    spec = importlib.util.spec_from_file_location("autoscaler", ROOT / "monitoring/autoscaler.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["autoscaler"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def policy(autoscaler: ModuleType) -> object:
    return autoscaler.Policy(min=1, max=4, target_ms=200, cooldown_s=60, down_after_s=300)


def test_above_the_target_it_grows_in_proportion_within_max(autoscaler: ModuleType) -> None:
    state = autoscaler.State()
    assert autoscaler.decide(policy(autoscaler), state, 1, 450.0, 1000.0) == (
        3, "p99 450 ms is above the target 200 ms"
    )  # fmt: skip
    # Not again within the cooldown, even far above the target...
    assert autoscaler.decide(policy(autoscaler), state, 3, 2000.0, 1030.0) is None
    # ...then to max, never beyond.
    assert autoscaler.decide(policy(autoscaler), state, 3, 2000.0, 1061.0)[0] == 4
    assert autoscaler.decide(policy(autoscaler), state, 4, 2000.0, 2000.0) is None


def test_around_the_target_nothing_changes(autoscaler: ModuleType) -> None:
    state = autoscaler.State()
    for p99 in (210.0, 180.0, 101.0, 219.0):  # within the tolerance above, or over half
        assert autoscaler.decide(policy(autoscaler), state, 2, p99, 1000.0) is None


def test_below_half_the_target_it_shrinks_one_at_a_time_after_a_while(
    autoscaler: ModuleType,
) -> None:
    state = autoscaler.State()
    p = policy(autoscaler)
    assert autoscaler.decide(p, state, 3, 20.0, 1000.0) is None  # the low period begins
    assert autoscaler.decide(p, state, 3, 20.0, 1299.0) is None
    assert autoscaler.decide(p, state, 3, 20.0, 1300.0) == (
        2, "p99 20 ms, under half the target 200 ms for 300 s"
    )  # fmt: skip
    # A spike in between starts the low period again.
    assert autoscaler.decide(p, state, 2, 150.0, 1400.0) is None
    assert autoscaler.decide(p, state, 2, None, 1500.0) is None
    assert autoscaler.decide(p, state, 2, None, 1800.0) == (
        1, "no requests, under half the target 200 ms for 300 s"
    )  # fmt: skip
    assert autoscaler.decide(p, state, 1, None, 5000.0) is None  # min


def test_a_count_outside_the_bounds_is_brought_back_at_once(autoscaler: ModuleType) -> None:
    state = autoscaler.State(last_change=999.0)
    assert autoscaler.decide(policy(autoscaler), state, 6, 10.0, 1000.0) == (
        4, "6 replicas is outside 1..4"
    )  # fmt: skip
    assert autoscaler.decide(policy(autoscaler), state, 0, None, 1001.0)[0] == 1


def test_a_count_someone_else_set_starts_the_cooldown_again(autoscaler: ModuleType) -> None:
    state = autoscaler.State()
    p = policy(autoscaler)
    assert autoscaler.decide(p, state, 1, None, 1000.0) is None  # idle at min
    # `invoke scale --replicas 4`: not undone at the next look, idle as it is...
    assert autoscaler.decide(p, state, 4, None, 1001.0) is None
    assert autoscaler.decide(p, state, 4, None, 1200.0) is None
    # ...but after the cooldown and a whole low period, one at a time as ever.
    assert autoscaler.decide(p, state, 4, None, 1301.0) == (
        3, "no requests, under half the target 200 ms for 300 s"
    )  # fmt: skip
    assert autoscaler.decide(p, state, 3, None, 1302.0) is None  # its own change: no reset


def test_without_metrics_it_keeps_the_bounds_and_nothing_else(autoscaler: ModuleType) -> None:
    """No replica scraped (Prometheus cannot reach them) is not idleness: nothing shrinks,
    however long, and the low period starts again once the metrics are back."""
    state = autoscaler.State()
    p = policy(autoscaler)
    assert autoscaler.decide(p, state, 3, None, 1000.0) is None  # idle: the low period begins
    for now in (1100.0, 1300.0, 2000.0):
        assert autoscaler.decide(p, state, 3, None, now, blind=True) is None
    assert autoscaler.decide(p, state, 3, None, 2001.0) is None  # back: it starts again
    assert autoscaler.decide(p, state, 3, None, 2301.0)[0] == 2
    assert autoscaler.decide(p, state, 9, None, 2302.0, blind=True)[0] == 4  # bounds still
