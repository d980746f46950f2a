"""Objects in a frame: a COCO detector (YOLOX-Nano as ONNX, run by onnxruntime) and moving-region
boxes (frame difference), which need no weights and catch what COCO has no class for (carts, thrown
objects, anything on a camera where the detector's classes do not fit).

The detector's weights are the user's file (a path or `s3://` uri, `hparams.detector`); nothing is
downloaded. A file that is missing, not ONNX, or not YOLOX-shaped fails with one line naming it.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)

COCO_CLASSES = 80
INPUT_SIDE = 416  # YOLOX-Nano's input: the frame letterboxed into 416 x 416
STRIDES = (8, 16, 32)
PAD_VALUE = 114.0


class DetectorError(ValueError):
    """The detector's weights cannot be used; the message names the file."""


@dataclass
class Boxes:
    """Boxes of one frame: xyxy (N, 4) float32 in frame pixels, score (N,), class probabilities
    (N, 80) (zeros for a moving region: no class known), source (N,) 0 = detector, 1 = moving region."""

    xyxy: np.ndarray
    score: np.ndarray
    classes: np.ndarray
    source: np.ndarray

    @staticmethod
    def empty() -> Boxes:
        return Boxes(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, COCO_CLASSES), np.float32), np.zeros(0, np.int8))

    def __len__(self) -> int:
        return len(self.xyxy)

    def take(self, keep) -> Boxes:
        return Boxes(self.xyxy[keep], self.score[keep], self.classes[keep], self.source[keep])

    @staticmethod
    def concat(parts: list[Boxes]) -> Boxes:
        parts = [p for p in parts if len(p)]
        if not parts:
            return Boxes.empty()
        return Boxes(*(np.concatenate([getattr(p, f) for p in parts]) for f in ("xyxy", "score", "classes", "source")))


@functools.lru_cache(maxsize=2)
def anchor_grid(side: int = INPUT_SIDE) -> tuple[np.ndarray, np.ndarray]:
    """(cells (N, 2) x, y of each anchor point, strides (N,)) in the output's order: 52², 26², 13².
    Made once per process (every decoded frame needs it); callers must not modify the arrays."""
    cells, strides = [], []
    for stride in STRIDES:
        n = side // stride
        ys, xs = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
        cells.append(np.stack([xs.ravel(), ys.ravel()], 1))
        strides.append(np.full(n * n, stride))
    return np.concatenate(cells).astype(np.float32), np.concatenate(strides).astype(np.float32)


def letterbox(frame_bgr: np.ndarray, side: int = INPUT_SIDE) -> tuple[np.ndarray, float]:
    """A (H, W, 3) uint8 BGR frame resized, aspect kept, longer side `side`, padded with 114 at the
    bottom and right: (1, 3, side, side) float32 0-255 and the resize ratio."""
    import cv2

    h, w = frame_bgr.shape[:2]
    ratio = min(side / h, side / w)
    resized = cv2.resize(frame_bgr, (int(round(w * ratio)), int(round(h * ratio))), interpolation=cv2.INTER_LINEAR)
    canvas = np.full((side, side, 3), PAD_VALUE, np.float32)
    canvas[: resized.shape[0], : resized.shape[1]] = resized
    return np.ascontiguousarray(canvas.transpose(2, 0, 1)[None]), ratio


def decode_output(raw: np.ndarray, ratio: float, score_threshold: float, nms_iou: float = 0.45) -> Boxes:
    """YOLOX's raw output (3549, 85) -> boxes in frame pixels after a score threshold and class-aware NMS."""
    cells, strides = anchor_grid()
    centre = (raw[:, :2] + cells) * strides[:, None]
    size = np.exp(np.clip(raw[:, 2:4], -10, 10)) * strides[:, None]
    classes = raw[:, 5:] * raw[:, 4:5]  # objectness x class probability
    best = classes.max(1)
    keep = best >= score_threshold
    if not keep.any():
        return Boxes.empty()
    xyxy = np.concatenate([centre - size / 2, centre + size / 2], 1)[keep] / ratio
    classes, best = classes[keep], best[keep]
    chosen = nms(xyxy, best, classes.argmax(1), nms_iou)
    return Boxes(xyxy[chosen].astype(np.float32), best[chosen].astype(np.float32), classes[chosen].astype(np.float32), np.zeros(len(chosen), np.int8))


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of xyxy boxes (N, 4) and (M, 4) -> (N, M)."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(2)
    area_a = np.clip(a[:, 2:] - a[:, :2], 0, None).prod(1)
    area_b = np.clip(b[:, 2:] - b[:, :2], 0, None).prod(1)
    return inter / np.maximum(area_a[:, None] + area_b[None] - inter, 1e-9)


def nms(xyxy: np.ndarray, scores: np.ndarray, labels: np.ndarray, iou: float) -> np.ndarray:
    """Indices kept by greedy non-maximum suppression within each class, best first."""
    order = np.argsort(-scores, kind="stable")
    kept: list[int] = []
    suppressed = np.zeros(len(order), bool)
    overlaps = box_iou(xyxy[order], xyxy[order])
    same = labels[order][:, None] == labels[order][None, :]
    for i in range(len(order)):
        if suppressed[i]:
            continue
        kept.append(int(order[i]))
        suppressed |= (overlaps[i] > iou) & same[i]
    return np.array(kept, dtype=np.int64)


