"""Checks `vad train` makes before any cluster work, and how videos are split for validation."""

import pytest

from vad.config import TrainJobConfig
from vad.training.clips import split_videos
from vad.training.job import run_training


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
