import numpy as np
import pytest
import torch

from vad.models.backbones import BACKBONES, backbone_meta, build_backbone, register
from vad.scoring.stages import ExtractFeatures


def test_registry():
    assert set(BACKBONES) == {"c3d", "i3d"}
    with pytest.raises(ValueError, match="already registered"):
        register(backbone_meta("c3d"))
    with pytest.raises(ValueError, match="unknown backbone"):
        build_backbone("resnet")


def test_c3d_loads_the_public_pickle_layout(tmp_path):
    random = build_backbone("c3d")
    assert random.pretrained is False
    layout = {k: torch.randn_like(v) for k, v in random.state_dict().items() if k != "mean"}
    assert layout["fc6.weight"].shape == (4096, 8192) and layout["fc8.weight"].shape == (487, 4096)
    loaded = build_backbone("c3d", state_dict=layout)
    assert loaded.pretrained and torch.equal(loaded.conv3a.weight, layout["conv3a.weight"])
    with pytest.raises(ValueError, match="c3d.pickle"):
        build_backbone("c3d", state_dict={"conv1.weight": layout["conv1.weight"]})
    path = tmp_path / "c3d.pickle"
    torch.save(layout, path)
    stage = ExtractFeatures(extractor="c3d", weights=str(path), device="cpu")
    batch = {"clip_index": np.arange(2), "frames": np.random.default_rng(0).integers(0, 255, (2, 16, 112, 112, 3), dtype=np.uint8)}
    out = stage(batch)
    assert "frames" not in out and out["features"].shape == (2, 4096)
    assert out["pretrained"].all() and (out["features"] >= 0).all()  # fc6 after ReLU


def test_i3d_random_init_is_flagged_and_grayscale_rejected():
    stage = ExtractFeatures(extractor="i3d", device="cpu")
    out = stage({"frames": np.zeros((1, 8, 64, 64, 3), dtype=np.uint8)})
    assert out["features"].shape == (1, 1024) and not out["pretrained"].any()
    with pytest.raises(ValueError, match="RGB"):
        stage({"frames": np.zeros((1, 8, 64, 64), dtype=np.uint8)})


def test_i3d_gives_the_patch_grid_of_an_intermediate_layer():
    torch.manual_seed(0)
    model = build_backbone("i3d")
    clips = torch.rand(2, 8, 64, 96, 3)
    with torch.inference_mode():
        grid = model.layer_output(clips, "Mixed_4f")
        assert grid.shape == (2, 832, 2, 4, 6)  # (T/4, H/16, W/16) patches of 832 channels
        assert torch.allclose(model.layer_output(clips, "Mixed_5c").mean(dim=(2, 3, 4)), model.features(clips))
    with pytest.raises(ValueError, match="unknown I3D layer"):
        model.layer_output(clips, "Mixed_9z")