class Detector:
    """YOLOX-Nano on single frames. `weights`: the ONNX file's bytes; `name`: where they came from
    (for messages). onnxruntime's CUDA provider is used where it is installed and a GPU is present."""

    def __init__(self, weights: bytes, name: str, *, threads: int = 1, use_gpu: bool = False):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = max(1, threads)
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        providers = ["CPUExecutionProvider"]
        if use_gpu and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        try:
            self.session = ort.InferenceSession(weights, sess_options=options, providers=providers)
        except Exception as exc:
            raise DetectorError(f"detector weights {name}: not a readable ONNX model ({type(exc).__name__}: {str(exc).splitlines()[0][:160]})") from None
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        in_shape = list(inputs[0].shape) if len(inputs) == 1 else None
        out_shape = list(outputs[0].shape) if len(outputs) == 1 else None
        expected_anchors = len(anchor_grid()[0])
        if in_shape is None or in_shape[1:] != [3, INPUT_SIDE, INPUT_SIDE] or out_shape is None or out_shape[1:] != [expected_anchors, 5 + COCO_CLASSES]:
            raise DetectorError(
                f"detector weights {name}: expected a YOLOX model with input (1, 3, {INPUT_SIDE}, {INPUT_SIDE}) and output "
                f"(1, {expected_anchors}, {5 + COCO_CLASSES}), found input {in_shape} and output {out_shape}"
            )
        self.input_name, self.name = inputs[0].name, name

    def __call__(self, frame_rgb: np.ndarray, score_threshold: float) -> Boxes:
        """A (H, W, 3) uint8 RGB frame (or (H, W) grey) -> its COCO boxes."""
        if frame_rgb.ndim == 2:
            frame_rgb = np.repeat(frame_rgb[..., None], 3, axis=2)
        blob, ratio = letterbox(np.ascontiguousarray(frame_rgb[..., ::-1]))
        raw = self.session.run(None, {self.input_name: blob})[0][0]
        return decode_output(raw, ratio, score_threshold)


@functools.lru_cache(maxsize=4)
def _cached_detector(uri: str, storage_key: str, threads: int, use_gpu: bool) -> Detector:
    from vad.config import StorageConfig
    from vad.io.storage import read_bytes

    storage = StorageConfig.model_validate_json(storage_key) if storage_key else None
    try:
        data = read_bytes(uri, storage)
    except FileNotFoundError:
        raise DetectorError(f"detector weights {uri}: no such file (set model.hparams.detector to your copy of yolox_nano.onnx, or null for moving-region boxes only)") from None
    except OSError as exc:
        raise DetectorError(f"detector weights {uri}: cannot be read ({type(exc).__name__}: {exc})") from None
    return Detector(data, uri, threads=threads, use_gpu=use_gpu)


def load_detector(uri: str, storage=None, *, threads: int = 1, use_gpu: bool = False) -> Detector:
    """The detector of `uri` (a path or `s3://`), loaded once per process and kept (a fleet's cameras share it)."""
    return _cached_detector(uri, storage.model_dump_json() if storage is not None else "", threads, use_gpu)


def moving_regions(previous: np.ndarray, frame: np.ndarray, *, threshold: float = 20.0, min_area: int = 64, dilate: int = 5) -> Boxes:
    """Boxes around the pixels that changed between two grey (H, W) uint8 frames by more than
    `threshold` grey levels: a fixed camera's moving things, whatever they are. Nearby changed pixels
    are joined by a dilation of `dilate` pixels; regions smaller than `min_area` pixels are dropped."""
    import cv2

    changed = (cv2.absdiff(frame, previous) > threshold).astype(np.uint8)
    if dilate > 1:
        changed = cv2.dilate(changed, np.ones((dilate, dilate), np.uint8))
    count, _, stats, _ = cv2.connectedComponentsWithStats(changed, connectivity=8)
    keep = [i for i in range(1, count) if stats[i, cv2.CC_STAT_AREA] >= min_area]
    if not keep:
        return Boxes.empty()
    s = stats[keep]
    xyxy = np.stack([s[:, 0], s[:, 1], s[:, 0] + s[:, 2], s[:, 1] + s[:, 3]], 1).astype(np.float32)
    n = len(keep)
    return Boxes(xyxy, np.ones(n, np.float32), np.zeros((n, COCO_CLASSES), np.float32), np.ones(n, np.int8))


def merge_boxes(detected: Boxes, moving: Boxes, overlap: float = 0.3) -> Boxes:
    """The detector's boxes plus the moving regions that no detected box covers (by more than
    `overlap` of the region's own area): what moves and the detector cannot name."""
    if not len(moving) or not len(detected):
        return Boxes.concat([detected, moving])
    lt = np.maximum(moving.xyxy[:, None, :2], detected.xyxy[None, :, :2])
    rb = np.minimum(moving.xyxy[:, None, 2:], detected.xyxy[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(2)
    area = np.clip(moving.xyxy[:, 2:] - moving.xyxy[:, :2], 1, None).prod(1)
    uncovered = (inter / area[:, None]).max(1) <= overlap
    return Boxes.concat([detected, moving.take(uncovered)])
