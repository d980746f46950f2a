"""Shapes, losses and input checks of every scorer; each must learn on a toy problem."""

import numpy as np
import pytest
import torch

from vad.models.registry import LearningType
from vad.models.scorers import SCORERS, build_scorer, register, scorer_meta
from vad.models.scorers.base import frame_score_from_errors
from vad.models.scorers.mil.loss import mil_ranking_loss
from vad.models.scorers.mil.model import MILHead, MILScorer, segment_features
from vad.models.scorers.pred.loss import gradient_loss, psnr
from vad.training.local import train_mil

# Every registered scorer, with the tiny configuration its record carries.
CASES = {name: (scorer_meta(name).tiny.hparams, scorer_meta(name).tiny.input_shape) for name in SCORERS}
# not mil (weakly labelled bags), not the fitted ones (a memory bank: no gradient steps)
TRAINED_ON_NORMAL_CLIPS = [name for name in SCORERS if scorer_meta(name).learning_type is LearningType.TRAINED]


def ready(name: str, model, shape: tuple):
    """A fitted scorer needs its fit (on random clips here) before it can score."""
    if scorer_meta(name).learning_type is LearningType.FITTED:
        from vad.training.local import fit

        fit(model, (np.random.default_rng(0).random((6, *shape[1:])) * 255).astype(np.uint8), val_fraction=0.34)
    return model


def test_the_registry_holds_the_shipped_scorers_and_refuses_duplicates():
    assert {"conv_ae", "pred", "st_ae", "vgg_ae", "mil", "patch_knn"} <= set(SCORERS)
    assert "mil" not in TRAINED_ON_NORMAL_CLIPS and "conv_ae" in TRAINED_ON_NORMAL_CLIPS and "patch_knn" not in TRAINED_ON_NORMAL_CLIPS
    with pytest.raises(ValueError, match="already registered"):
        register(scorer_meta("conv_ae"))
    with pytest.raises(ValueError, match="unknown scorer 'nope'"):
        build_scorer("nope")


def test_a_builder_error_is_not_reported_as_an_unknown_scorer():
    with pytest.raises(TypeError, match="widthz"):
        build_scorer("conv_ae", widthz=[1, 2, 3])


@pytest.mark.parametrize("name", sorted(SCORERS))
def test_the_record_matches_the_model(name):
    meta = scorer_meta(name)
    model = ready(name, build_scorer(name, **meta.tiny.hparams), meta.tiny.input_shape)
    assert model.name == name and model.meta is meta
    assert len(meta.tiny.input_shape) == (4 if meta.grayscale else 5)
    assert meta.tiny.input_shape[2] % meta.size_multiple == 0 and meta.tiny.input_shape[3] % meta.size_multiple == 0
    out = model.eval().score(torch.rand(meta.tiny.input_shape))
    assert (out.mask is not None) == meta.localises


@pytest.mark.parametrize("name", sorted(CASES))
def test_score_output_shapes_and_rebuild(name):
    hparams, shape = CASES[name]
    torch.manual_seed(0)
    model = ready(name, build_scorer(name, **hparams), shape).eval()
    clips = torch.rand(shape)
    out = model.score(clips)
    assert out.score.shape == (shape[0],)
    assert out.frame_scores.shape == shape[:2]
    assert torch.isfinite(out.frame_scores).all()
    twin = build_scorer(name, **model.hparams()).eval()
    twin.load_state_dict(model.state_dict())
    assert torch.allclose(twin.score(clips).score, out.score)


@pytest.mark.parametrize("name", TRAINED_ON_NORMAL_CLIPS)
def test_training_reduces_loss(name):
    hparams, shape = CASES[name]
    torch.manual_seed(0)
    model = build_scorer(name, **hparams)
    # A smooth moving blob: learnable structure, not noise.
    t = torch.arange(shape[1]).float()[:, None, None]
    y = torch.arange(shape[2]).float()[None, :, None]
    x = torch.arange(shape[3]).float()[None, None, :]
    clips = torch.exp(-((y - 12) ** 2 + (x - 8 - 2 * t) ** 2) / 30).expand(shape).contiguous()
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        loss = model.training_loss(clips)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]


def test_input_checks():
    with pytest.raises(ValueError, match="longer than 3"):
        build_scorer("pred").score(torch.rand(1, 3, 32, 32))
    with pytest.raises(ValueError, match="divisible by 4"):
        build_scorer("st_ae").score(torch.rand(1, 10, 30, 32))
    with pytest.raises(ValueError, match="mask_mode"):
        build_scorer("vgg_ae", mask_mode="sometimes")


def test_pred_losses():
    a = torch.zeros(1, 1, 8, 8)
    assert psnr(a, a + 0.1).item() == pytest.approx(20.0, abs=1e-4)
    edge = torch.zeros(1, 1, 8, 8)
    edge[..., 4:] = 1
    assert gradient_loss(edge, edge).item() == 0 and gradient_loss(a, edge).item() > 0


