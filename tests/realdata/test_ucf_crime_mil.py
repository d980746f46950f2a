"""MIL ranker on the real UCF-Crime C3D features (smoke check: 10 videos only)."""

import numpy as np
import pytest
import torch

from vad.datasets.ped2 import data_dir
from vad.training.local import train_mil

pytestmark = pytest.mark.skipif(data_dir() is None, reason="shared data not found (set VAD_DATA)")


def test_mil_fits_the_released_features():
    from vad.datasets.ucf_crime import load_ucf_crime_samples

    videos = load_ucf_crime_samples()
    assert len(videos) == 10 and sum(v.is_anomalous for v in videos) == 8
    assert all(v.segments.shape == (32, 4096) for v in videos)
    anomalous = np.stack([v.segments for v in videos if v.is_anomalous])
    normal = np.stack([v.segments for v in videos if not v.is_anomalous])
    head, losses = train_mil(anomalous, normal, epochs=120, batch_pairs=8, lr=0.01)  # 8 pairs a step: the 8 anomalous bags
    assert np.mean(losses[-10:]) < 0.8 * np.mean(losses[:10])
    with torch.no_grad():
        top_anomalous = head(torch.from_numpy(anomalous)).max(dim=1).values
        top_normal = head(torch.from_numpy(normal)).max(dim=1).values
    assert top_anomalous.mean() > top_normal.mean()
