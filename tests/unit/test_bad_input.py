"""Bad input at the decode stage and on the command line, and the job's bookkeeping (errors, manifest), without Ray."""

import datetime as dt
import time

import numpy as np
import pytest
from helpers import DECODE
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vad.io.sources import VideoRef
from vad.results.ledger import ErrorLog, ManifestKey, ManifestWriter, adopt_finished, error_row, is_up_to_date, read_manifest, unique_errors
from vad.results.schema import result_file_name
from vad.scoring.decoding import decode_videos
from vad.testing.faults import FAULT_KINDS, bad_object
from vad.testing.synthetic import encode_mp4, render_scene
from vad.video.clips import clip_starts

VALID = encode_mp4(render_scene(5, 24, height=64, width=96).frames)


def decode_bytes(data: bytes, folder, name: str = "v.mp4"):
    """Run the decode stage on one local object; returns (clips yielded, clips_in_video, error rows)."""
    path = folder / name
    path.write_bytes(data)
    video = VideoRef(str(path), name, "video", len(data), path.stat().st_mtime, "cam", "2026-11-24")
    errors = ErrorLog()
    batch = {k: np.array([v], dtype=object) for k, v in video.to_row().items()}
    batches = list(decode_videos(batch, decode=DECODE, storage=None, errors=errors))
    declared = {int(n) for b in batches for n in b["clips_in_video"]}
    return sum(len(b["clip_index"]) for b in batches), declared, errors.rows()


def mutated(draw_data: st.DataObject) -> bytes:
    """A valid MP4 truncated, bit-flipped, or with a block overwritten by random bytes."""
    data = bytearray(VALID)
    how = draw_data.draw(st.sampled_from(["truncate", "flip", "splice"]))
    if how == "truncate":
        return bytes(data[: draw_data.draw(st.integers(0, len(data) - 1))])
    if how == "flip":
        for position in draw_data.draw(st.lists(st.integers(0, len(data) - 1), min_size=1, max_size=64)):
            data[position] ^= 0xFF
        return bytes(data)
    start = draw_data.draw(st.integers(0, len(data) - 1))
    junk = draw_data.draw(st.binary(min_size=1, max_size=4096))
    data[start : start + len(junk)] = junk
    return bytes(data)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_corrupted_bytes_never_escape_the_decode_stage(data, tmp_path):
    """Whatever the bytes, the stage either yields a whole video's clips or reports exactly one
    error for it, and never raises."""
    raw = data.draw(st.one_of(st.binary(max_size=8192), st.builds(lambda d: mutated(d), st.data())))
    clips, declared, errors = decode_bytes(raw, tmp_path)
    if errors:
        assert len(errors) == 1 and errors[0]["stage"] in {"open", "decode", "read"}
        assert errors[0]["message"] and errors[0]["error_class"]
    else:
        assert clips > 0 and declared == {clips}, "a video without an error must be complete"


def test_valid_video_decodes_completely(tmp_path):
    clips, declared, errors = decode_bytes(VALID, tmp_path)
    assert errors == [] and clips == len(clip_starts(24, DECODE.clip_len, DECODE.stride)) and declared == {clips}


@pytest.mark.parametrize("kind", sorted(k for k in FAULT_KINDS if k not in ("not_video", "bad_frame")))
def test_each_fault_kind_in_the_decode_stage(kind, tmp_path):
    obj = bad_object(kind, np.random.default_rng(1), clip_len=DECODE.clip_len, name=kind)
    [(name, data)] = obj.files.items()
    clips, _, errors = decode_bytes(data, tmp_path, name)
    if obj.expect == "error":
        assert [e["permanent"] for e in errors] == [True] and clips == 0
    else:
        assert errors == [] and clips > 0


def test_a_frame_folder_with_a_broken_frame_reports_part_way(tmp_path):
    obj = bad_object("bad_frame", np.random.default_rng(2), clip_len=DECODE.clip_len, frames=40, name="f")
    for rel, data in obj.files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(data)
    frames = tuple(str(tmp_path / rel) for rel in sorted(obj.files))
    video = VideoRef(str(tmp_path / "f"), "f", "frames", 1, 0.0, "cam", "2026-11-24", frames)
    errors = ErrorLog()
    batches = list(decode_videos({k: np.array([v], dtype=object) for k, v in video.to_row().items()}, decode=DECODE, storage=None, errors=errors))
    [error] = errors.rows()
    assert (error["stage"], error["error_class"]) == ("decode", "CorruptFrame")
    assert batches and sum(len(b["clip_index"]) for b in batches) < batches[0]["clips_in_video"][0], "clips came before the failure"


def test_without_an_error_log_the_failure_is_raised(tmp_path):
    path = tmp_path / "bad.mp4"
    path.write_bytes(b"not a video")
    video = VideoRef(str(path), "bad.mp4", "video", 11, 0.0, "cam", "2026-11-24")
    with pytest.raises(Exception, match="cannot open"):
        list(decode_videos({k: np.array([v], dtype=object) for k, v in video.to_row().items()}, decode=DECODE, storage=None))


def test_unique_errors_keeps_one_row_per_failure():
    first = error_row("s3://b/a.mp4", "open", ValueError("x"))
    again = error_row("s3://b/a.mp4", "open", ValueError("x"))
    other = error_row("s3://b/a.mp4", "write", OSError("disk"))
    assert unique_errors([first, again, other]) == [first, other]
    assert len(error_row("u", "read", message="m" * 10_000)["message"]) == 2000


