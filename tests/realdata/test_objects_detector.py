"""YOLOX-Nano's output decoded on a real Ped2 frame (development video 01, frame 101): the walkers
are found as people, and the cyclist as a bicycle under a person."""

import numpy as np
import pytest

from vad.datasets import data_dir

pytestmark = pytest.mark.skipif(data_dir() is None or data_dir("yolox_nano.onnx") is None, reason="Ped2 or yolox_nano.onnx not found")


def test_the_detector_finds_the_walkers_and_the_cyclist():
    from PIL import Image

    from vad.datasets.ped2 import load_ped2
    from vad.models.scorers.objects.classes import COCO_NAMES
    from vad.models.scorers.objects.detector import box_iou, load_detector

    frame = np.asarray(Image.open(load_ped2().test_dir / "01" / "100.jpg").convert("RGB"))
    boxes = load_detector(str(data_dir("yolox_nano.onnx") / "yolox_nano.onnx"))(frame, 0.3)
    labels = [COCO_NAMES[i] for i in boxes.classes.argmax(1)]
    people = boxes.xyxy[[name == "person" for name in labels]]
    bikes = boxes.xyxy[[name == "bicycle" for name in labels]]
    assert len(people) >= 8 and len(bikes) >= 1
    assert (boxes.xyxy[:, :2] >= -2).all() and (boxes.xyxy[:, 2] <= 362).all() and (boxes.xyxy[:, 3] <= 242).all()  # frame pixels
    heights = people[:, 3] - people[:, 1]
    assert 15 < np.median(heights) < 60  # Ped2's walkers are 20-50 px tall
    assert box_iou(bikes, people).max() > 0.3  # the rider sits on the bicycle
