"""Events: a video's flagged clips merged by time (gaps, overlaps, a video with none), their peaks and ids,
and the writer's events file, which a re-run replaces."""

import datetime as dt

import numpy as np
import pyarrow.parquet as pq
import pytest

from vad.config import DecodeConfig
from vad.results.events import event_id, events_table, merge_flagged
from vad.results.schema import EVENTS_SCHEMA
from vad.results.sql import run_query
from vad.results.tables import scores_table
from vad.scoring.writer import WriteScores, video_parts

URI = "/archive/cam01/2026-11-24/v.mp4"


def batch(flagged: list[bool], scores: list[float] | None = None, *, clip_s: float = 1.0, stride_s: float = 1.0, reasons=None) -> dict:
    """One video's scored clips: clip i covers [i * stride_s, i * stride_s + clip_s) seconds, 10 frames per second."""
    n = len(flagged)
    scores = scores or [2.0 if f else 0.5 for f in flagged]
    starts = np.arange(n) * stride_s
    frame_scores = np.zeros((n, 4), np.float32)
    frame_scores[:, 2] = scores  # each clip's peak frame is its 3rd
    return {
        "run_id": np.array(["r"] * n, dtype=object), "clip_id": np.array([f"c{i}" for i in range(n)], dtype=object),
        "video_uri": np.array([URI] * n, dtype=object), "clip_index": np.arange(n, dtype=np.int32),
        "start_frame": (starts * 10).astype(np.int64), "end_frame": ((starts + clip_s) * 10 - 1).astype(np.int64),
        "frame_step": np.full(n, int(clip_s * 10 / 4), np.int16), "start_time_s": starts, "end_time_s": starts + clip_s,
        "model_name": np.array(["m"] * n, dtype=object), "model_version": np.array(["1"] * n, dtype=object),
        "model_fallback": np.zeros(n, bool), "score": np.array(scores, np.float32), "threshold": np.ones(n, np.float32),
        "is_anomaly": np.array(flagged), "frame_scores": frame_scores,
        "reason": np.array(reasons or [f"clip {i}" for i in range(n)], dtype=object),
        "date": np.array(["2026-11-24"] * n, dtype=object), "camera": np.array(["cam01"] * n, dtype=object),
        "video_size": np.full(n, 10), "video_mtime": np.full(n, 1.0), "clips_in_video": np.full(n, n),
    }


def test_flagged_clips_merge_across_small_gaps_and_overlaps():
    start = np.array([0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 9.0])
    end = start + 1.0
    flagged = np.array([True, True, False, True, False, False, True, True])
    # clips 0-1 touch; clip 3 starts 1 s after clip 1 ends (gap 1 s): joins at merge_gap 1, not at 0.5
    assert merge_flagged(start, end, flagged, 1.0) == [[0, 1, 3], [6], [7]]
    assert merge_flagged(start, end, flagged, 0.5) == [[0, 1], [3], [6], [7]]
    assert merge_flagged(start, end, flagged, 2.0) == [[0, 1, 3, 6, 7]]
    overlapping = np.array([0.0, 0.5, 1.0])  # 1-s clips every 0.5 s: always one event
    assert merge_flagged(overlapping, overlapping + 1.0, np.array([True, False, True]), 0.0) == [[0, 2]]
    assert merge_flagged(start, end, np.zeros(8, bool), 1.0) == []


def test_an_event_has_its_span_peak_reason_and_a_stable_id():
    rows = batch([False, True, True, False, False, True], scores=[0.1, 3.0, 5.0, 0.2, 0.3, 4.0])
    table = events_table(scores_table(rows, dt.datetime(2026, 11, 25, tzinfo=dt.timezone.utc)), merge_gap_s=1.5)
    assert table.schema.equals(EVENTS_SCHEMA, check_metadata=False)
    first, second = table.to_pylist()
    assert (first["start_time_s"], first["end_time_s"], first["clips"]) == (1.0, 3.0, 2)
    assert (first["start_frame"], first["end_frame"]) == (10, 29)
    assert (first["peak_score"], first["peak_clip_id"], first["reason"]) == (5.0, "c2", "clip 2")
    assert first["peak_frame"] == 20 + 2 * 2  # clip 2's 3rd frame, frame_step 2
    assert (second["clips"], second["peak_clip_id"]) == (1, "c5")
    assert first["event_id"] == event_id(URI, "m", "1", "c1") != event_id(URI, "m", "2", "c1")  # a new model version: new ids
    again = events_table(scores_table(rows, dt.datetime(2026, 11, 26, tzinfo=dt.timezone.utc)), merge_gap_s=1.5)
    assert again["event_id"].to_pylist() == table["event_id"].to_pylist()
    none = events_table(scores_table(batch([False, False]), dt.datetime(2026, 11, 25, tzinfo=dt.timezone.utc)), merge_gap_s=1.5)
    assert none.num_rows == 0 and none.schema.equals(EVENTS_SCHEMA)


