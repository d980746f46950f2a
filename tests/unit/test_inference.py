"""Inference settings of the scoring actors: precision, memory format, compilation (CPU here)."""

import pytest
import torch

from vad.models.backbones import build_backbone
from vad.models.inference import InferenceOptions, prepare
from vad.models.scorers import build_scorer


def test_auto_on_cpu_is_fp32_channels_last():
    options = InferenceOptions.resolve("cpu")
    assert (options.device, options.bf16, options.channels_last, options.compile) == ("cpu", False, True, False)
    assert not InferenceOptions.resolve("cpu", memory_format="contiguous").channels_last


def test_impossible_settings_are_refused():
    with pytest.raises(ValueError, match="bf16"):
        InferenceOptions.resolve("cpu", precision="bf16")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="no CUDA"):
            InferenceOptions.resolve("cuda")


SCORERS = {
    "conv_ae": ({"clip_len": 8, "widths": [16, 8, 4]}, (3, 8, 32, 48)),
    "st_ae": ({"clip_len": 10, "widths": [8, 4], "lstm": [4, 4, 4]}, (2, 10, 32, 48)),
    "pred": ({"widths": [8, 16, 32]}, (2, 8, 32, 48)),
    "vgg_ae": ({"width_divisor": 8}, (2, 4, 32, 48)),
}


@pytest.mark.parametrize("name", sorted(SCORERS))
def test_channels_last_scores_like_contiguous(name):
    kwargs, shape = SCORERS[name]
    torch.manual_seed(0)
    model = build_scorer(name, **kwargs).eval()
    clips = torch.rand(shape)
    with torch.inference_mode():
        expected = model.score(clips)
        fast, score = prepare(model, InferenceOptions.resolve("cpu", memory_format="channels_last"), "score")
        assert any(p.dim() >= 4 and not p.is_contiguous() for p in fast.parameters()), "no weight changed layout"
        got = score(clips)
    torch.testing.assert_close(got.score, expected.score, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(got.frame_scores, expected.frame_scores, rtol=1e-4, atol=1e-6)


def test_channels_last_extractor_features_match():
    torch.manual_seed(0)
    model = build_backbone("c3d").eval()
    clips = torch.rand(1, 16, 112, 112, 3) * 255
    with torch.inference_mode():
        expected = model(clips)
        _, extract = prepare(model, InferenceOptions.resolve("cpu"))
        torch.testing.assert_close(extract(clips), expected, rtol=1e-3, atol=1e-4)


def test_compiled_scoring_matches_eager():
    kwargs, shape = SCORERS["conv_ae"]
    torch.manual_seed(0)
    model = build_scorer("conv_ae", **kwargs).eval()
    clips = torch.rand(shape)
    with torch.inference_mode():
        expected = model.score(clips).score
        _, score = prepare(model, InferenceOptions.resolve("cpu", compile=True), "score")
        torch.testing.assert_close(score(clips).score, expected, rtol=1e-4, atol=1e-6)


def test_auto_precision_follows_each_models_record():
    """`precision: auto` on a GPU: bf16 for the models whose record prefers it, fp32 for I3D (slower in
    bf16 on an H200) and the object scorer (ONNX and OpenCV); fp32 on a CPU whatever the record."""
    from vad.models.backbones import backbone_meta
    from vad.models.inference import uses_bf16
    from vad.models.scorers import scorer_meta

    assert scorer_meta("conv_ae").precision == "bf16" and uses_bf16("auto", True, scorer_meta("conv_ae").precision)
    assert backbone_meta("i3d").precision == "fp32" and not uses_bf16("auto", True, backbone_meta("i3d").precision)
    assert not uses_bf16("auto", True, scorer_meta("objects").precision)
    assert not uses_bf16("auto", False, "bf16") and uses_bf16("bf16", True, "fp32") and not uses_bf16("fp32", True, "bf16")
