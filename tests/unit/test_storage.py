"""Where URIs point, how failed reads are retried, and that written files appear whole or not at all."""

from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pytest

from vad.config import StorageConfig
from vad.io import storage
from vad.io.storage import (
    Location,
    open_atomic,
    parse_uri,
    read_bytes,
    whole_read_attempts,
    with_retries,
    write_bytes,
    write_parquet_atomic,
)


def test_parse_uri_s3_and_local():
    assert parse_uri("s3://bucket/some/prefix/") == Location("s3", "bucket/some/prefix")
    assert parse_uri("s3://bucket").uri == "s3://bucket"
    assert parse_uri("s3://bucket/a").join("b", "/c/", "").path == "bucket/a/b/c"
    assert parse_uri("/tmp/x/../y") == Location("file", "/tmp/y")
    assert parse_uri("file:///tmp/z") == Location("file", "/tmp/z")
    assert parse_uri("relative/dir").path == str(Path("relative/dir").resolve())
    assert parse_uri("~/data").path == str(Path.home() / "data")


@pytest.mark.parametrize("bad", ["s3://", "s3:///", "gs://bucket/x", "http://host/file.mp4"])
def test_parse_uri_refuses_what_it_cannot_reach(bad):
    with pytest.raises(ValueError):
        parse_uri(bad)


def test_with_retries_retries_io_errors_then_succeeds(monkeypatch):
    sleeps = []
    monkeypatch.setattr(storage, "_pause", sleeps.append)  # not time.sleep: other threads sleep too
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise OSError("connection reset")
        return "data"

    assert with_retries(flaky, 3, "reading x", base_s=0.1, cap_s=10) == "data"
    assert len(calls) == 3 and len(sleeps) == 2
    assert 0.05 <= sleeps[0] <= 0.15 and 0.1 <= sleeps[1] <= 0.3  # exponential backoff with jitter


def test_with_retries_gives_up_and_never_retries_a_missing_object(monkeypatch):
    monkeypatch.setattr(storage, "_pause", lambda s: None)
    calls = []

    def always(exc):
        def action():
            calls.append(1)
            raise exc

        return action

    with pytest.raises(OSError, match="down"):
        with_retries(always(OSError("down")), 3, "x")
    assert len(calls) == 3
    calls.clear()
    with pytest.raises(FileNotFoundError):
        with_retries(always(FileNotFoundError("gone")), 3, "x")
    assert len(calls) == 1
    calls.clear()
    with pytest.raises(ValueError):
        with_retries(always(ValueError("a bug, not I/O")), 3, "x")
    assert len(calls) == 1


def test_whole_read_attempts_follow_the_configured_retries():
    assert whole_read_attempts(StorageConfig(retries=0)) == 1
    assert whole_read_attempts(StorageConfig(retries=1)) == 2
    assert whole_read_attempts(StorageConfig(retries=20)) == 3
    assert whole_read_attempts(None) == 3


def test_atomic_writes_leave_whole_files_or_nothing(tmp_path):
    write_bytes(str(tmp_path / "a" / "b.bin"), b"payload")
    assert read_bytes(str(tmp_path / "a" / "b.bin")) == b"payload"
    fs = pafs.LocalFileSystem()
    target = str(tmp_path / "c" / "t.parquet")
    with pytest.raises(RuntimeError):
        with open_atomic(fs, target) as out:
            out.write(b"half a file")
            raise RuntimeError("killed mid-write")
    assert not Path(target).exists() and list((tmp_path / "c").iterdir()) == []  # no temp file left behind
    write_parquet_atomic(fs, target, pa.table({"x": [1, 2]}))
    import pyarrow.parquet as pq

    assert pq.read_table(target)["x"].to_pylist() == [1, 2]
    assert [p.name for p in (tmp_path / "c").iterdir()] == ["t.parquet"]


def test_a_killed_writers_temporary_file_is_removed_by_the_next_write_of_its_target(tmp_path):
    """SIGKILL skips a writer's cleanup: the next write of the same file removes its temp file, and
    nothing else (another target's temp file is another writer's, maybe still at work)."""
    fs = pafs.LocalFileSystem()
    folder = tmp_path / "scores"
    folder.mkdir()
    (folder / ".t.parquet.deadbeef.tmp").write_bytes(b"half a file")
    (folder / ".u.parquet.0badf00d.tmp").write_bytes(b"someone else's")
    write_parquet_atomic(fs, str(folder / "t.parquet"), pa.table({"x": [1]}))
    assert sorted(p.name for p in folder.iterdir()) == [".u.parquet.0badf00d.tmp", "t.parquet"]
