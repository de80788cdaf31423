"""Fast string strategies for simple patterns.

``st.from_regex`` is general and slow to draw from (about a third of the codec
property tests' time). The patterns these tests use are literals and
``[class]{m,n}`` runs, which ``pattern`` draws as plain ``st.text`` pieces.
"""

from __future__ import annotations

import re

from hypothesis import strategies as st

_ATOM = re.compile(r"\[((?:\\.|[^\]])+)\](?:\{(\d+)(?:,(\d+))?\})?|(\\.|[^\[\\])")


def _expand(charclass: str) -> str:
    chars: list[str] = []
    i = 0
    items = re.findall(r"\\.|.", charclass)
    while i < len(items):
        c = items[i].removeprefix("\\") if len(items[i]) == 2 else items[i]
        if i + 2 < len(items) and items[i + 1] == "-":
            end = items[i + 2].removeprefix("\\") if len(items[i + 2]) == 2 else items[i + 2]
            chars.extend(chr(x) for x in range(ord(c), ord(end) + 1))
            i += 3
        else:
            chars.append(c)
            i += 1
    return "".join(dict.fromkeys(chars))


def pattern(regex: str) -> st.SearchStrategy[str]:
    """Strings matching `regex` in full: literals and ``[class]{m,n}`` runs only."""
    pieces: list[st.SearchStrategy[str]] = []
    pos = 0
    while pos < len(regex):
        m = _ATOM.match(regex, pos)
        if m is None or m.end() == pos:
            raise ValueError(f"pattern() takes literals and [class]{{m,n}} only: {regex!r}")
        charclass, low, high, literal = m.groups()
        if literal is not None:
            pieces.append(st.just(literal.removeprefix("\\")))
        else:
            lo = int(low) if low is not None else 1
            hi = int(high) if high is not None else lo
            pieces.append(st.text(alphabet=_expand(charclass), min_size=lo, max_size=hi))
        pos = m.end()
    return st.tuples(*pieces).map("".join)
