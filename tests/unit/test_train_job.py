"""Checks `vad train` makes before any cluster work, and how videos are split for validation."""

import pytest

from vad.config import TrainJobConfig
from vad.training.job import run_training
from vad.training.split import split_videos


def _cfg(tmp_path, name, **hparams):
    return TrainJobConfig.model_validate(
        {
            "source": {"uri": str(tmp_path / "nothing-here")},
            "output": {"checkpoint": str(tmp_path / "model.pt")},
            "model": {"name": name, "hparams": hparams},
            "mlflow": {"enabled": False},
            "work_dir": str(tmp_path),
        }
    )


def test_mil_without_weak_labels_is_refused_before_listing_videos(tmp_path):
    with pytest.raises(ValueError, match="set train.anomalous_regex"):
        run_training(_cfg(tmp_path, "mil"))


def test_bad_model_names_and_hparams_fail_before_listing_videos(tmp_path):
    with pytest.raises(ValueError, match="unknown scorer 'conv-ae'"):
        run_training(_cfg(tmp_path, "conv-ae"))
    with pytest.raises(TypeError, match="widthz"):
        run_training(_cfg(tmp_path, "conv_ae", widthz=[8, 8, 8]))


def test_validation_holds_out_whole_videos():
    videos = [f"v{i}" for i in range(10)]
    train, val = split_videos(videos, 0.25)
    assert val == ["v3", "v7"] and set(train) | set(val) == set(videos) and not set(train) & set(val)
    assert split_videos(videos, 0.0) == (videos, [])
    assert split_videos(["only"], 0.5) == (["only"], [])
    assert split_videos(["a", "b"], 0.1) == (["a"], ["b"])  # at least one held out when asked for


def test_a_scoring_job_refuses_a_checkpoint_of_another_scorer(tmp_path):
    """`scorer.name`, when given, must be the scorer the checkpoint holds (checked before listing)."""
    from vad.config import ScoreJobConfig
    from vad.models.checkpoint import decode_record, save_checkpoint
    from vad.models.scorers import build_scorer
    from vad.scoring.job import plan_run

    cfg = ScoreJobConfig.model_validate(
        {
            "source": {"uri": str(tmp_path / "nothing-here")},
            "output": {"uri": str(tmp_path / "results")},
            "scorer": {"name": "pred", "checkpoint": str(tmp_path / "model.pt")},
            "decode": {"clip_len": 8, "resize": [32, 32]},
            "mlflow": {"enabled": False},
            "work_dir": str(tmp_path),
        }
    )
    model = build_scorer("conv_ae", clip_len=8, widths=[8, 8, 4])
    save_checkpoint(cfg.scorer.checkpoint, model, version="1", threshold=0.1, decode=decode_record(cfg.decode))
    with pytest.raises(ValueError, match="scorer.name is 'pred' but checkpoint .* holds a 'conv_ae' model"):
        plan_run(cfg)
    with pytest.raises(FileNotFoundError, match="does not exist"):  # the name matches: on to listing
        plan_run(cfg.model_copy(update={"scorer": cfg.scorer.model_copy(update={"name": "conv_ae"})}))


def test_a_split_far_from_the_requested_fraction_is_called_out():
    from vad.training.split import split_warning

    train, val = split_videos(["a", "b"], 0.1)
    assert "held out 1 of 2 videos (50%)" in split_warning("normal videos", train, val, 0.1)
    train, val = split_videos(list("abcdefghij"), 0.1)
    assert split_warning("normal videos", train, val, 0.1) is None  # 1 of 10: as asked
    train, val = split_videos(["only"], 0.2)
    assert "leave none to hold out" in split_warning("normal videos", train, val, 0.2)
    assert split_warning("normal videos", ["a", "b"], [], 0.0) is None  # none asked for, none held out


def test_a_model_that_was_not_promoted_never_takes_the_champions_path():
    from vad.tracking.registry import Registration
    from vad.training.job import checkpoint_path

    promoted, held_back = Registration("vad-conv-ae", "3", True, 0.1), Registration("vad-conv-ae", "3", False, 0.1)
    assert checkpoint_path("s3://models/conv_ae/v1.pt", promoted) == "s3://models/conv_ae/v1.pt"
    assert checkpoint_path("s3://models/conv_ae/v1.pt", None) == "s3://models/conv_ae/v1.pt"  # no registry: as configured
    assert checkpoint_path("s3://models/conv_ae/v1.pt", held_back) == "s3://models/conv_ae/v1.v3.pt"
    assert checkpoint_path("/data/model", held_back) == "/data/model.v3"