def test_vgg_masks_and_torchvision_weights():
    model = build_scorer("vgg_ae").eval()
    # A torchvision-layout state dict: `features.N.*` plus classifier keys that must be ignored.
    source = {f"features.{k}": torch.randn_like(v) for k, v in model.features.state_dict().items()}
    source["features.17.weight"] = torch.randn(512, 256, 3, 3)  # conv4_1: beyond the encoder
    source["classifier.0.weight"] = torch.randn(4096, 25088)
    model.load_vgg16(source)
    assert torch.equal(model.features[0].weight, source["features.0.weight"])
    with pytest.raises(ValueError, match="not a torchvision VGG16"):
        model.load_vgg16({"features.0.weight": source["features.0.weight"]})
    small = build_scorer("vgg_ae", width_divisor=8, mask_percentile=95).eval()
    clips = torch.rand(2, 2, 32, 32)
    with torch.inference_mode():
        assert small.score(clips).mask.float().mean().item() == pytest.approx(0.05, abs=0.01)  # per-frame fallback
        small.calibrate(clips)
        out = small.score(clips)
    assert out.mask.shape == clips.shape and out.mask.dtype == torch.bool
    assert 0.03 < out.mask.float().mean().item() < 0.07


def test_mil_loss_terms():
    anomalous = torch.tensor([[0.0, 0.9, 0.0]])
    normal = torch.tensor([[0.1, 0.2, 0.1]])
    hinge = 1 - 0.9 + 0.2
    expected = hinge + 8e-5 * (0.81 + 0.81) + 8e-5 * 0.9
    assert mil_ranking_loss(anomalous, normal).item() == pytest.approx(expected, rel=1e-5)
    assert mil_ranking_loss(torch.tensor([[2.0, 2.0]]), torch.tensor([[0.0, 0.0]]), 0, 0).item() == 0


def test_mil_head_and_segments():
    head = MILHead(feature_dim=1024)
    assert [m.out_features for m in head.net if isinstance(m, torch.nn.Linear)] == [512, 32, 1]
    assert [m.p for m in head.net if isinstance(m, torch.nn.Dropout)] == [0.6, 0.6]
    feats = np.arange(10 * 4, dtype=np.float32).reshape(10, 4) + 1
    seg = segment_features(feats, 32)
    assert seg.shape == (32, 4) and np.allclose(np.linalg.norm(seg, axis=1), 1)
    seg = segment_features(np.eye(64, dtype=np.float32), 32)
    assert np.allclose(seg[0], np.r_[[1, 1], np.zeros(62)] / np.sqrt(2))


def test_mil_learns_to_rank_bags():
    rng = np.random.default_rng(0)
    normal = rng.normal(0, 1, (20, 32, 16)).astype(np.float32)
    anomalous = rng.normal(0, 1, (20, 32, 16)).astype(np.float32)
    anomalous[:, 10:14, 0] += 4  # a few anomalous segments per positive bag
    head, losses = train_mil(anomalous, normal, epochs=300, batch_pairs=10, lr=0.05)
    assert np.mean(losses[-20:]) < np.mean(losses[:20])
    with torch.no_grad():
        scores = head(torch.from_numpy(anomalous)).numpy()
    assert scores[:, 10:14].mean() > scores[:, :10].mean() + 0.1


def test_mil_scorer_is_the_trained_head_on_normalised_backbone_features():
    from vad.models.backbones import build_backbone

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    normal = rng.normal(0, 1, (6, 32, 1024)).astype(np.float32)
    anomalous = rng.normal(0, 1, (6, 32, 1024)).astype(np.float32)
    head, _ = train_mil(anomalous, normal, epochs=20, batch_pairs=6, lr=0.05)
    backbone = build_backbone("i3d")
    scorer = MILScorer.from_parts("i3d", backbone, head)
    clips = torch.rand(3, 16, 32, 32, 3)
    with torch.inference_mode():
        out = scorer.score(clips)
        expected = head(torch.nn.functional.normalize(backbone.features(clips), dim=1))
    assert torch.allclose(out.score, expected, atol=1e-6)
    assert torch.equal(out.frame_scores, out.score[:, None].expand(-1, 16))
    assert scorer.hparams() == {"extractor": "i3d", "dropout": 0.6, "pretrained_backbone": False}
    with pytest.raises(ValueError, match="1024-d features, c3d gives 4096-d"):
        MILScorer.from_parts("c3d", build_backbone("c3d"), head)
    with pytest.raises(ValueError, match="grayscale: false"):
        scorer.score(torch.rand(1, 16, 32, 32))
    assert not hasattr(scorer, "training_loss")  # weakly supervised: it ranks bags, it has no loss on normal clips


def test_c3d_mil_scorer_feeds_the_backbone_0_255():
    torch.manual_seed(0)
    scorer = build_scorer("mil", extractor="c3d").eval()
    clips = torch.rand(1, 16, 112, 112, 3)
    with torch.inference_mode():
        features = scorer.clip_features(clips)
        assert torch.allclose(features, scorer.backbone(clips * 255.0))


