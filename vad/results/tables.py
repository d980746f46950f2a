"""Arrow tables of scored clip batches: the `scores`, `masks` and `objects` rows, and the PNG codecs of mask
frames (1-bit) and pixel-score heat maps (8-bit, with a scale)."""

from __future__ import annotations

import datetime as dt
import io

import numpy as np
import pyarrow as pa

from vad.io.storage import Location, write_parquet_atomic
from vad.results.schema import MASKS_SCHEMA, OBJECTS_SCHEMA, SCORES_SCHEMA, SCORES_SCHEMA_VERSION


def source_metadata(metadata: dict | None, size: int, mtime: float) -> dict:
    """Schema metadata of a result file plus the size and mtime of the video it was made from,
    so a run can adopt results a killed run wrote but never entered in the manifest."""
    return {**(metadata or {}), b"vad.source_size": str(size).encode(), b"vad.source_mtime": repr(mtime).encode()}


def encode_mask(mask: np.ndarray) -> bytes:
    """A boolean (H, W) mask as a 1-bit PNG (a few hundred bytes for a typical sparse mask)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(mask.astype(np.uint8) * 255).convert("1").save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def decode_mask(png: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png)).convert("L")) > 0


HEATMAP_MAX_SIDE = 64  # heat maps are stored at most this many pixels on their longer side


def encode_heatmap(errors: np.ndarray) -> tuple[bytes, float]:
    """A per-pixel error map (H, W) as an 8-bit grayscale PNG, mean-pooled so its longer side is at
    most `HEATMAP_MAX_SIDE`, and its scale: pixel value v stands for v / 255 * scale."""
    from PIL import Image

    errors = np.nan_to_num(np.asarray(errors, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0).clip(min=0)
    factor = -(-max(errors.shape) // HEATMAP_MAX_SIDE)
    if factor > 1:
        h, w = (errors.shape[0] // factor) * factor, (errors.shape[1] // factor) * factor
        errors = errors[:h, :w].reshape(h // factor, factor, w // factor, factor).mean(axis=(1, 3))
    scale = float(errors.max()) if errors.size else 0.0
    levels = np.round(errors / scale * 255).astype(np.uint8) if scale > 0 else np.zeros(errors.shape, np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(levels, mode="L").save(buffer, format="PNG", optimize=True)
    return buffer.getvalue(), scale


def decode_heatmap(png: bytes, scale: float, size: tuple[int, int] | None = None) -> np.ndarray:
    """The error map of `encode_heatmap`, resized (bilinear) to `size` (H, W) when given."""
    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("L")
    if size is not None and image.size != (size[1], size[0]):
        image = image.resize((size[1], size[0]), Image.BILINEAR)
    return np.asarray(image, dtype=np.float32) / 255.0 * scale


def mask_columns(masks: np.ndarray, pixel_scores: np.ndarray | None) -> dict[str, np.ndarray]:
    """The `masks` table columns of a scored batch: masks (N, T, H, W) bool as 1-bit PNGs and their
    anomalous pixel counts, and the pixel scores they threshold as 8-bit heat maps."""
    n, t, h, w = masks.shape
    pngs, heatmaps, scales = np.empty(n, dtype=object), np.empty(n, dtype=object), np.empty(n, dtype=object)
    for i in range(n):  # one list per clip, kept 1-D
        pngs[i] = [encode_mask(frame) for frame in masks[i]]
        encoded = [encode_heatmap(frame) for frame in pixel_scores[i]] if pixel_scores is not None else []
        heatmaps[i], scales[i] = [png for png, _ in encoded], [scale for _, scale in encoded]
    return {
        "mask_png": pngs, "heatmap_png": heatmaps, "heatmap_scale": scales,
        "anomalous_pixels": masks.reshape(n, t, h * w).sum(axis=2).astype(np.int32),
        "mask_height": np.full(n, h, dtype=np.int32), "mask_width": np.full(n, w, dtype=np.int32),
    }


def masks_table(batch: dict[str, np.ndarray]) -> pa.Table:
    n = len(batch["clip_id"])
    columns = {
        "schema_version": pa.array(np.full(n, SCORES_SCHEMA_VERSION, dtype=np.int16)),
        "height": pa.array(batch["mask_height"], type=pa.int32()),
        "width": pa.array(batch["mask_width"], type=pa.int32()),
        "mask_png": pa.array([list(c) for c in batch["mask_png"]], type=MASKS_SCHEMA.field("mask_png").type),
        "anomalous_pixels": pa.array([list(c) for c in batch["anomalous_pixels"]], type=MASKS_SCHEMA.field("anomalous_pixels").type),
        "heatmap_png": pa.array([list(c) for c in batch["heatmap_png"]], type=MASKS_SCHEMA.field("heatmap_png").type),
        "heatmap_scale": pa.array([list(c) for c in batch["heatmap_scale"]], type=MASKS_SCHEMA.field("heatmap_scale").type),
    }
    arrays = [columns[f.name] if f.name in columns else pa.array(batch[f.name], type=f.type) for f in MASKS_SCHEMA]
    return pa.Table.from_arrays(arrays, schema=MASKS_SCHEMA)


def scores_table(batch: dict[str, np.ndarray], scored_at: dt.datetime) -> pa.Table:
    """Cast a scored batch to the scores schema (partition columns kept aside)."""
    n = len(batch["score"])
    columns = {
        "schema_version": np.full(n, SCORES_SCHEMA_VERSION, dtype=np.int16),
        "frame_scores": pa.array(list(batch["frame_scores"]), type=SCORES_SCHEMA.field("frame_scores").type),
        "scored_at": pa.array([scored_at] * n, type=pa.timestamp("us", tz="UTC")),
        "reason": pa.array([r or None for r in batch["reason"]] if "reason" in batch else [None] * n, type=pa.string()),
    }
    arrays = []
    for field in SCORES_SCHEMA:
        value = columns.get(field.name, batch.get(field.name))
        if value is None:
            raise KeyError(f"scored batch lacks column {field.name!r}")
        arrays.append(value if isinstance(value, pa.Array) else pa.array(value, type=field.type))
    return pa.Table.from_arrays(arrays, schema=SCORES_SCHEMA)


def objects_table(batch: dict[str, np.ndarray]) -> pa.Table:
    """The `objects` rows of a scored batch, one table row per clip (column `objects`: the clip's
    `OBJECTS_SCHEMA` rows as a list, worst first), aligned with its `scores` rows so the writer keeps,
    drops and orders them with the clips; `explode_objects` makes them the table's own rows. The batch's
    `objects` column holds the scorer's object dicts per clip (frame within the clip); each row names
    its clip and its frame in the video."""
    per_clip = []
    for i, found in enumerate(batch["objects"]):
        start, step = int(batch["start_frame"][i]), int(batch["frame_step"][i])
        clip = {"schema_version": SCORES_SCHEMA_VERSION, "run_id": batch["run_id"][i], "clip_id": batch["clip_id"][i],
                "video_uri": batch["video_uri"][i], "clip_index": int(batch["clip_index"][i]),
                "model_name": batch["model_name"][i], "model_version": batch["model_version"][i],
                "frame_height": int(batch["frame_height"][i]), "frame_width": int(batch["frame_width"][i])}
        per_clip.append([{**clip, **obj, "frame": start + int(obj["frame"]) * step} for obj in found])
    rows = pa.array(per_clip, type=pa.list_(pa.struct(list(OBJECTS_SCHEMA))))
    return pa.table({"objects": rows})


def explode_objects(per_clip: pa.Table) -> pa.Table:
    """`objects_table`'s one row per clip -> the `objects` table, one row per object, in clip order."""
    import pyarrow.compute as pc

    flat = pc.list_flatten(per_clip["objects"])
    if len(flat) == 0:
        return OBJECTS_SCHEMA.empty_table()
    return pa.Table.from_struct_array(flat).cast(OBJECTS_SCHEMA)


def write_video_results(fs, output: Location, date: str, camera: str, name: str, scores: pa.Table, sides: dict[str, pa.Table]) -> str:
    """One video's result files under `output`: each side table (masks, objects, events) at
    <table>/date=<date>/camera=<camera>/<name>, then its scores file, last: a scores file means the video is
    complete. Returns the scores file's path."""
    for table, rows in sides.items():
        write_parquet_atomic(fs, output.join(table, f"date={date}", f"camera={camera}", name).path, rows)
    path = output.join("scores", f"date={date}", f"camera={camera}", name).path
    write_parquet_atomic(fs, path, scores)
    return path
