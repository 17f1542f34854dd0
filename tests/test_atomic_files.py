"""Files written whole: a reader sees the old file or the new one, never a part, nor a leftover."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlops_template.atomic_files import write_atomically


def test_a_file_appears_whole_and_no_temporary_file_is_left(tmp_path: Path):
    path = tmp_path / "part-1.parquet"
    seen_while_writing: list[bool] = []

    def write(temporary: Path) -> None:
        temporary.write_text("new")
        seen_while_writing.append(path.exists())
        assert temporary.name.startswith("."), "Spark must skip the file while it is written"

    assert write_atomically(path, write) == path
    assert seen_while_writing == [False]
    assert path.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["part-1.parquet"]


def test_a_failed_write_keeps_the_previous_file_and_removes_its_temporary(tmp_path: Path):
    path = tmp_path / "spec.json"
    path.write_text("old")

    def fail_halfway(temporary: Path) -> None:
        temporary.write_text("ne")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomically(path, fail_halfway)
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["spec.json"]