def test_a_fleet_run_resumes_until_it_has_finished(tmp_path):
    from vad.training.fleet import FleetState

    path = tmp_path / "fleet" / "run.json"
    state = FleetState(path)
    state.record({"camera": "cam01", "status": "trained"})
    assert FleetState(path).rows == {"cam01": {"camera": "cam01", "status": "trained"}}  # killed here: picked up again
    state.finish()
    assert FleetState(path).rows == {}  # a finished run is not resumed: the same command trains anew


def test_a_camera_threshold_set_from_a_false_alarm_budget_holds_on_its_held_out_videos(tmp_path, caplog):
    """A camera's model fitted on synthetic normal footage with alerts.max_false_per_hour: its held-out normal
    videos, scored at the threshold it carries, raise no more events than the budget allows; the checkpoint
    records the budget and the held-out hours, and so little held-out footage is said plainly."""
    import io
    import logging

    import numpy as np
    import torch

    from vad.config import DecodeConfig, SourceConfig
    from vad.io.sources import list_videos
    from vad.models.scorers import build_scorer
    from vad.results.events import merge_flagged
    from vad.testing.synthetic import generate_dataset
    from vad.training.data import decode_clips
    from vad.training.fleet import train_camera
    from vad.training.local import score_clips

    generate_dataset(tmp_path / "footage", cameras=1, train_per_camera=4, test_per_camera=0, num_frames=100, seed=5)
    videos, _ = list_videos(SourceConfig(uri=str(tmp_path / "footage")))
    train_videos, held_out = videos[:2], videos[2:]
    cfg = TrainJobConfig.model_validate({
        "source": {"uri": str(tmp_path / "footage")}, "output": {"checkpoint": str(tmp_path / "{camera}.pt")},
        "model": {"name": "conv_ae", "hparams": {"widths": [8, 8, 4]}}, "train": {"epochs": 1, "batch_size": 8, "device": "cpu"},
        "decode": DecodeConfig(clip_len=8, stride=2, resize=(32, 40)).model_dump(), "mlflow": {"enabled": False},
        "alerts": {"max_false_per_hour": 2000.0, "merge_gap_s": 0.0},
    })
    with caplog.at_level(logging.WARNING, logger="vad.training.alerts"):
        row, trained = train_camera("cam01", train_videos, held_out, cfg, {"clip_len": 8, "widths": [8, 8, 4]}, threads=1)
    payload = torch.load(io.BytesIO(trained.checkpoint), weights_only=True)
    budget = payload["alert_budget"]
    meta: dict = {}
    clips = decode_clips(held_out, cfg, meta=meta)
    hours = sum(meta["end_time_s"][meta["video_uri"] == v].max() - meta["start_time_s"][meta["video_uri"] == v].min()
                for v in set(meta["video_uri"])) / 3600
    assert budget["max_false_per_hour"] == 2000.0 and budget["held_out_hours"] == pytest.approx(hours)
    assert payload["threshold"] == budget["threshold"] == row["threshold"] == trained.threshold
    model = build_scorer("conv_ae", clip_len=8, widths=[8, 8, 4])
    model.load_state_dict(payload["state_dict"])
    held_out_scores = score_clips(model, clips)
    # the quantile the same held-out scores give is recorded beside the budget's threshold, for comparison
    assert budget["quantile_threshold"] == pytest.approx(float(np.quantile(held_out_scores, 0.99)), rel=1e-4)
    flagged = held_out_scores > payload["threshold"]
    events = sum(len(merge_flagged(meta["start_time_s"][meta["video_uri"] == v], meta["end_time_s"][meta["video_uri"] == v],
                                   flagged[meta["video_uri"] == v], 0.0)) for v in set(meta["video_uri"]))
    assert events == budget["events"] <= 2000.0 * hours
    assert budget["events"] >= 1 and payload["threshold"] < np.max(score_clips(model, clips))  # ~4 events allowed in ~8 s: some are raised
    assert "only 0.00 hours of held-out normal footage" in caplog.text
    # the camera's task hands its warnings back (its own log stays on its Ray worker) and the driver says them again
    assert [w for w in row["warnings"] if "only 0.00 hours of held-out normal footage" in w]
    from vad.tracking.runs import NullTracker
    from vad.training.fleet import _finish_camera

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="vad.training.fleet"):
        _finish_camera({**row, "warnings": [*row["warnings"], "a plain message"]}, None, cfg, NullTracker())
    said = [r.getMessage() for r in caplog.records if r.name == "vad.training.fleet"]
    assert said[:-1] == [*row["warnings"], "camera cam01: a plain message"] and said[0].startswith("camera cam01: ")


