"""Pictures of events, cut from the source videos: an animated WebP spanning the event (at most
`MAX_PREVIEW_FRAMES` of its frames, the peak frame framed in red; the scorer's heat map laid over the peak
clip's frames where it localises, and the boxes of the objects that drove the score where it finds
objects) and a strip of four key frames, the peak among them. Only those frames are decoded;
`ClipPreviews` is a Ray Data stage, so a large night's previews are cut by many tasks at once. WebP keeps
a page of 12 events near a megabyte (GIFs made it 5-10 MB)."""

from __future__ import annotations

import io

import numpy as np

from vad.config import DecodeConfig, StorageConfig

PREVIEW_WIDTH = 320
FRAME_MS = 90
WEBP_QUALITY = 55


def _fit(frames: np.ndarray, width: int) -> np.ndarray:
    """RGB frames (T, H, W, 3) scaled to `width` pixels wide (never enlarged past 2x)."""
    from PIL import Image

    h, w = frames.shape[1:3]
    scale = min(width / w, 2.0)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.stack([np.asarray(Image.fromarray(f).resize(size, Image.BILINEAR)) for f in frames])


def overlay(frames: np.ndarray, heat: list[np.ndarray] | None, masks: list[np.ndarray] | None, which: list[int | None] | None = None) -> np.ndarray:
    """Frames (T, h, w, 3) with a heat map (any size, >= 0) tinted red in proportion to the largest value and a
    mask's outline drawn, where there are any: frame t takes heat map and mask `which[t]` (None: none; default t)."""
    from PIL import Image

    out = frames.astype(np.float32)
    size = (frames.shape[2], frames.shape[1])
    top = max((float(h.max()) for h in heat or [] if h.size), default=0.0)
    which = list(range(len(frames))) if which is None else which
    for t in range(len(frames)):
        k = which[t] if t < len(which) else None
        if k is None:
            continue
        if heat and k < len(heat) and top > 0:
            level = np.asarray(Image.fromarray((heat[k] / top * 255).clip(0, 255).astype(np.uint8)).resize(size, Image.BILINEAR))
            alpha = (level.astype(np.float32) / 255 * 0.6)[..., None]
            out[t] = out[t] * (1 - alpha) + np.array([255.0, 30.0, 30.0]) * alpha
        if masks and k < len(masks) and masks[k].any():
            mask = np.asarray(Image.fromarray(masks[k].astype(np.uint8) * 255).resize(size, Image.NEAREST)) > 0
            edge = mask & ~(np.roll(mask, 1, 0) & np.roll(mask, -1, 0) & np.roll(mask, 1, 1) & np.roll(mask, -1, 1))
            out[t][edge] = (255.0, 230.0, 0.0)
    return out.clip(0, 255).astype(np.uint8)


def draw_boxes(frames: np.ndarray, frame_indices: list[int], objects: list[dict]) -> np.ndarray:
    """Frames (T, h, w, 3) of the video frames `frame_indices` with each object's box (`vad.results.schema.OBJECTS_SCHEMA`
    rows: frame, x0..y1 in pixels of a frame_height x frame_width decode, label, score) drawn, labelled, on the frame it was
    seen in and those after it up to the next frame with objects."""
    from PIL import Image, ImageDraw

    if not objects:
        return frames
    seen = sorted({int(o["frame"]) for o in objects})
    out = frames.copy()
    for t, index in enumerate(frame_indices[: len(frames)]):
        shown = [f for f in seen if f <= index]
        if not shown:
            continue
        image = Image.fromarray(out[t])
        draw = ImageDraw.Draw(image)
        for o in (o for o in objects if int(o["frame"]) == shown[-1]):
            sx, sy = frames.shape[2] / float(o["frame_width"]), frames.shape[1] / float(o["frame_height"])
            box = [o["x0"] * sx, o["y0"] * sy, o["x1"] * sx, o["y1"] * sy]
            colour = (255, 40, 40) if o["score"] >= 1.0 else (255, 200, 0)
            draw.rectangle(box, outline=colour, width=2)
            draw.text((box[0] + 2, max(0, box[1] - 11)), f"{o['label']} {o['score']:.1f}", fill=colour)
        out[t] = np.asarray(image)
    return out