def test_the_writer_writes_the_events_beside_the_scores_and_a_re_run_replaces_them(tmp_path):
    now = dt.datetime.now(dt.timezone.utc)
    writer = WriteScores(output_uri=str(tmp_path), storage=None, decode=DecodeConfig(clip_len=4, stride=4), merge_gap_s=0.5)
    [written] = writer.add(video_parts(batch([True, True, False, False, True]), now))
    assert written["events"] == 2 and written["anomalies"] == 3
    events = pq.read_table(written["path"].replace("/scores/", "/events/"))
    assert events["clips"].to_pylist() == [2, 1]
    _, rows = run_query(str(tmp_path), "SELECT camera, count(*) FROM events GROUP BY camera")
    assert rows == [("cam01", 2)]
    # the same video scored again with nothing flagged (say, a new threshold): its events are gone, not kept
    [rewritten] = writer.add(video_parts(batch([False] * 5), now))
    assert rewritten["events"] == 0
    _, rows = run_query(str(tmp_path), "SELECT count(*) FROM events")
    assert rows == [(0,)]


def test_the_vectorised_count_agrees_with_the_merge():
    from vad.results.events import count_events

    rng = np.random.default_rng(0)
    for _ in range(200):
        n = int(rng.integers(1, 30))
        start = np.sort(rng.uniform(0, 60, n))
        end = start + rng.uniform(0.5, 3.0, n)
        flagged = rng.random(n) < 0.4
        gap = float(rng.choice([0.0, 1.0, 2.5]))
        assert count_events(flagged, start, end, gap) == len(merge_flagged(start, end, flagged, gap))


def test_the_budget_threshold_is_lowered_until_one_more_step_would_break_the_budget():
    from vad.results.events import budget_threshold

    rng = np.random.default_rng(1)
    # two hours of held-out normal footage: two videos of 1-s clips every second, noise scores, 5 bursts each
    video = np.repeat(["a", "b"], 3600)
    start = np.tile(np.arange(3600.0), 2)
    scores = rng.normal(0.0, 1.0, 7200)
    for burst in rng.choice(7190, 10, replace=False):
        scores[burst : burst + 5] += 6.0
    budget = budget_threshold(scores, video, start, start + 1.0, max_false_per_hour=1.0, merge_gap_s=2.0, candidates=10_000)
    assert budget.held_out_hours == pytest.approx(2.0) and budget.events <= 2 and budget.events_per_hour <= 1.0
    flagged = scores > budget.threshold
    counted = sum(len(merge_flagged(start[video == v], start[video == v] + 1.0, flagged[video == v], 2.0)) for v in ("a", "b"))
    assert counted == budget.events
    lower = np.max(scores[scores < budget.threshold])  # the next lower candidate (every score is one here) breaks the budget
    below = scores > lower
    assert sum(len(merge_flagged(start[video == v], start[video == v] + 1.0, below[video == v], 2.0)) for v in ("a", "b")) > 2
    # flagging everything would also fit (one long event per video: 2 in 2 hours), but is not where lowering stops
    assert np.count_nonzero(scores > np.min(scores)) == scores.size - 1 and budget.threshold > np.min(scores)
    looser = budget_threshold(scores, video, start, start + 1.0, max_false_per_hour=20.0, merge_gap_s=2.0)
    assert looser.threshold < budget.threshold and looser.events <= 40


def scored_video(root, flagged: list[bool], version: str = "1") -> list[str]:
    """The writer's files for one video scored by model m (`version`); returns its event ids."""
    now = dt.datetime.now(dt.timezone.utc)
    rows = batch(flagged)
    rows["model_version"] = np.array([version] * len(flagged), dtype=object)
    writer = WriteScores(output_uri=str(root), storage=None, decode=DecodeConfig(clip_len=4, stride=4), merge_gap_s=0.5)
    [written] = writer.add(video_parts(rows, now))
    return pq.read_table(written["path"].replace("/scores/", "/events/"))["event_id"].to_pylist()