def test_frame_score_from_errors_whole_frame_and_worst_window():
    errors = torch.zeros(2, 3, 16, 24)
    errors[0, 1, 4:8, 4:8] = 1.0  # a small object in one frame
    whole = frame_score_from_errors(errors)
    assert whole.shape == (2, 3) and whole[0, 1].item() == pytest.approx(16 / (16 * 24))
    window = frame_score_from_errors(errors, patch=4)
    assert window.shape == (2, 3) and window[0, 1].item() == 1.0 and window[1].abs().sum() == 0
    with pytest.raises(ValueError, match="larger than the 16x24 frame"):
        frame_score_from_errors(errors, patch=20)


@pytest.mark.parametrize("name", TRAINED_ON_NORMAL_CLIPS)
def test_score_patch_is_kept_in_hparams_and_changes_frame_scores(name):
    hparams, shape = CASES[name]
    torch.manual_seed(0)
    whole = build_scorer(name, **hparams).eval()
    window = build_scorer(name, **{**hparams, "score_patch": 8}).eval()
    window.load_state_dict(whole.state_dict())
    assert window.hparams()["score_patch"] == 8
    clips = torch.rand(shape)
    with torch.inference_mode():
        a, b = whole.score(clips).frame_scores, window.score(clips).frame_scores
    assert a.shape == b.shape
    assert (b >= a - 1e-4).all()  # the worst window's error >= the frame's mean error (pred: -PSNR of it)
    assert not torch.allclose(a, b)


@pytest.mark.parametrize("name", sorted(SCORERS))
def test_every_scorer_implements_the_learner_protocol_of_its_kind(name):
    """The record's LearningType names the protocol `vad.training` hands the model to; the model implements
    each of that protocol's methods itself (none left to the protocol's NotImplementedError)."""
    from vad.models.scorers import FittedScorer, TrainedScorer, WeaklySupervisedScorer

    protocols = {
        LearningType.TRAINED: (TrainedScorer, ("training_loss",)),
        LearningType.FITTED: (FittedScorer, ("fit_rows", "fit", "calibration_values", "calibrate_values")),
        LearningType.WEAKLY_SUPERVISED: (WeaklySupervisedScorer, ("clip_features", "head_for", "ranking_loss", "with_head")),
    }
    meta = scorer_meta(name)
    protocol, methods = protocols[meta.learning_type]
    model = build_scorer(name, **meta.tiny.hparams)
    assert isinstance(model, protocol)
    assert [m for m in methods if getattr(type(model), m) is getattr(protocol, m)] == []
    others = [p for p, _ in protocols.values() if p is not protocol]
    assert not any(isinstance(model, p) for p in others)


def test_the_one_calibration_step_gives_a_quantile_or_a_budget_threshold():
    from vad.config import TrainAlertsConfig
    from vad.training.alerts import settle

    rng = np.random.default_rng(0)
    scores = rng.random(200)
    frames = np.repeat(scores[:, None], 4, axis=1)
    plain = settle(scores, frames, quantile=0.9)
    assert plain.threshold == pytest.approx(np.quantile(scores, 0.9)) and plain.budget is None
    assert plain.calibration.frames == 800 and plain.calibration.source == "held-out normal clips"
    meta = {"video_uri": np.array(["v"] * 200), "start_time_s": np.arange(200.0), "end_time_s": np.arange(200.0) + 1}
    budget = settle(scores, frames, quantile=0.9, alerts=TrainAlertsConfig(max_false_per_hour=36.0, merge_gap_s=0.0), meta=meta)
    assert budget.budget is not None and budget.threshold == budget.budget.threshold and budget.budget.events <= 2  # 36/h in 200 s
    assert budget.budget.quantile_threshold == pytest.approx(plain.threshold)
    training = settle(scores, frames, quantile=0.9, alerts=TrainAlertsConfig(max_false_per_hour=36.0), meta=meta, held_out=False)
    assert training.budget is None and training.calibration.source == "training clips (none held out)"


def test_a_registered_models_name_leads_back_to_its_scorer_and_its_papers_normalisation():
    """Scores name a registered model (vad-conv-ae, a fleet camera's vad-conv-ae.cam01), not its scorer: `vad evaluate`
    still finds the scorer's paper's per-video normalisation; a name of the user's choosing falls back to min-max."""
    from vad.evaluation.evaluate import paper_normalisation
    from vad.tracking.registry import scorer_of

    assert [scorer_of(n) for n in ("conv_ae", "vad-conv-ae", "vad-conv-ae.cam01", "vad-patch-knn.lobby.east", "site-model")] == [
        "conv_ae", "conv_ae", "conv_ae", "patch_knn", None]
    assert scorer_meta("conv_ae").evaluation_normalisation == "regularity"  # what the names below must reach
    assert [paper_normalisation(n) for n in ("conv_ae", "vad-conv-ae.cam01", "vad-st-ae", "vad-pred", "site-model")] == [
        "regularity", "regularity", "regularity", "minmax", "minmax"]
