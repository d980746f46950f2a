"""The object scorer: every object of a clip described by attributes a person can read and scored by
their density against the objects of the camera's own normal footage (AI-VAD, Reiss & Hoshen 2023,
with parts that run on a CPU: YOLOX-Nano boxes and moving-region boxes, OpenCV's DIS flow).

For each analysed frame (every `every`-th of the clip): boxes (the detector's, plus moving regions it
does not cover), each box's attributes (`attributes.describe`), one raw score per attribute
(velocity and geometry: Gaussian-mixture negative log-likelihood; appearance: distance to the nearest
normal objects' class probabilities), each calibrated on held-out normal objects (their minimum -> 0,
99.9th percentile -> 1) and summed. A frame's score is its worst object's; frames between analysed ones
take the score of the analysed frame before them; a clip's score is its worst frame's. The worst
object of a clip and its leading attribute give the reason written beside the score.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from vad.models.scorers.base import FittedScorer, ScoreOutput
from vad.models.scorers.objects.attributes import DIS_PRESETS, Flow, describe
from vad.models.scorers.objects.classes import COCO_NAMES
from vad.models.scorers.objects.density import GaussianDensity, NearestDensity, calibration
from vad.models.scorers.objects.detector import COCO_CLASSES, Boxes, merge_boxes, moving_regions
from vad.models.scorers.objects.frames import FramesByIndex, GreyAsRGB, as_uint8

log = logging.getLogger(__name__)

ATTRIBUTES = ("velocity", "geometry", "appearance")
DEFAULT_ATTRIBUTES = ("velocity", "appearance")  # geometry (size and place) is opt-in: it hurt on Ped2's development videos
BOX_SOURCES = ("both", "detector", "motion")
VELOCITY_SOURCES = ("flow", "track")
VELOCITY_SCALES = ("pixels", "height")
GEOMETRY_DIM = 4
# The readable values kept beside the raw attribute scores in the calibration pass: speed, box height.
READABLE = ("speed", "box_height")


class ObjectScorer(FittedScorer):
    name = "objects"

    def __init__(
        self, *, detector: str | None = None, boxes: str = "both", score_threshold: float = 0.3,
        motion_threshold: float = 20.0, motion_min_area: float = 0.0005, every: int = 3,
        velocity: str = "flow", velocity_scale: str = "pixels", direction_bins: int = 1, flow_preset: str = "medium", flow_width: int | None = 360,
        attributes: tuple[str, ...] | list[str] = DEFAULT_ATTRIBUTES, components: int = 8, k: int = 1, bank_size: int = 4096,
        quantile: float = 0.999, mask_quantile: float = 0.999, max_objects: int = 48, report_objects: int = 8,
        max_candidates: int = 200000, clip_len: int = 16, seed: int = 0,
    ):
        super().__init__()
        attributes = tuple(attributes)
        for value, allowed, what in ((boxes, BOX_SOURCES, "boxes"), (velocity, VELOCITY_SOURCES, "velocity"),
                                     (velocity_scale, VELOCITY_SCALES, "velocity_scale"), (flow_preset, tuple(DIS_PRESETS), "flow_preset")):
            if value not in allowed:
                raise ValueError(f"{what} must be one of {', '.join(allowed)}, got {value!r}")
        if not attributes or set(attributes) - set(ATTRIBUTES):
            raise ValueError(f"attributes must be a non-empty subset of {', '.join(ATTRIBUTES)}, got {list(attributes)}")
        if every < 1 or direction_bins < 1 or max_objects < 1 or not 0 < quantile < 1:
            raise ValueError("every, direction_bins and max_objects must be positive and quantile in (0, 1)")
        if boxes != "motion" and detector is None:
            log.warning("objects: no detector weights (model.hparams.detector); using moving-region boxes only")
            boxes = "motion"
        if velocity == "track" and every >= clip_len:
            raise ValueError(f"velocity 'track' needs two analysed frames per clip: every ({every}) must be below clip_len ({clip_len})")
        self.detector_uri, self.boxes, self.score_threshold = detector, boxes, score_threshold
        self.motion_threshold, self.motion_min_area, self.every = motion_threshold, motion_min_area, every
        self.velocity, self.velocity_scale, self.direction_bins = velocity, velocity_scale, direction_bins if velocity == "flow" else 1
        self.flow_preset, self.flow_width = flow_preset, flow_width
        self.attributes, self.components, self.k, self.bank_size = attributes, components, k, bank_size
        self.quantile, self.mask_quantile, self.max_objects, self.report_objects = quantile, mask_quantile, max_objects, report_objects
        self.max_candidates, self.clip_len, self.seed = max_candidates, clip_len, seed
        self.velocity_density = GaussianDensity(self.direction_bins, components, seed=seed)
        self.geometry_density = GaussianDensity(GEOMETRY_DIM, components, seed=seed)
        self.appearance_density = NearestDensity(COCO_CLASSES, k=k, bank_size=bank_size, seed=seed)
        a = len(ATTRIBUTES)
        self.register_buffer("low", torch.zeros(a))  # per attribute: held-out normal minimum -> 0
        self.register_buffer("high", torch.ones(a))  # ... and `quantile` -> 1
        self.register_buffer("readable_high", torch.zeros(len(READABLE)))  # normal speed and box height at `quantile`
        self.register_buffer("object_threshold", torch.tensor(float("inf")))  # object score above which its box is masked
        self._storage = None
        self._detector = None
        self._flow = None

    # -- resources ---------------------------------------------------------------------------------
    def bind_storage(self, storage) -> None:
        """Where the detector's weights are read from (an `s3://` uri needs the job's storage settings);
        loads and checks them now, so a bad file fails before any work."""
        self._storage = storage
        self.detector()

    def detector(self):
        if self.boxes == "motion":
            return None
        if self._detector is None:
            from vad.models.scorers.objects.detector import load_detector

            self._detector = load_detector(self.detector_uri, self._storage, threads=torch.get_num_threads(), use_gpu=torch.cuda.is_available())
        return self._detector

    def flow(self) -> Flow:
        if self._flow is None:
            self._flow = Flow(self.flow_preset, self.flow_width)
        return self._flow

    # -- objects and their attributes ----------------------------------------------------------------
    def analysed_frames(self, frames: int) -> list[int]:
        return list(range(0, frames, self.every))

    def frame_boxes(self, rgb: np.ndarray, grey: np.ndarray, t: int) -> Boxes:
        """The boxes of frame `t` of a clip ((T, H, W, 3) and (T, H, W) uint8)."""
        parts = []
        detector = self.detector()
        if detector is not None:
            parts.append(detector(rgb[t], self.score_threshold))
        if self.boxes in ("both", "motion") and len(grey) > 1:
            other = t + 1 if t + 1 < len(grey) else t - 1
            h, w = grey.shape[1:]
            moving = moving_regions(grey[other], grey[t], threshold=self.motion_threshold, min_area=max(4, int(self.motion_min_area * h * w)))
            if detector is None:
                return moving
            parts = [merge_boxes(parts[0], moving)]
        return parts[0] if parts else Boxes.empty()

    def describe_clip(self, clip: np.ndarray) -> list[tuple[int, Boxes, dict]]:
        """One clip, uint8 (T, H, W) grey or (T, H, W, 3) RGB -> per analysed frame (t, boxes, attributes),
        at most `max_objects` boxes a frame (the detector's best first, then the largest moving regions)."""
        import cv2

        t_count, h, w = clip.shape[:3]
        frames = self.analysed_frames(t_count)
        needed = sorted({u for t in frames for u in (t - 1, t, t + 1) if 0 <= u < t_count})  # analysed frames and their partners
        rgb = clip if clip.ndim == 4 else GreyAsRGB(clip)
        grey = clip if clip.ndim == 3 else FramesByIndex({u: cv2.cvtColor(clip[u], cv2.COLOR_RGB2GRAY) for u in needed}, t_count)
        boxes = {t: self._bounded(self.frame_boxes(rgb, grey, t)) for t in frames}
        out = []
        for i, t in enumerate(frames):
            if self.velocity == "flow":
                if t_count == 1:
                    flow = np.zeros((h, w, 2), np.float32)
                else:
                    flow = self.flow()(grey[t], grey[t + 1]) if t + 1 < t_count else self.flow()(grey[t - 1], grey[t])
                attrs = describe(boxes[t], flow, bins=self.direction_bins, height=h, width=w)
            else:
                later, gap = (boxes[frames[i + 1]], frames[i + 1] - t) if i + 1 < len(frames) else (boxes[frames[i - 1]], t - frames[i - 1])
                attrs = describe(boxes[t], None, later=later, gap=gap, height=h, width=w)
            out.append((t, boxes[t], attrs))
        return out

    def _bounded(self, boxes: Boxes) -> Boxes:
        if len(boxes) <= self.max_objects:
            return boxes
        area = (boxes.xyxy[:, 2] - boxes.xyxy[:, 0]) * (boxes.xyxy[:, 3] - boxes.xyxy[:, 1])
        order = np.lexsort((-area, -boxes.score, boxes.source))  # detector boxes by score, then regions by size
        return boxes.take(order[: self.max_objects])

    def velocity_features(self, attrs: dict) -> np.ndarray:
        v = attrs["velocity"]
        return v / attrs["box_height"][:, None] if self.velocity_scale == "height" else v

    def raw_scores(self, attrs: dict) -> np.ndarray:
        """(N, 3) raw scores of velocity, geometry, appearance (0 for attributes not in use)."""
        n = len(attrs["speed"])
        raw = np.zeros((n, len(ATTRIBUTES)), np.float32)
        if n == 0:
            return raw
        if "velocity" in self.attributes:
            raw[:, 0] = self.velocity_density.score(self.velocity_features(attrs))
        if "geometry" in self.attributes:
            raw[:, 1] = self.geometry_density.score(attrs["geometry"])
        if "appearance" in self.attributes:
            raw[:, 2] = self.appearance_density.score(attrs["appearance"])
        return raw

    def calibrated(self, raw: np.ndarray) -> np.ndarray:
        """Raw scores (..., 3) -> each attribute on the held-out normal scale (unused attributes 0)."""
        used = np.array([a in self.attributes for a in ATTRIBUTES])
        low, high = self.low.cpu().numpy(), self.high.cpu().numpy()
        return np.where(used, (raw - low) / (high - low), 0.0).astype(np.float32)

    # -- fitting (`FittedScorer`) ------------------------------------------------------------------------
    def fit_rows(self, clips: torch.Tensor) -> torch.Tensor:
        """Every object of normal clips as one row: velocity features, geometry, class probabilities."""
        rows = []
        for clip in as_uint8(clips):
            for _, _, attrs in self.describe_clip(clip):
                rows.append(np.concatenate([self.velocity_features(attrs), attrs["geometry"], attrs["appearance"]], 1))
        width = self.direction_bins + GEOMETRY_DIM + COCO_CLASSES
        return torch.from_numpy(np.concatenate(rows).astype(np.float32)) if rows else torch.zeros(0, width)

    def fit(self, rows: torch.Tensor) -> dict[str, float]:
        x = rows.float().numpy()
        if len(x) < 2:
            raise ValueError(f"found {len(x)} objects in the normal footage: the object scorer needs moving or detected objects to learn from")
        b = self.direction_bins
        if "velocity" in self.attributes:
            self.velocity_density.fit(x[:, :b])
        if "geometry" in self.attributes:
            self.geometry_density.fit(x[:, b : b + GEOMETRY_DIM])
        if "appearance" in self.attributes:
            self.appearance_density.fit(x[:, b + GEOMETRY_DIM :])
        log.info("objects: densities fitted on %d normal objects", len(x))
        # train/loss: how well the densities fit their own objects (mean negative log-likelihood of the mixtures in use)
        fits = [d.score(part).mean() for used, d, part in (
            ("velocity" in self.attributes, self.velocity_density, x[:, :b]),
            ("geometry" in self.attributes, self.geometry_density, x[:, b : b + GEOMETRY_DIM])) if used]
        return {"train/objects": float(len(x)), "train/loss": float(np.mean(fits)) if fits else float("nan")}

    def calibration_values(self, clips: torch.Tensor) -> torch.Tensor:
        """Held-out normal clips -> (B, T, max_objects, 3 raw scores + speed + box height), NaN where no object."""
        b, t = clips.shape[:2]
        out = np.full((b, t, self.max_objects, len(ATTRIBUTES) + len(READABLE)), np.nan, np.float32)
        for i, clip in enumerate(as_uint8(clips)):
            for frame, _, attrs in self.describe_clip(clip):
                n = len(attrs["speed"])
                out[i, frame, :n, : len(ATTRIBUTES)] = self.raw_scores(attrs)
                out[i, frame, :n, len(ATTRIBUTES) :] = np.stack([attrs["speed"], attrs["box_height"]], 1)
        return torch.from_numpy(out)

    def calibrate_values(self, values: torch.Tensor) -> tuple[np.ndarray, dict[str, float]]:
        v = values.float().numpy()
        objects = v.reshape(-1, v.shape[-1])
        objects = objects[~np.isnan(objects[:, 0])]
        if len(objects) == 0:
            raise ValueError("no objects in the held-out normal footage to calibrate on")
        a = len(ATTRIBUTES)
        low, high = calibration(objects[:, :a], self.quantile)
        self.low, self.high = torch.from_numpy(low), torch.from_numpy(high)
        self.readable_high = torch.from_numpy(np.quantile(objects[:, a:], self.quantile, axis=0).astype(np.float32))
        object_scores = self.calibrated(objects[:, :a]).sum(1)
        self.object_threshold = torch.tensor(float(np.quantile(object_scores, self.mask_quantile)))
        per_object = np.where(np.isnan(v[..., 0]), 0.0, self.calibrated(np.nan_to_num(v[..., :a])).sum(-1))
        frame_scores = self._hold(per_object.max(2))
        # val/loss (what the registry promotes on): how unusual held-out normal objects are to the fitted densities,
        # the sum over the attributes in use of their mean raw score (lower: the densities generalise better)
        used = [i for i, a in enumerate(ATTRIBUTES) if a in self.attributes]
        return frame_scores, {"val/loss": float(objects[:, used].mean(0).sum()), "val/objects": float(len(objects))}

    def _hold(self, frame_scores: np.ndarray) -> np.ndarray:
        """(B, T) scores of analysed frames (others ignored) -> every frame takes its analysed frame's."""
        analysed = np.array(self.analysed_frames(frame_scores.shape[1]))
        return frame_scores[:, analysed[np.arange(frame_scores.shape[1]) // self.every]]

    def fit_summary(self) -> dict[str, float]:
        return {"objects/bank": float(len(self.appearance_density.bank))}

    # -- scoring -------------------------------------------------------------------------------------
    def score(self, clips: torch.Tensor) -> ScoreOutput:
        b, t = clips.shape[:2]
        h, w = clips.shape[2:4]
        frame_scores = np.zeros((b, t), np.float32)
        pixel = np.zeros((b, t, h, w), np.float32)
        threshold = float(self.object_threshold)
        objects, reasons = [], []
        for i, clip in enumerate(as_uint8(clips)):
            found = []
            for frame, boxes, attrs in self.describe_clip(clip):
                if not len(boxes):
                    continue
                raw = self.raw_scores(attrs)
                parts = self.calibrated(raw)
                total = parts.sum(1)
                frame_scores[i, frame] = total.max()
                held = slice(frame, min(frame + self.every, t))
                for j in np.argsort(total):  # the worst painted last
                    x0, y0, x1, y1 = np.clip(np.round(boxes.xyxy[j]).astype(int), 0, [w, h, w, h])
                    pixel[i, held, y0:y1, x0:x1] = np.maximum(pixel[i, held, y0:y1, x0:x1], total[j])
                for j in range(len(boxes)):
                    found.append(self._object_row(frame, boxes, attrs, j, parts[j], float(total[j])))
            found.sort(key=lambda o: -o["score"])
            objects.append(found[: self.report_objects])
            reasons.append(self.reason(found[0]) if found else "")
        frame_scores = self._hold(frame_scores)
        mask = pixel > threshold
        device = clips.device
        return ScoreOutput(
            score=torch.from_numpy(frame_scores.max(1)).to(device), frame_scores=torch.from_numpy(frame_scores).to(device),
            mask=torch.from_numpy(mask).to(device), pixel_scores=torch.from_numpy(pixel).to(device), objects=objects, reasons=reasons,
        )

    def _object_row(self, frame: int, boxes: Boxes, attrs: dict, j: int, parts: np.ndarray, total: float) -> dict:
        detected = boxes.source[j] == 0
        label = COCO_NAMES[int(boxes.classes[j].argmax())] if detected else "moving region"
        return {
            "frame": int(frame), "x0": float(boxes.xyxy[j, 0]), "y0": float(boxes.xyxy[j, 1]), "x1": float(boxes.xyxy[j, 2]), "y1": float(boxes.xyxy[j, 3]),
            "label": label, "label_score": float(boxes.score[j]) if detected else float("nan"), "source": "detector" if detected else "motion",
            "speed": float(attrs["speed"][j]), "relative_speed": float(attrs["relative_speed"][j]), "box_height": float(attrs["box_height"][j]),
            "velocity_score": float(parts[0]), "geometry_score": float(parts[1]), "appearance_score": float(parts[2]), "score": total,
            "attribute": ATTRIBUTES[int(np.argmax(parts))],
        }

    def reason(self, obj: dict) -> str:
        """Why an object scored high, in words: its leading attribute against this camera's normal."""
        where = f"at ({(obj['x0'] + obj['x1']) / 2:.0f}, {(obj['y0'] + obj['y1']) / 2:.0f})"
        what = obj["label"] if obj["source"] == "motion" else f"{obj['label']} ({obj['label_score']:.2f})"
        attribute = obj["attribute"]
        if attribute == "velocity":
            normal = float(self.readable_high[0])
            times = f", {obj['speed'] / normal:.1f}x" if normal > 0 else ""
            detail = f"speed {obj['speed']:.1f} px/frame{times} this camera's normal {self.quantile * 100:g}th percentile ({normal:.1f})"
        elif attribute == "geometry":
            detail = f"unusual size or place: {obj['box_height']:.0f} px tall (normal {self.quantile * 100:g}th percentile {float(self.readable_high[1]):.0f} px)"
        else:
            detail = "unusual appearance for this camera" + (" (no COCO class: a moving region)" if obj["source"] == "motion" else "")
        return f"{what} {where}, frame {obj['frame']}: {detail}; {attribute} score {obj[attribute + '_score']:.1f} (1 = normal {self.quantile * 100:g}th percentile)"

    def training_loss(self, clips: torch.Tensor) -> torch.Tensor:
        """The mean calibrated score of the clips' objects (what `val/loss` reports). Nothing is trained."""
        return self.score(clips).score.float().mean()

    def hparams(self) -> dict:
        return {
            "detector": self.detector_uri, "boxes": self.boxes, "score_threshold": self.score_threshold,
            "motion_threshold": self.motion_threshold, "motion_min_area": self.motion_min_area, "every": self.every,
            "velocity": self.velocity, "velocity_scale": self.velocity_scale, "direction_bins": self.direction_bins,
            "flow_preset": self.flow_preset, "flow_width": self.flow_width, "attributes": list(self.attributes),
            "components": self.components, "k": self.k, "bank_size": self.bank_size, "quantile": self.quantile,
            "mask_quantile": self.mask_quantile, "max_objects": self.max_objects, "report_objects": self.report_objects,
            "max_candidates": self.max_candidates, "clip_len": self.clip_len, "seed": self.seed,
        }

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        # The densities' sizes are the fit's: take the checkpoint's shapes.
        buffers = dict(self.named_buffers())
        for key, value in state_dict.items():
            if key in buffers and buffers[key].shape != value.shape:
                module, _, name = key.rpartition(".")
                setattr(self.get_submodule(module) if module else self, name, torch.empty_like(value))
        self.appearance_density._nearest = None
        return super().load_state_dict(state_dict, strict, assign)


def objects(**hparams) -> ObjectScorer:
    return ObjectScorer(**hparams).eval()
