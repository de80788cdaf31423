"""`python -m bench` draws throughput against file size when matplotlib is there,
and says how to get it when it is not."""

from __future__ import annotations

import builtins
import struct
from pathlib import Path
from typing import Any

import pytest

from bench.run_all import Results, write_plot

SIZES = (4096, 65536, 1 << 20, 16 << 20)


def _results() -> list[Results]:
    out = []
    for backend in ("builtin", "native"):
        res = Results(backend)
        for series, scale in (("mount", 1.0), ("null filesystem", 2.0), ("client download()", 3.0)):
            res.plot[series] = {size: scale * size / 4096 for size in SIZES}
        out.append(res)
    return out


def test_the_plot_is_a_png_with_a_panel_per_backend(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    path = tmp_path / "plot.png"
    assert write_plot(_results(), path)
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR"
    width, height = struct.unpack(">II", head[16:24])
    assert width > height  # two panels side by side


def test_without_matplotlib_the_bench_says_how_to_get_the_plot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real_import = builtins.__import__

    def no_matplotlib(name: str, *args: Any, **kwargs: Any) -> Any:
        if name.split(".")[0] == "matplotlib":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    assert not write_plot(_results(), tmp_path / "plot.png")
    assert not (tmp_path / "plot.png").exists()
    assert "pip install '.[bench]'" in capsys.readouterr().out
