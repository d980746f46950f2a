"""Arrow tables of scored clip batches: the `scores` and `masks` rows, and the PNG codec of mask frames."""

from __future__ import annotations

import datetime as dt
import io

import numpy as np
import pyarrow as pa

from vad.results.schema import MASKS_SCHEMA, SCORES_SCHEMA, SCORES_SCHEMA_VERSION


def encode_mask(mask: np.ndarray) -> bytes:
    """A boolean (H, W) mask as a 1-bit PNG (a few hundred bytes for a typical sparse mask)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(mask.astype(np.uint8) * 255).convert("1").save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def decode_mask(png: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png)).convert("L")) > 0


def masks_table(batch: dict[str, np.ndarray]) -> pa.Table:
    n = len(batch["clip_id"])
    columns = {
        "schema_version": pa.array(np.full(n, SCORES_SCHEMA_VERSION, dtype=np.int16)),
        "height": pa.array(batch["mask_height"], type=pa.int32()),
        "width": pa.array(batch["mask_width"], type=pa.int32()),
        "mask_png": pa.array([list(c) for c in batch["mask_png"]], type=MASKS_SCHEMA.field("mask_png").type),
        "anomalous_pixels": pa.array([list(c) for c in batch["anomalous_pixels"]], type=MASKS_SCHEMA.field("anomalous_pixels").type),
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
    }
    arrays = []
    for field in SCORES_SCHEMA:
        value = columns.get(field.name, batch.get(field.name))
        if value is None:
            raise KeyError(f"scored batch lacks column {field.name!r}")
        arrays.append(value if isinstance(value, pa.Array) else pa.array(value, type=field.type))
    return pa.Table.from_arrays(arrays, schema=SCORES_SCHEMA)
