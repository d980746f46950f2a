"""patch_knn: its memory bank (pool, coreset, nearest neighbours), fitting, calibration, localisation
and checkpoints. The network here has seeded random weights (the pretrained one is tested on Ped2)."""

import numpy as np
import pytest
import torch

from vad.models.checkpoint import checkpoint_bytes, load_checkpoint
from vad.models.scorers import build_scorer, scorer_meta
from vad.models.memory import CandidatePool, NearestPatches, greedy_coreset, matmul_knn
from vad.training.local import fit

TINY = scorer_meta("patch_knn").tiny.hparams


def test_the_candidate_pool_stays_bounded_and_keeps_only_what_it_was_given():
    pool = CandidatePool(limit=500, seed=1)
    rows = torch.arange(10 * 300, dtype=torch.float32)[:, None].repeat(1, 4)
    for part in rows.split(300):
        pool.add(part)
        assert pool.size <= 1000
    kept = pool.take()
    assert kept.shape == (500, 4) and pool.seen == 3000
    assert len(set(kept[:, 0].tolist())) == 500 and set(kept[:, 0].tolist()) <= set(range(3000))
    assert kept[:, 0].max() > 2000  # late rows are not starved by early ones


def test_the_coreset_covers_every_cluster_where_a_random_sample_misses_the_small_ones():
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(6, 32, generator=g) * 10
    sizes = [2000, 5, 5, 5, 5, 5]
    x = torch.cat([c + 0.01 * torch.randn(n, 32, generator=g) for c, n in zip(centres, sizes)])
    cluster = torch.cat([torch.full((n,), i) for i, n in enumerate(sizes)])
    chosen = greedy_coreset(x, 6, seed=0, projection=16)
    assert set(cluster[chosen].tolist()) == set(range(6))
    random = torch.randperm(len(x), generator=g)[:6]
    assert len(set(cluster[random].tolist())) < 6


def test_faiss_and_the_gpu_path_give_the_exact_nearest_distances():
    g = torch.Generator().manual_seed(0)
    bank, queries = torch.randn(700, 24, generator=g), torch.randn(50, 24, generator=g)
    exact = torch.cdist(queries, bank).topk(3, dim=1, largest=False).values
    assert torch.allclose(NearestPatches(bank).distances(queries, 3), exact.mean(1), atol=1e-4)
    assert torch.allclose(matmul_knn(queries, bank, 3).sqrt(), exact, atol=1e-3)
    with pytest.raises(ValueError, match="memory bank is empty"):
        NearestPatches(torch.zeros(0, 24)).distances(queries, 1)


def _scene(rng, n: int, block: bool = False) -> np.ndarray:
    """Clips (n, 8, 32, 48): a grey blob drifting right; with `block`, a bright square in the lower right."""
    t = np.arange(8)[:, None, None]
    y, x = np.arange(32)[None, :, None], np.arange(48)[None, None, :]
    clips = []
    for _ in range(n):
        x0 = rng.uniform(4, 20)
        frames = 60 + 120 * np.exp(-((y - 12) ** 2 + (x - x0 - 2 * t) ** 2) / 30) + rng.normal(0, 3, (8, 32, 48))
        if block:
            frames[:, 20:30, 32:44] = 250
        clips.append(frames)
    return np.clip(np.stack(clips), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def fitted():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    model = build_scorer("patch_knn", **TINY)
    result = fit(model, _scene(rng, 24), val_clips=_scene(rng, 8), threshold_quantile=1.0)
    return model, result, rng


def test_fitting_builds_a_bank_and_calibrates_it_in_one_pass(fitted):
    model, result, _ = fitted
    assert len(result.history) == 1 and len(model.bank) == TINY["bank_size"]
    row = result.history[0]
    assert row["val/loss"] > 0 and row["train/loss"] >= 0
    assert model.position_mean.shape == (4, 6) and torch.isfinite(model.pixel_threshold)
    assert result.threshold == pytest.approx(float(result.val_scores.max()))


def test_an_unseen_object_scores_above_every_normal_clip_and_the_heat_map_finds_it(fitted):
    model, result, rng = fitted
    normal, odd = _scene(rng, 6), _scene(rng, 2, block=True)
    with torch.inference_mode():
        out_normal = model.score(torch.from_numpy(normal).float() / 255)
        out_odd = model.score(torch.from_numpy(odd).float() / 255)
    assert out_odd.score.min() > out_normal.score.max()
    assert out_odd.pixel_scores.shape == (2, 8, 32, 48) and out_odd.mask.dtype == torch.bool
    heat = out_odd.pixel_scores.mean(dim=(0, 1))
    y, x = np.unravel_index(int(heat.argmax()), heat.shape)
    assert 16 <= y and 28 <= x  # the square's quarter of the frame
    assert out_odd.mask[..., 20:30, 32:44].float().mean() > out_odd.mask[..., :16, :24].float().mean()


def test_the_checkpoint_holds_the_bank_not_the_network_and_scores_the_same(fitted):
    model, result, rng = fitted
    data = checkpoint_bytes(model, version="v1", threshold=result.threshold, decode={"clip_len": 8})
    assert len(data) < 4 * model.bank.numel() + 200_000  # the bank and calibration; no I3D weights
    loaded = load_checkpoint_bytes(data)
    clips = torch.from_numpy(_scene(rng, 3, block=True)).float() / 255
    assert torch.equal(loaded.bank, model.bank)
    assert torch.allclose(loaded.score(clips).score, model.score(clips).score)


def load_checkpoint_bytes(data: bytes):
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "m.pt"
        path.write_bytes(data)
        return load_checkpoint(str(path)).model


def test_a_clip_of_another_size_is_refused_with_the_reason(fitted):
    model, _, _ = fitted
    with pytest.raises(ValueError, match="calibrated on a \\(4, 6\\) patch grid"):
        model.score(torch.rand(1, 8, 64, 48))


def test_bad_settings_are_refused():
    for bad, match in (({"pooling": "mean"}, "pooling"), ({"calibration": "x"}, "calibration"), ({"layer": "Mixed_9"}, "layer"),
                       ({"clip_len": 4}, "at least 8 frames")):
        with pytest.raises(ValueError, match=match):
            build_scorer("patch_knn", **{**TINY, **bad})
