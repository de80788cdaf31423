"""An extent of the write-back holds what was written without copying large writes,
and reads back exactly what a plain buffer given the same writes would hold."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from fdfsmount.writeback import KEEP_WRITES_FROM, Extent

SIZES = (1, 7, 100, 4096, KEEP_WRITES_FROM - 1, KEEP_WRITES_FROM, 70_000)


def _content(extent: Extent) -> bytes:
    return b"".join(extent.pieces(0, len(extent)))


def test_large_writes_are_kept_and_small_ones_share_a_tail() -> None:
    extent = Extent(1000)
    big = bytes(range(256)) * 256  # 64 KiB
    extent.put(0, big)
    for i in range(1000):
        extent.put(len(extent), bytes([i % 256]))
    extent.put(len(extent), big)
    assert len(extent) == 2 * len(big) + 1000 and extent.end == 1000 + len(extent)
    views = extent.pieces(0, len(extent))
    assert [v.obj is big for v in views] == [True, False, True]  # one tail for 1000 writes
    assert _content(extent) == big + bytes(i % 256 for i in range(1000)) + big
    # A range across chunk boundaries.
    assert b"".join(extent.pieces(len(big) - 3, len(big) + 5)) == big[-3:] + bytes(range(5))


def test_a_write_inside_joins_the_extent_and_lands_in_place() -> None:
    extent = Extent(0, zeros=10)
    extent.put(10, b"a" * KEEP_WRITES_FROM)
    extent.put(5, b"XYZ")
    assert _content(extent) == b"\0" * 5 + b"XYZ" + b"\0\0" + b"a" * KEEP_WRITES_FROM
    extent.put(len(extent) - 2, b"tail")  # overlaps the end and grows it
    assert _content(extent)[-6:] == b"aatail" and len(extent) == 10 + KEEP_WRITES_FROM + 2


@settings(max_examples=150, deadline=None)
@given(
    zeros=st.integers(0, 3),
    writes=st.lists(
        st.tuples(
            st.sampled_from(SIZES),
            st.floats(0, 1),
            st.booleans(),
            st.binary(min_size=1, max_size=1),
        ),
        max_size=25,
    ),
    cuts=st.lists(st.tuples(st.floats(0, 1), st.floats(0, 1)), max_size=5),
)
def test_reads_back_what_a_plain_buffer_holds(
    zeros: int,
    writes: list[tuple[int, float, bool, bytes]],
    cuts: list[tuple[float, float]],
) -> None:
    extent = Extent(77, zeros)
    model = bytearray(zeros)
    for size, where, append, fill in writes:
        at = len(model) if append else int(where * len(model))
        data = fill * size
        extent.put(at, data)
        model[at : at + size] = data
        assert len(extent) == len(model)
    assert _content(extent) == model
    for a, b in cuts:
        lo, hi = sorted((int(a * len(model)), int(b * len(model))))
        assert b"".join(extent.pieces(lo, hi)) == model[lo:hi]
