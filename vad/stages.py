"""The Ray Data stages of the scoring pipeline: decode -> score -> write.

Each stage is pure batch-to-batch work; resources (`num_gpus`, `concurrency`,
`batch_size`) are set where the stages are composed, in `vad.pipeline`.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from vad.config import DecodeConfig, StorageConfig
from vad.decode import iter_clip_batches
from vad.schema import MASKS_SCHEMA, SCORES_SCHEMA, SCORES_SCHEMA_VERSION, clip_id
from vad.sources import VideoRef, validate_camera, validate_date
from vad.storage import filesystem, parse_uri


def decode_videos(
    batch: dict[str, np.ndarray], *, decode: DecodeConfig, storage: StorageConfig | None
) -> Iterator[dict[str, np.ndarray]]:
    """Listing rows in, clip batches out, one video at a time (a generator, so memory stays bounded)."""
    columns = list(batch)
    for i in range(len(batch["uri"])):
        row = {name: batch[name][i] for name in columns}
        video = VideoRef.from_row(row)
        yield from iter_clip_batches(video, decode, storage)


def pick_device(requested: str) -> str:
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("scorer.device is 'cuda' but this worker has no CUDA device")
    return requested


class ScoreClips:
    """Loads a checkpoint once per actor; scores clip batches and drops the frame column."""

    def __init__(self, *, checkpoint: str, storage: StorageConfig | None, device: str, run_id: str, decode: DecodeConfig):
        import torch

        from vad.checkpoint import check_decode_matches, load_checkpoint

        self.device = pick_device(device)
        self.loaded = load_checkpoint(checkpoint, storage)
        check_decode_matches(self.loaded, decode)
        self.model = self.loaded.model.to(self.device).eval()
        self.run_id = run_id
        self.decode = decode
        self.autocast = self.device == "cuda"
        torch.set_grad_enabled(False)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        frames = batch.pop("frames")
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.autocast):
            clips = torch.from_numpy(np.ascontiguousarray(frames)).to(self.device, non_blocking=True)
            output = self.model.score(clips.float().div_(255.0))
        score = output.score.float().cpu().numpy().astype(np.float32)
        n = len(score)
        threshold = np.float32(self.loaded.threshold)
        batch["clip_id"] = np.array(
            [
                clip_id(uri, int(idx), self.decode.clip_len, self.decode.stride, self.decode.frame_step)
                for uri, idx in zip(batch["video_uri"], batch["clip_index"])
            ],
            dtype=object,
        )
        batch["score"] = score
        batch["frame_scores"] = output.frame_scores.float().cpu().numpy().astype(np.float32)
        batch["threshold"] = np.full(n, threshold, dtype=np.float32)
        batch["is_anomaly"] = score > threshold
        batch["model_name"] = np.array([self.loaded.name] * n, dtype=object)
        batch["model_version"] = np.array([self.loaded.version] * n, dtype=object)
        batch["run_id"] = np.array([self.run_id] * n, dtype=object)
        batch["frame_step"] = np.full(n, self.decode.frame_step, dtype=np.int16)
        if output.mask is not None:
            masks = output.mask.cpu().numpy()
            pngs = np.empty(n, dtype=object)  # one list of PNGs per clip, kept 1-D
            for i, clip in enumerate(masks):
                pngs[i] = [encode_mask(frame) for frame in clip]
            batch["mask_png"] = pngs
            batch["anomalous_pixels"] = masks.reshape(n, masks.shape[1], -1).sum(axis=2).astype(np.int32)
            batch["mask_height"] = np.full(n, masks.shape[2], dtype=np.int32)
            batch["mask_width"] = np.full(n, masks.shape[3], dtype=np.int32)
        return batch


def encode_mask(mask: np.ndarray) -> bytes:
    """A boolean (H, W) mask as a 1-bit PNG (a few hundred bytes for a typical sparse mask)."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(mask.astype(np.uint8) * 255).convert("1").save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def decode_mask(png: bytes) -> np.ndarray:
    import io

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


class WriteScores:
    """Writes each batch as one Parquet file per (date, camera) partition; returns what it wrote."""

    def __init__(self, *, output_uri: str, storage: StorageConfig | None, run_id: str):
        self.root = parse_uri(output_uri).join("scores")
        self.masks_root = parse_uri(output_uri).join("masks")
        self.fs = filesystem(self.root, storage)
        self.run_id = run_id

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from vad.sinks import write_parquet_atomic

        table = scores_table(batch, dt.datetime.now(dt.timezone.utc))
        masks = masks_table(batch) if "mask_png" in batch else None
        dates = np.asarray(batch["date"], dtype=object)
        cameras = np.asarray(batch["camera"], dtype=object)
        out: dict[str, list] = {"path": [], "date": [], "camera": [], "rows": [], "anomalies": []}
        for raw_date, raw_camera in sorted(set(zip(dates, cameras))):
            part = table.filter(pa.array((dates == raw_date) & (cameras == raw_camera)))
            # Re-validated here: these strings become folder names.
            date, camera = validate_date(str(raw_date)), validate_camera(str(raw_camera))
            path = self.root.join(f"date={date}", f"camera={camera}", f"part-{self.run_id}-{uuid.uuid4().hex[:12]}.parquet").path
            write_parquet_atomic(self.fs, path, part)
            if masks is not None:
                mask_part = masks.filter(pa.array((dates == raw_date) & (cameras == raw_camera)))
                mask_path = self.masks_root.join(f"date={date}", f"camera={camera}", path.rsplit("/", 1)[1]).path
                write_parquet_atomic(self.fs, mask_path, mask_part)
            out["path"].append(path)
            out["date"].append(date)
            out["camera"].append(camera)
            out["rows"].append(part.num_rows)
            out["anomalies"].append(int(pc.sum(part["is_anomaly"]).as_py() or 0))
        return {
            "path": np.array(out["path"], dtype=object),
            "date": np.array(out["date"], dtype=object),
            "camera": np.array(out["camera"], dtype=object),
            "rows": np.array(out["rows"], dtype=np.int64),
            "anomalies": np.array(out["anomalies"], dtype=np.int64),
        }


class ExtractFeatures:
    """Clip batches in, features out (C3D fc6 4096-d or I3D 1024-d); the frame column is dropped.

    Expects RGB clips (decode.grayscale = false) at the extractor's input size. `weights` is a
    state dict path or uri (c3d.pickle layout, or the output of `vad.extractors.i3d_convert`);
    without one the network is randomly initialised and every row says `pretrained = False`."""

    def __init__(self, *, extractor: str, weights: str | None = None, storage: StorageConfig | None = None, device: str = "auto"):
        import io

        import torch

        from vad.extractors import build_extractor
        from vad.storage import read_bytes

        state = torch.load(io.BytesIO(read_bytes(weights, storage)), weights_only=True) if weights else None
        self.device = pick_device(device)
        self.model = build_extractor(extractor, state_dict=state).to(self.device).eval()
        self.name = extractor

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        frames = batch.pop("frames")
        if frames.ndim != 5:
            raise ValueError(f"{self.name} needs RGB clips (B, T, H, W, 3); set decode.grayscale: false")
        with torch.inference_mode():
            clips = torch.from_numpy(np.ascontiguousarray(frames)).to(self.device)
            clips = clips.float() if self.name == "c3d" else clips.float().div_(255.0)
            features = self.model(clips).float().cpu().numpy()
        batch["features"] = features
        batch["extractor"] = np.array([self.name] * len(features), dtype=object)
        batch["pretrained"] = np.full(len(features), bool(self.model.pretrained))
        return batch
