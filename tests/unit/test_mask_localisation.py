"""vgg_ae's pixel masks find the anomalous object in the synthetic scene, whose renderer knows every
anomalous pixel (Ped2's pixel masks are not available here)."""

import numpy as np
import torch

from vad.evaluation.metrics import pixel_level_report
from vad.models.scorers import build_scorer
from vad.testing.synthetic import render_scene
from vad.training.local import fit


def test_vgg_ae_masks_cover_the_anomalous_object_far_above_chance():
    size = (48, 64)
    normal = np.concatenate([render_scene(i, 64, *size).frames.reshape(-1, 4, *size) for i in range(4)])
    scene = render_scene(50, 64, *size, anomalies=(("fast", 10), ("wrong_way", 30)))
    torch.manual_seed(0)
    model = build_scorer("vgg_ae", width_divisor=4, mask_percentile=98)
    fit(model, normal, epochs=6, batch_size=8, lr=2e-3)  # calibrates the pixel threshold on held-out clips
    frames = torch.from_numpy(scene.frames[scene.labels][:, None]).float() / 255
    with torch.inference_mode():
        masks = model.score(frames).mask[:, 0].numpy()
        errors = model.pixel_errors(frames)[:, 0].numpy()
    truth = scene.masks[scene.labels]
    report = pixel_level_report(masks, truth, pixel_scores=errors)
    chance_precision = truth.mean()  # a random mask's precision
    assert report["pixel_auc"] > 0.8, report
    assert report["pixel_precision"] > 4 * chance_precision, (report, chance_precision)
