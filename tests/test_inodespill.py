"""File nodes the kernel holds move to disk past a bound, and come back intact."""

from __future__ import annotations

import pytest

from fdfsmount import inodespill
from fdfsmount.namespace import GroupDirectory, InodeTable, Kind, NotFound, hashed_inode
from fdfsmount.proto import GroupStat, parse_file_id
from harness.synthetic import source_bytes, synthetic_name


async def _no_groups() -> list[GroupStat]:
    return []


def test_file_nodes_past_the_bound_live_on_disk(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(inodespill, "RESIDENT_FILES", 100)
    monkeypatch.setattr(inodespill, "SPILL_BATCH", 30)
    table = InodeTable(GroupDirectory(_no_groups))
    src = source_bytes(7)
    fids = [parse_file_id(f"group1/{synthetic_name(i, src)}") for i in range(1000)]
    inodes = []
    try:
        for fid in fids:
            node = table.remember(table.file_node(fid, parent=5))
            inodes.append(node.inode)
        table.remember(table.file_node(fids[0]))  # a second lookup of a spilled node
        assert len(table) == 1001  # every node is still known (plus the root)
        assert table.resident <= 102
        # Inode numbers stay derived from the file ID, and nodes come back whole.
        assert inodes[10] == hashed_inode(str(fids[10]))
        node = table.get(inodes[0])
        assert node.kind is Kind.FILE and node.file_id == fids[0] and node.parent == 5
        assert node.lookups == 2 and node.id_info is not None
        assert table.find(str(fids[500])) is not None
        # forget counts down wherever the node is; at zero it is gone.
        table.forget(inodes[0], 2)
        table.forget(inodes[1], 1)
        for inode in (inodes[0], inodes[1]):
            with pytest.raises(NotFound):
                table.get(inode)
        assert len(table) == 999
    finally:
        table.close()
