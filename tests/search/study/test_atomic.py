"""Atomic writes leave whole files with the mode the umask gives, never the temporary file's private 0600."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from search.study import atomic


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_files_follow_the_umask(tmp_path: Path, umask: int, mode: int) -> None:
    old = os.umask(umask)
    try:
        for name, write in (("a.json", lambda p: atomic.write_json(p, {"x": 1})),
                            ("b.txt", lambda p: atomic.write_text(p, "x")),
                            ("c.bin", lambda p: atomic.write_bytes(p, b"x"))):
            write(tmp_path / name)
            assert stat.S_IMODE((tmp_path / name).stat().st_mode) == mode, name
    finally:
        os.umask(old)
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_failed_write_leaves_the_previous_file(tmp_path: Path) -> None:
    target = tmp_path / "metrics.json"
    atomic.write_json(target, {"old": True})

    def broken(path: Path) -> None:
        path.write_text("half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        atomic.write_with(target, broken)
    assert target.read_text() == '{\n  "old": true\n}\n' and not list(tmp_path.glob(".*.tmp"))
