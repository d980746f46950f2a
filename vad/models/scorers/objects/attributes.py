"""What a person can read about an object: how fast it moves (optical flow in its box, or the
displacement of its box between two analysed frames), how fast relative to its own height (a far
object is small and slow in pixels), its size and position, and what the detector thinks it is.

All values are per frame of the decoded clip (px/frame), so a camera's normal is measured at the
frame rate and `decode.frame_step` it is scored with.
"""

from __future__ import annotations

import numpy as np

from vad.models.scorers.objects.detector import Boxes, box_iou

DIS_PRESETS = {"ultrafast": 0, "fast": 1, "medium": 2}


class Flow:
    """Dense optical flow (OpenCV's DIS, Kroeger et al. 2016) between grey uint8 frames, computed at
    most `width` pixels wide and returned in the frame's own pixels."""

    def __init__(self, preset: str = "fast", width: int | None = None):
        import cv2

        if preset not in DIS_PRESETS:
            raise ValueError(f"flow_preset must be one of {', '.join(DIS_PRESETS)}, got {preset!r}")
        self.dis = cv2.DISOpticalFlow_create(DIS_PRESETS[preset])
        self.width = width

    def __call__(self, previous: np.ndarray, frame: np.ndarray) -> np.ndarray:
        """(H, W) grey uint8 frames -> flow (H, W, 2), pixels per frame."""
        import cv2

        h, w = frame.shape
        if self.width and w > self.width:
            size = (self.width, max(8, int(round(h * self.width / w))))
            small = self.dis.calc(cv2.resize(previous, size, interpolation=cv2.INTER_AREA), cv2.resize(frame, size, interpolation=cv2.INTER_AREA), None)
            return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR) * (w / size[0])
        return self.dis.calc(previous, frame, None)


def box_pixels(xyxy: np.ndarray, height: int, width: int) -> tuple[int, int, int, int]:
    """A box clipped to the frame, as integer (x0, y0, x1, y1) with at least one pixel."""
    x0, y0 = int(np.clip(np.floor(xyxy[0]), 0, width - 1)), int(np.clip(np.floor(xyxy[1]), 0, height - 1))
    x1, y1 = int(np.clip(np.ceil(xyxy[2]), x0 + 1, width)), int(np.clip(np.ceil(xyxy[3]), y0 + 1, height))
    return x0, y0, x1, y1


def flow_velocity(flow: np.ndarray, boxes: np.ndarray, bins: int = 1) -> np.ndarray:
    """AI-VAD's velocity of each box: the flow magnitudes of its pixels summed per orientation bin
    (`bins` equal sectors of the circle; 1 = speed only) and divided by the box's pixel count, so one
    bin is the mean speed in the box. (N, 4) boxes -> (N, bins), pixels per frame."""
    h, w = flow.shape[:2]
    out = np.zeros((len(boxes), bins), np.float32)
    for i, box in enumerate(boxes):
        x0, y0, x1, y1 = box_pixels(box, h, w)
        f = flow[y0:y1, x0:x1].reshape(-1, 2)
        magnitude = np.hypot(f[:, 0], f[:, 1])
        if bins == 1:
            out[i, 0] = magnitude.mean()
        else:
            angle = np.mod(np.arctan2(f[:, 1], f[:, 0]), 2 * np.pi)
            which = np.minimum((angle / (2 * np.pi) * bins).astype(np.int64), bins - 1)
            out[i] = np.bincount(which, weights=magnitude, minlength=bins) / len(magnitude)
    return out


def track_velocity(boxes: np.ndarray, later: np.ndarray, gap: int, min_iou: float = 0.1) -> np.ndarray:
    """The displacement of each box's centre to its best-overlapping box `gap` frames later, per frame
    ((N,) px/frame; 0 where nothing overlaps: the object left, stopped being detected, or is new)."""
    if not len(boxes) or not len(later):
        return np.zeros(len(boxes), np.float32)
    overlap = box_iou(boxes, later)
    match = overlap.argmax(1)
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    moved = (later[match, :2] + later[match, 2:]) / 2 - centre
    speed = np.hypot(moved[:, 0], moved[:, 1]) / max(gap, 1)
    return np.where(overlap.max(1) >= min_iou, speed, 0.0).astype(np.float32)


def geometry(boxes: np.ndarray, height: int, width: int) -> np.ndarray:
    """Where an object is and how big, relative to the frame: (N, 4) centre x / W, centre y / H,
    log(box height / H), log(box width / box height)."""
    bw = np.clip(boxes[:, 2] - boxes[:, 0], 1, None)
    bh = np.clip(boxes[:, 3] - boxes[:, 1], 1, None)
    return np.stack([
        (boxes[:, 0] + boxes[:, 2]) / 2 / width, (boxes[:, 1] + boxes[:, 3]) / 2 / height, np.log(bh / height), np.log(bw / bh),
    ], 1).astype(np.float32)


def describe(boxes: Boxes, flow: np.ndarray | None, *, bins: int = 1, later: Boxes | None = None, gap: int = 1,
             height: int, width: int) -> dict[str, np.ndarray]:
    """Every attribute of a frame's boxes: `velocity` (N, bins) px/frame (flow, or box tracking when
    `flow` is None), `speed` (N,) px/frame, `relative_speed` (N,) box heights per frame, `geometry`
    (N, 4), `appearance` (N, 80) class probabilities, `box_height` (N,) px."""
    if flow is not None:
        velocity = flow_velocity(flow, boxes.xyxy, bins)
    else:
        velocity = track_velocity(boxes.xyxy, later.xyxy if later is not None else np.zeros((0, 4)), gap)[:, None]
    speed = velocity.sum(1)
    box_height = np.clip(boxes.xyxy[:, 3] - boxes.xyxy[:, 1], 1, None).astype(np.float32)
    return {
        "velocity": velocity, "speed": speed, "relative_speed": speed / box_height, "geometry": geometry(boxes.xyxy, height, width),
        "appearance": boxes.classes, "box_height": box_height,
    }