def test_an_answer_is_one_row_however_often_it_is_given_and_the_latest_counts(tmp_path):
    from vad.results.feedback import latest_answers, record_feedback

    first, second = scored_video(tmp_path, [True, False, False, True, False])
    row = record_feedback(str(tmp_path), first, "normal", operator="ana", note="a cleaner's cart")
    assert (row["camera"], row["video_uri"], row["start_time_s"], row["end_time_s"]) == ("cam01", URI, 0.0, 1.0)
    record_feedback(str(tmp_path), first, "normal", operator="ana", note="a cleaner's cart")  # the same answer again
    record_feedback(str(tmp_path), second, "anomaly", operator="ben")
    _, rows = run_query(str(tmp_path), "SELECT event_id, answer, operator, note FROM feedback ORDER BY operator")
    assert rows == [(first, "normal", "ana", "a cleaner's cart"), (second, "anomaly", "ben", None)]
    record_feedback(str(tmp_path), first, "anomaly", operator="ben")  # a second opinion, later: it counts
    answers = latest_answers(str(tmp_path))
    assert {e: a["answer"] for e, a in answers.items()} == {first: "anomaly", second: "anomaly"}


def test_a_bad_answer_gets_one_line_and_changes_nothing(tmp_path, capsys):
    from vad.cli import main

    [old] = scored_video(tmp_path, [True, False, False, False, False], version="1")
    [new] = scored_video(tmp_path, [True, False, False, False, False], version="2")  # the video scored again by a newer version
    for event, why in (("e0123456789abcde", "no event e0123456789abcde"), ("'; DROP", "is not an event id"),
                       (old, "since scored by version 2")):
        assert main(["feedback", event, "--normal", "--results", str(tmp_path)]) == 2
        err = capsys.readouterr().err
        assert why in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "feedback").exists()
    assert main(["feedback", new, "--anomaly", "--operator", "ana", "--results", str(tmp_path)]) == 0
    assert capsys.readouterr().out.startswith(f"{new}: anomaly (cam01")
    assert len(list((tmp_path / "feedback").iterdir())) == 1


def test_event_metrics_against_frame_labels():
    from vad.evaluation.metrics import event_report, segments

    y = np.zeros(100, int)
    y[20:30] = 1
    y[60:70] = 1
    y[90:95] = 1
    assert segments(y) == [(20, 29), (60, 69), (90, 94)]
    # one event early into the first segment (starts 5 frames before), one 4 frames late into the second,
    # the third segment missed, one false event in normal footage
    events = [(15, 25), (64, 72), (40, 45)]
    report = event_report([(y, events, 0.5)])
    assert (report["segments"], report["segments_hit"], report["event_recall"]) == (3, 2, pytest.approx(2 / 3))
    assert report["false_events"] == 1 and report["false_events_per_hour"] == pytest.approx(1 / (75 * 0.5 / 3600))
    assert report["mean_delay_s"] == pytest.approx((0 + 4 * 0.5) / 2)
    quiet = event_report([(np.zeros(10, int), [], 0.1)])
    assert quiet["segments"] == 0 and quiet["false_events"] == 0 and quiet["false_events_per_hour"] == 0.0


def test_a_dismissed_clip_sets_a_floor_under_the_threshold():
    """With footage operators dismissed, the threshold is at least just above its highest score (in float32, as rows
    compare), and left alone when the dismissed clips already score under it."""
    import numpy as np

    from vad.training.alerts import feedback_floor

    assert feedback_floor(1.0, np.zeros(0), "cam") == (1.0, None)
    assert feedback_floor(1.0, np.array([0.5, 0.8]), "cam") == (1.0, 0.8 * (1 + 1e-5) + 1e-9)
    threshold, floor = feedback_floor(1.0, np.array([1.2345678, 0.3], dtype=np.float32), "cam")
    assert threshold == floor > 1.2345678 and not np.float32(1.2345678) > np.float32(threshold)
    assert np.float32(1.24) > np.float32(threshold)  # anything scoring clearly higher is still raised
