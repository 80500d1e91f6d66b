"""The worker's garbage-collector settings: long-lived objects frozen, collections rarer, and
reference cycles still collected."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from worker.engine.collector import THRESHOLDS, tune_for_worker


@pytest.fixture
def restored_collector() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


def test_objects_alive_at_tuning_are_frozen_and_thresholds_raised(
    restored_collector: None,
) -> None:
    tune_for_worker()

    assert gc.get_threshold() == THRESHOLDS
    assert gc.get_freeze_count() > 0


def test_a_cycle_made_after_tuning_is_still_collected(restored_collector: None) -> None:
    tune_for_worker()
    first, second = Node(), Node()
    first.other, second.other = second, first
    gone = weakref.ref(first)
    del first, second

    gc.collect()

    assert gone() is None
