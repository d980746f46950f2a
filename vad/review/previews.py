"""Pictures of flagged clips, cut from the source videos: an animated GIF of the clip's frames (with
the scorer's heat map laid over them where it localises, and the boxes of the objects that drove the
score where it finds objects) and a strip of four key frames. Only the
clip's frames are decoded; `ClipPreviews` is a Ray Data stage, so a large night's previews are cut by
many tasks at once."""

from __future__ import annotations

import io

import numpy as np

from vad.config import DecodeConfig, StorageConfig

PREVIEW_WIDTH = 320
GIF_FRAME_MS = 90


def _fit(frames: np.ndarray, width: int) -> np.ndarray:
    """RGB frames (T, H, W, 3) scaled to `width` pixels wide (never enlarged past 2x)."""
    from PIL import Image

    h, w = frames.shape[1:3]
    scale = min(width / w, 2.0)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.stack([np.asarray(Image.fromarray(f).resize(size, Image.BILINEAR)) for f in frames])


def overlay(frames: np.ndarray, heat: list[np.ndarray] | None, masks: list[np.ndarray] | None) -> np.ndarray:
    """Frames (T, h, w, 3) with each frame's heat map (any size, >= 0) tinted red in proportion to the
    clip's largest value and its mask's outline drawn, where there are any."""
    from PIL import Image

    out = frames.astype(np.float32)
    size = (frames.shape[2], frames.shape[1])
    top = max((float(h.max()) for h in heat or [] if h.size), default=0.0)
    for t in range(len(frames)):
        if heat and t < len(heat) and top > 0:
            level = np.asarray(Image.fromarray((heat[t] / top * 255).clip(0, 255).astype(np.uint8)).resize(size, Image.BILINEAR))
            alpha = (level.astype(np.float32) / 255 * 0.6)[..., None]
            out[t] = out[t] * (1 - alpha) + np.array([255.0, 30.0, 30.0]) * alpha
        if masks and t < len(masks) and masks[t].any():
            mask = np.asarray(Image.fromarray(masks[t].astype(np.uint8) * 255).resize(size, Image.NEAREST)) > 0
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


def gif_bytes(frames: np.ndarray) -> bytes:
    from PIL import Image

    images = [Image.fromarray(f) for f in frames]
    buffer = io.BytesIO()
    images[0].save(buffer, format="GIF", save_all=True, append_images=images[1:], duration=GIF_FRAME_MS, loop=0, optimize=True)
    return buffer.getvalue()


def strip_bytes(frames: np.ndarray, count: int = 4) -> bytes:
    from PIL import Image

    picks = np.unique(np.linspace(0, len(frames) - 1, count).round().astype(int))
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
    """Ray Data stage: rows of flagged clips (`clip_id`, `task`: video row, frame indices, heat maps) -> GIF and strip bytes.
    A clip whose video cannot be read gets an `error` instead of pictures; the page says so."""

    def __init__(self, storage: StorageConfig | None = None, width: int = PREVIEW_WIDTH):
        self.storage, self.width = storage, width

    def __call__(self, batch: dict) -> dict:
        import base64
        import json

        from vad.io.sources import VideoRef
        from vad.results.tables import decode_heatmap, decode_mask

        gifs, strips, errors = [], [], []
        for i in range(len(batch["clip_id"])):
            try:
                task = json.loads(batch["task"][i])  # `vad.review.report.preview_task`
                frames = _fit(clip_frames(VideoRef.from_row(task["video"]), task["frames"], self.storage), self.width)
                heat = [decode_heatmap(base64.b64decode(p), s) for p, s in zip(task["heatmap_png"], task["heatmap_scale"])] or None
                mask = [decode_mask(base64.b64decode(p)) for p in task["mask_png"]] or None
                shown = draw_boxes(overlay(frames, heat, mask), task["frames"], task.get("objects") or [])
                gifs.append(gif_bytes(shown))
                strips.append(strip_bytes(shown))
                errors.append("")
            except Exception as exc:  # noqa: BLE001 - one unreadable video must not cost the whole page
                gifs.append(b"")
                strips.append(b"")
                errors.append(f"{type(exc).__name__}: {exc}")
        return {"clip_id": batch["clip_id"], "gif": np.array(gifs, dtype=object), "strip": np.array(strips, dtype=object),
                "error": np.array(errors, dtype=object)}
