"""Pseudo-anomaly validation: what is injected, where, and that a real scorer is measured on it."""

import numpy as np
import pytest

from vad.evaluation.pseudo_anomalies import DEFAULT_KINDS, cut_clips, inject_pseudo_anomaly, pseudo_anomaly_report, speed_up


def _walkers(t=60, h=48, w=72, seed=0):
    """A textured static background with two slow dark walkers."""
    rng = np.random.default_rng(seed)
    background = rng.integers(120, 160, (h, w)).astype(np.uint8)
    frames = np.repeat(background[None], t, axis=0)
    for i in range(t):
        for row, col in ((30, 5 + i // 5), (36, 60 - i // 6)):
            frames[i, row : row + 8, col : col + 3] = 30
    return frames


@pytest.mark.parametrize("kind", ["fast", "object"])
def test_the_anomaly_fills_the_middle_third_and_nothing_else(kind):
    frames = _walkers()
    out, labels = inject_pseudo_anomaly(frames, kind, np.random.default_rng(1))
    assert out.shape == frames.shape and out.dtype == np.uint8
    assert labels.tolist() == [0] * 20 + [1] * 20 + [0] * 20
    changed = (out != frames).reshape(len(frames), -1).any(axis=1)
    assert not changed[labels == 0].any()
    assert changed[labels == 1].mean() > 0.9  # the object is visible in (nearly) every labelled frame
    assert np.array_equal(frames, _walkers())  # the input is not modified


def test_a_fast_object_moves_faster_than_the_walkers():
    frames = _walkers()
    out, labels = inject_pseudo_anomaly(frames, "fast", np.random.default_rng(2))
    columns = [np.flatnonzero((out[i] != frames[i]).any(axis=0)).mean() for i in np.flatnonzero(labels)]
    steps = np.abs(np.diff(columns))
    assert np.median(steps) >= 0.5  # walkers move 1/5 or 1/6 px per frame


def test_speedup_skips_frames_in_its_labelled_stretch_only():
    frames = np.arange(60, dtype=np.uint8)[:, None, None] * np.ones((1, 4, 4), dtype=np.uint8)  # frame i holds i
    out, labels = speed_up(frames, factor=3)
    shown = out[:, 0, 0].astype(int)
    assert len(out) == len(labels) == 60 - 2 * 6  # 6 fast frames stand for 18
    assert shown[labels == 1].tolist() == [20, 23, 26, 29, 32, 35]
    assert np.all(np.diff(shown[:20]) == 1) and np.all(np.diff(shown[26:]) == 1)
    assert shown[-1] == 59  # the tail is all there


def test_bad_requests_are_refused():
    with pytest.raises(ValueError, match="unknown pseudo-anomaly"):
        inject_pseudo_anomaly(_walkers(), "ghost", np.random.default_rng(0))
    with pytest.raises(ValueError, match="too short"):
        inject_pseudo_anomaly(_walkers(t=4), "fast", np.random.default_rng(0))


def test_clips_cover_every_frame_like_the_decoder():
    starts, clips = cut_clips(_walkers(t=25), 10)
    assert starts == [0, 10, 15] and clips.shape == (3, 10, 48, 72)
    starts, clips = cut_clips(_walkers(t=25), 10, stride=4)
    assert starts == [0, 4, 8, 12, 15] and np.array_equal(clips[1], _walkers(t=25)[4:14])


def test_report_of_a_real_scorer_on_injected_videos():
    import torch

    from vad.models.scorers import build_scorer
    from vad.training.local import fit

    videos = [_walkers(seed=s) for s in range(3)]
    torch.manual_seed(0)
    model = build_scorer("conv_ae", clip_len=10, widths=[16, 8, 8])
    _, train = cut_clips(videos[0], 10)
    fit(model, np.concatenate([train, cut_clips(videos[1], 10)[1]]), epochs=30, batch_size=4, lr=3e-3)
    report = pseudo_anomaly_report(model, videos[2:], clip_len=10)
    assert report["videos"] == len(DEFAULT_KINDS)
    assert report["frames"] == 60 + 48  # the "object" video keeps its length, the "speedup" one loses 12 frames
    assert report["auc_micro"] > 0.7  # unusual motion and a foreign object are reconstructed worse