def test_events_marked_normal_join_their_cameras_training_footage(tmp_path):
    """Feedback: an event of cam01 marked normal becomes a span of its video in cam01's training footage (its
    clips only); one marked anomalous, and other cameras' events, never do."""
    import datetime as dt

    import numpy as np
    import pyarrow as pa

    from vad.config import DecodeConfig, SourceConfig
    from vad.io.sources import list_videos
    from vad.io.storage import write_parquet_atomic, filesystem, parse_uri
    from vad.results.feedback import record_feedback
    from vad.results.schema import EVENTS_SCHEMA, SCORES_SCHEMA_VERSION
    from vad.testing.synthetic import generate_dataset
    from vad.training.feedback import feedback_footage
    from vad.training.data import decode_clips

    generate_dataset(tmp_path / "footage", cameras=2, train_per_camera=1, test_per_camera=0, num_frames=100, seed=2)
    videos, _ = list_videos(SourceConfig(uri=str(tmp_path / "footage")))
    results = tmp_path / "results"
    events = []
    for i, (video, (first, last)) in enumerate(zip([videos[0], videos[0], videos[1]], [(40, 55), (70, 80), (10, 30)])):
        events.append({"schema_version": SCORES_SCHEMA_VERSION, "run_id": "r", "event_id": f"e{i:015x}", "video_uri": video.uri,
                       "model_name": "m", "model_version": "1", "start_frame": first, "end_frame": last, "start_time_s": first / 25,
                       "end_time_s": last / 25, "clips": 1, "peak_score": 2.0, "peak_clip_id": "c", "peak_frame": first, "threshold": 1.0,
                       "reason": None, "scored_at": dt.datetime.now(dt.timezone.utc)})
    location = parse_uri(str(results)).join("events", "date=2026-11-24", "camera=cam01", "video-x.parquet")
    write_parquet_atomic(filesystem(location), location.path, pa.Table.from_pylist(events[:2], schema=EVENTS_SCHEMA))
    location = parse_uri(str(results)).join("events", "date=2026-11-24", "camera=cam02", "video-y.parquet")
    write_parquet_atomic(filesystem(location), location.path, pa.Table.from_pylist(events[2:], schema=EVENTS_SCHEMA))
    record_feedback(str(results), "e000000000000000", "normal", operator="ana")
    record_feedback(str(results), "e000000000000001", "anomaly", operator="ana")
    cfg = TrainJobConfig.model_validate({
        "source": {"uri": str(tmp_path / "footage")}, "output": {"checkpoint": str(tmp_path / "m.pt")}, "mlflow": {"enabled": False},
        "decode": DecodeConfig(clip_len=8, stride=4, resize=(32, 40)).model_dump(),
        "train": {"use_feedback": True, "feedback_results": str(results), "feedback_repeat": 1},
    })
    [span] = feedback_footage(cfg)
    assert len(feedback_footage(cfg.model_copy(update={"train": cfg.train.model_copy(update={"feedback_repeat": 3})}))) == 3
    by_kind = cfg.train.model_copy(update={"feedback_repeat": None})  # unset: by how the model learns
    assert len(feedback_footage(cfg.model_copy(update={"train": by_kind}))) == 4  # conv_ae, trained
    fitted = cfg.model_copy(update={"train": by_kind, "model": cfg.model.model_copy(update={"name": "objects"})})
    assert len(feedback_footage(fitted)) == 16
    assert (span.uri, span.camera, span.first_frame, span.last_frame) == (videos[0].uri, "cam01", 40, 55)
    meta: dict = {}
    clips = decode_clips([span], cfg, meta=meta)
    whole = decode_clips([videos[0]], cfg)
    assert len(clips) == 4 and len(whole) > 20  # the clips starting at 40, 44, 48, 52: the event's footage only
    assert np.array_equal(clips[0], whole[10])
    with pytest.raises(ValueError, match="use_feedback needs train.feedback_results"):
        TrainJobConfig.model_validate({"source": {"uri": "x"}, "output": {"checkpoint": "y"}, "train": {"use_feedback": True}})