def mark_peak(frames: np.ndarray, frame_indices: list[int], peak: int | None) -> np.ndarray:
    """The frame showing `peak` (the event's highest-scoring frame) framed in red."""
    if peak is None or peak not in frame_indices:
        return frames
    out = frames.copy()
    t = frame_indices.index(peak)
    out[t, :3], out[t, -3:], out[t, :, :3], out[t, :, -3:] = (220, 20, 20), (220, 20, 20), (220, 20, 20), (220, 20, 20)
    return out


def webp_bytes(frames: np.ndarray) -> bytes:
    """An animated WebP of the frames (lossy; a few kB a frame at preview size)."""
    from PIL import Image

    images = [Image.fromarray(f) for f in frames]
    buffer = io.BytesIO()
    images[0].save(buffer, format="WEBP", save_all=True, append_images=images[1:], duration=FRAME_MS, loop=0, quality=WEBP_QUALITY, method=4)
    return buffer.getvalue()


def strip_bytes(frames: np.ndarray, count: int = 4, must: int | None = None) -> bytes:
    """`count` key frames side by side, evenly spread (frame `must`, the peak, replacing the nearest)."""
    from PIL import Image

    picks = np.unique(np.linspace(0, len(frames) - 1, count).round().astype(int))
    if must is not None and must not in picks:
        picks[np.argmin(np.abs(picks - must))] = must
        picks = np.unique(picks)
    buffer = io.BytesIO()
    Image.fromarray(np.concatenate([frames[i] for i in picks], axis=1)).save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


def clip_frames(video, indices: list[int], storage: StorageConfig | None) -> np.ndarray:
    """RGB frames `indices` of a video (a `vad.io.sources.VideoRef`), at the video's own size."""
    from vad.video.readers import open_video

    with open_video(video, DecodeConfig(resize=None, grayscale=False), storage) as reader:
        indices = [i for i in indices if i < len(reader)]
        frames = reader.batch(indices)
    return np.repeat(frames[..., None], 3, axis=-1) if frames.ndim == 3 else frames[..., :3]


class ClipPreviews:
    """Ray Data stage: rows of events (`event_id`, `task`: video row, frame indices, peak frame, the peak clip's heat maps)
    -> animated WebP and strip bytes. An event whose video cannot be read gets an `error` instead of pictures; the page
    says so."""

    def __init__(self, storage: StorageConfig | None = None, width: int = PREVIEW_WIDTH):
        self.storage, self.width = storage, width

    def __call__(self, batch: dict) -> dict:
        import base64
        import json

        from vad.io.sources import VideoRef
        from vad.results.tables import decode_heatmap, decode_mask

        animations, strips, errors = [], [], []
        for i in range(len(batch["event_id"])):
            try:
                task = json.loads(batch["task"][i])  # `vad.review.report.preview_task`
                indices = task["frames"]
                frames = _fit(clip_frames(VideoRef.from_row(task["video"]), indices, self.storage), self.width)
                indices = indices[: len(frames)]
                heat = [decode_heatmap(base64.b64decode(p), s) for p, s in zip(task["heatmap_png"], task["heatmap_scale"])] or None
                mask = [decode_mask(base64.b64decode(p)) for p in task["mask_png"]] or None
                slot = {f: k for k, f in enumerate(task.get("heat_frames") or [])}
                shown = draw_boxes(overlay(frames, heat, mask, [slot.get(f) for f in indices]), indices, task.get("objects") or [])
                peak = task.get("peak_frame")
                shown = mark_peak(shown, indices, peak)
                animations.append(webp_bytes(shown))
                strips.append(strip_bytes(shown, must=indices.index(peak) if peak in indices else None))
                errors.append("")
            except Exception as exc:  # noqa: BLE001 - one unreadable video must not cost the whole page
                animations.append(b"")
                strips.append(b"")
                errors.append(f"{type(exc).__name__}: {exc}")
        return {"event_id": batch["event_id"], "animation": np.array(animations, dtype=object), "strip": np.array(strips, dtype=object),
                "error": np.array(errors, dtype=object)}


def preview_batch(batch: dict, *, storage: StorageConfig | None = None, width: int = PREVIEW_WIDTH) -> dict:
    """`ClipPreviews` as a Ray Data task: it loads nothing, so the page's previews take pooled workers (already
    started, Ray Data imported) instead of starting a process per actor (~3 s of a small machine's CPU each)."""
    return ClipPreviews(storage, width)(batch)
