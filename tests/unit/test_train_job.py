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
