"""Which group the builtin tracker gives an upload that names none (QUERY_STORE 101/103)."""

from __future__ import annotations

import errno

import pytest

from harness.tracker_state import Registry, TrackerError


def registry_with(store_lookup: str, free_mb: dict[str, int | None]) -> Registry:
    """One storage per group, given its free MB of 100,000 (None: the storage is not ACTIVE)."""
    registry = Registry(store_lookup)
    for number, (group, free) in enumerate(free_mb.items(), start=1):
        ip = f"127.0.0.{50 + number}"
        node = registry.join({"group": group, "id": ip, "ip": ip, "port": 23000}, object())
        if free is not None:
            registry.beat(node, {"total_mb": 100_000, "free_mb": free})
    return registry


def picks(registry: Registry, count: int) -> list[str]:
    return [registry.query_store(None, False)[0].name for _ in range(count)]


def test_round_robin_takes_groups_in_name_order_and_skips_those_without_room() -> None:
    # Joined out of order: the turn still goes by name.
    registry = registry_with(
        "round_robin", {"group3": 50_000, "group1": 50_000, "group4": None, "group2": 50_000}
    )
    assert picks(registry, 4) == ["group1", "group2", "group3", "group1"]
    # group2 fills up (its free space within the reserve): it is passed over.
    node = registry.group("group2").sorted_storages()[0]
    registry.beat(node, {"total_mb": 100_000, "free_mb": 10})
    assert picks(registry, 3) == ["group3", "group1", "group3"]


def test_load_balance_takes_the_group_with_most_room() -> None:
    registry = registry_with(
        "load_balance", {"group1": 20_000, "group2": 70_000, "group3": 70_000, "group4": None}
    )
    # A tie goes to the first by name, every time.
    assert picks(registry, 3) == ["group2", "group2", "group2"]


@pytest.mark.parametrize("store_lookup", ["round_robin", "load_balance"])
def test_no_room_anywhere_is_enospc_and_no_active_storage_enoent(store_lookup: str) -> None:
    full = registry_with(store_lookup, {"group1": 10, "group2": None})
    with pytest.raises(TrackerError) as no_room:
        full.query_store(None, False)
    assert no_room.value.status == errno.ENOSPC
    idle = registry_with(store_lookup, {"group1": None, "group2": None})
    with pytest.raises(TrackerError) as none_active:
        idle.query_store(None, False)
    assert none_active.value.status == errno.ENOENT
