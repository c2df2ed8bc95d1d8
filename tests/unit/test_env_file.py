"""natchet.config's env file (``natchet dev`` writes ``dev.env``; the CLI reads it): a
reader sees the whole old file or the whole new one, never a part."""

from __future__ import annotations

from pathlib import Path

import pytest

from natchet.config import read_env_file, write_env_file


def test_written_values_read_back_and_nothing_is_left_beside_them(tmp_path: Path) -> None:
    path = tmp_path / "dev.env"
    write_env_file(path, {"A": "1"})
    write_env_file(path, {"A": "2", "B": "x=y"})
    assert read_env_file(path) == {"A": "2", "B": "x=y"}
    assert [p.name for p in tmp_path.iterdir()] == ["dev.env"]


def test_a_write_that_fails_midway_leaves_the_old_file_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "dev.env"
    write_env_file(path, {"HATCHET_CLIENT_TOKEN": "old", "NATCHET_DATABASE_URL": "pg"})
    real = Path.write_text

    def half_then_fail(self: Path, text: str, *args: object, **kwargs: object) -> int:
        real(self, text[: len(text) // 2])
        raise OSError("disk full")

    monkeypatch.setattr(Path, "write_text", half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        write_env_file(path, {"HATCHET_CLIENT_TOKEN": "new", "NATCHET_DATABASE_URL": "pg2"})
    monkeypatch.undo()
    assert read_env_file(path) == {"HATCHET_CLIENT_TOKEN": "old", "NATCHET_DATABASE_URL": "pg"}
    assert [p.name for p in tmp_path.iterdir()] == ["dev.env"]