def test_manifest_keeps_the_newest_entry_per_object(tmp_path):
    key = ManifestKey("s3://b/a.mp4", "conv_ae", "1", "len8")
    writer = ManifestWriter(str(tmp_path), "2026-11-24", "run1", flush_every=1)
    writer.add(uri=key.uri, size=10, mtime=1.0, key=key, status="failed", clips=0, scores_path=None)
    time.sleep(0.01)
    writer.add(uri=key.uri, size=12, mtime=2.0, key=key, status="scored", clips=3, scores_path="p")
    other_model = ManifestKey(key.uri, "conv_ae", "2", "len8")
    writer.add(uri=key.uri, size=12, mtime=2.0, key=other_model, status="scored", clips=3, scores_path="q")
    manifest = read_manifest(str(tmp_path))
    assert manifest[key].status == "scored" and manifest[key].size == 12
    assert is_up_to_date(manifest[key], 12, 2.0)
    assert not is_up_to_date(manifest[key], 13, 2.0) and not is_up_to_date(manifest[key], 12, 3.0)
    assert not is_up_to_date(None, 12, 2.0)
    assert manifest[other_model].scores_path == "q"
    assert read_manifest(str(tmp_path / "nothing-here")) == {}


def test_manifest_flushes_on_time(tmp_path):
    key = ManifestKey("u", "m", "1", "d")
    writer = ManifestWriter(str(tmp_path), "2026-11-24", "run1", flush_every=1000, flush_s=0.0)
    writer.add(uri="u", size=1, mtime=1.0, key=key, status="scored", clips=1, scores_path="p")
    assert writer.written == 1 and key in read_manifest(str(tmp_path))


def test_results_of_an_interrupted_run_are_adopted_only_when_the_source_is_unchanged(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from vad.scoring.writer import source_metadata

    key = ManifestKey("s3://b/cam/v.mp4", "conv_ae", "1", "len8")
    video = VideoRef(key.uri, "cam/v.mp4", "video", 100, 5.0, "cam", "2026-11-24")
    folder = tmp_path / "scores" / "date=2026-11-24" / "camera=cam"
    folder.mkdir(parents=True)
    table = pa.table({"x": [1, 2, 3]})
    pq.write_table(table.replace_schema_metadata(source_metadata(None, 100, 5.0)), folder / result_file_name(key.uri, "conv_ae", "1", "len8"))
    [(adopted, path, rows)] = adopt_finished(str(tmp_path), [video], lambda uri: key)
    assert adopted is video and rows == 3 and path.endswith(".parquet")
    changed = VideoRef(key.uri, "cam/v.mp4", "video", 101, 6.0, "cam", "2026-11-24")
    assert adopt_finished(str(tmp_path), [changed], lambda uri: key) == []
    newer_model = ManifestKey(key.uri, "conv_ae", "2", "len8")
    assert adopt_finished(str(tmp_path), [video], lambda uri: newer_model) == []


def test_error_rows_carry_their_time():
    row = error_row("u", "open", RuntimeError("boom"), permanent=True, size=3)
    assert row["error_class"] == "RuntimeError" and row["message"] == "boom" and row["permanent"]
    assert row["recorded_at"].tzinfo is dt.timezone.utc


@pytest.mark.parametrize("command", [["score", "--config", "job.yaml"], ["fuse", "--config", "job.yaml"], ["report"]])
def test_a_date_that_is_not_a_calendar_date_is_refused_before_any_work(command, capsys):
    """`--date` is checked when the command line is read (exit 2, one line naming it), not deep in a job or a query."""
    from vad.cli import main

    with pytest.raises(SystemExit) as stop:
        main([*command, "--date", "2026-13-40"])
    assert stop.value.code == 2 and "argument --date: '2026-13-40' is not a date (yyyy-mm-dd)" in capsys.readouterr().err


def test_a_mistyped_results_folder_or_work_folder_is_said_not_taken_for_an_empty_one(tmp_path, capsys):
    """`vad query` on a folder that does not exist says so (it used to print an empty table); `vad promote` with a
    work folder that holds no MLflow store says so instead of creating an empty store there."""
    from vad.cli import main

    assert main(["query", "--results", str(tmp_path / "typo"), "SELECT count(*) FROM scores"]) == 2
    assert f"no results folder at {tmp_path / 'typo'}" in capsys.readouterr().err
    assert main(["promote", "vad-conv-ae", "1", "--work-dir", str(tmp_path / "work")]) == 2
    assert "no MLflow store at" in capsys.readouterr().err and not (tmp_path / "work").exists()
    (tmp_path / "empty").mkdir()  # an existing results folder with nothing in it yet is an empty night
    assert main(["query", "--results", str(tmp_path / "empty"), "SELECT count(*) AS n FROM scores"]) == 0
    assert "0" in capsys.readouterr().out
    (tmp_path / "labels.json").write_text('{"cam01/v.mp4": [0, 1]}')  # a run id that scored nothing is named as such
    assert main(["evaluate", "--results", str(tmp_path / "empty"), "--labels", str(tmp_path / "labels.json"), "--run-id", "r0"]) == 2
    assert f"no scores of run r0 under {tmp_path / 'empty'}" in capsys.readouterr().err
