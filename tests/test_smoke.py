"""The package imports and says which version it is."""

from __future__ import annotations

import fdfsmount


def test_version() -> None:
    assert fdfsmount.__version__ == "0.1.0"
