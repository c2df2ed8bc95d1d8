"""``natchet schemas export``: writes the schemas, and ``--check`` says (exit 1, one line
naming the files and the command) when a directory's copies are stale or missing."""

from __future__ import annotations

from pathlib import Path

import pytest

from natchet.cli import main
from schemas.jsonschema import documents


def test_export_then_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "json"
    assert main(["schemas", "export", "--dir", str(target), "--check"]) == 1
    line = capsys.readouterr().out.strip()
    assert "result.json" in line and "index.json" in line
    assert line.endswith(f"run: natchet schemas export --dir {target}")
    assert not target.exists()  # --check writes nothing

    assert main(["schemas", "export", "--dir", str(target)]) == 0
    assert {p.name for p in target.iterdir()} == set(documents())
    assert (target / "result.json").read_bytes().endswith(b"}\n")
    capsys.readouterr()
    assert main(["schemas", "export", "--dir", str(target), "--check"]) == 0

    (target / "result.json").write_text("{}\n")
    (target / "gone.json").write_text("{}\n")
    assert main(["schemas", "export", "--dir", str(target), "--check"]) == 1
    assert "gone.json, result.json;" in capsys.readouterr().out
    assert main(["schemas", "export", "--dir", str(target)]) == 0
    assert not (target / "gone.json").exists()
    assert main(["schemas", "export", "--dir", str(target), "--check"]) == 0
