"""The Ray Data stages of the scoring pipeline: decode -> score -> write.

Each stage is pure batch-to-batch work; resources (`num_gpus`, `concurrency`,
`batch_size`) are set where the stages are composed, in `vad.pipeline`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from vad.config import DecodeConfig, StorageConfig
from vad.decode import iter_clip_batches
from vad.schema import MASKS_SCHEMA, SCORES_SCHEMA, SCORES_SCHEMA_VERSION, clip_id
from vad.sources import VideoRef, validate_camera, validate_date
from vad.storage import filesystem, parse_uri


def decode_tasks(listing: list[dict], decode: DecodeConfig) -> list[dict]:
    """Listing rows -> decode task rows: a long video becomes several (`part`, `parts`) rows."""
    from vad.decode import split_parts

    tasks = []
    for row in listing:
        parts = split_parts(VideoRef.from_row(row), decode)
        tasks += [{**row, "part": part, "parts": parts} for part in range(parts)]
    return tasks


def decode_videos(
    batch: dict[str, np.ndarray], *, decode: DecodeConfig, storage: StorageConfig | None, errors=None
) -> Iterator[dict[str, np.ndarray]]:
    """Decode task rows in, clip batches out, one video (or share of one) at a time (a generator,
    so memory stays bounded).

    With an `errors` log (a `vad.ledger.ErrorLog` actor), a video that fails is reported there
    and the task goes on with the next one; clips it already yielded are dropped by the writer,
    which only writes complete videos. Without one, the failure is raised."""
    from vad.decode import BadVideo
    from vad.ledger import error_row, report_errors

    columns = list(batch)
    for i in range(len(batch["uri"])):
        row = {name: batch[name][i] for name in columns}
        video = VideoRef.from_row(row)
        try:
            yield from iter_clip_batches(video, decode, storage, int(row.get("part", 0)), int(row.get("parts", 1)))
        except Exception as exc:
            if errors is None:
                raise
            if isinstance(exc, BadVideo):
                failure = error_row(video.uri, exc.stage, exc, permanent=True, size=video.size)
            else:  # I/O (after the store's retries) or anything unforeseen: tried again next run
                failure = error_row(video.uri, "read" if isinstance(exc, OSError) else "decode", exc, size=video.size)
            report_errors(errors, [failure])


class ScoreClips:
    """Loads a checkpoint once per actor; scores clip batches and drops the frame column.

    A batch that fails is scored again video by video; videos that still fail are reported
    to the run's error log and dropped (their other clips are then never written)."""

    def __init__(
        self, *, checkpoint: str, storage: StorageConfig | None, device: str, run_id: str, decode: DecodeConfig, errors=None,
        precision: str = "auto", memory_format: str = "auto", compile: bool = False,
    ):
        import torch

        from vad.checkpoint import check_decode_matches, load_checkpoint
        from vad.inference import InferenceOptions, prepare

        self.options = InferenceOptions.resolve(device, precision, memory_format, compile)
        self.device = self.options.device
        self.loaded = load_checkpoint(checkpoint, storage)
        check_decode_matches(self.loaded, decode)
        self.model, self.score_fn = prepare(self.loaded.model, self.options, "score")
        self.run_id = run_id
        self.decode = decode
        self.errors = errors  # a vad.ledger.ErrorLog actor; None: a failing batch raises
        torch.set_grad_enabled(False)

    def _score(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        import torch

        with torch.inference_mode(), self.options.autocast():
            clips = torch.from_numpy(np.ascontiguousarray(frames)).to(self.device, non_blocking=True)
            output = self.score_fn(clips.float().div_(255.0))
        mask = output.mask.cpu().numpy() if output.mask is not None else None
        return output.score.float().cpu().numpy().astype(np.float32), output.frame_scores.float().cpu().numpy().astype(np.float32), mask

    def _score_each_video(self, batch: dict[str, np.ndarray], frames: np.ndarray):
        """After a failed batch: score video by video, report the ones that fail, keep the rest."""
        from vad.ledger import error_row, report_errors

        uris = np.asarray(batch["video_uri"], dtype=object)
        keep = np.zeros(len(uris), dtype=bool)
        parts, failures = [], []
        for uri in dict.fromkeys(uris):
            rows = uris == uri
            try:
                parts.append((rows, self._score(frames[rows])))
                keep |= rows
            except Exception as exc:
                failures.append(error_row(str(uri), "score", exc))
        if self.errors is None and failures:
            raise RuntimeError(f"scoring failed: {failures[0]['message']}")
        report_errors(self.errors, failures)
        n, clip_len = int(keep.sum()), frames.shape[1]
        score, frame_scores = np.zeros(n, np.float32), np.zeros((n, clip_len), np.float32)
        mask = None
        position = np.cumsum(keep) - 1
        for rows, (s, f, m) in parts:
            score[position[rows]], frame_scores[position[rows]] = s, f
            if m is not None:
                if mask is None:
                    mask = np.zeros((n, *m.shape[1:]), dtype=bool)
                mask[position[rows]] = m
        if mask is None and self.loaded.model.localises:
            mask = np.zeros((0, clip_len, 1, 1), dtype=bool)
        kept = {name: np.asarray(column)[keep] for name, column in batch.items()}
        return kept, (score, frame_scores, mask)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.score_batch(batch)

    def score_batch(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        frames = batch.pop("frames")
        try:
            score, frame_scores, masks = self._score(frames)
        except Exception:
            batch, (score, frame_scores, masks) = self._score_each_video(batch, frames)
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
        batch["frame_scores"] = frame_scores
        batch["threshold"] = np.full(n, threshold, dtype=np.float32)
        batch["is_anomaly"] = score > threshold
        batch["model_name"] = np.array([self.loaded.name] * n, dtype=object)
        batch["model_version"] = np.array([self.loaded.version] * n, dtype=object)
        batch["run_id"] = np.array([self.run_id] * n, dtype=object)
        batch["frame_step"] = np.full(n, self.decode.frame_step, dtype=np.int16)
        if masks is not None:
            pngs = np.empty(n, dtype=object)  # one list of PNGs per clip, kept 1-D
            for i, clip in enumerate(masks):
                pngs[i] = [encode_mask(frame) for frame in clip]
            batch["mask_png"] = pngs
            batch["anomalous_pixels"] = masks.reshape(n, masks.shape[1], masks.shape[2] * masks.shape[3]).sum(axis=2).astype(np.int32)
            batch["mask_height"] = np.full(n, masks.shape[2], dtype=np.int32)
            batch["mask_width"] = np.full(n, masks.shape[3], dtype=np.int32)
        return batch


class DecodeAndScoreClips(ScoreClips):
    """Decoding and scoring in one actor, for clusters without GPUs: each call takes one decode
    task row (a video or a share of one), decodes it and yields its clips scored in batches of
    `batch_size`.

    Spelled out rather than left to Ray Data's operator fusion, which bundles as many task rows
    into one call as the scoring batch has clips (so one actor took a whole small archive while
    the others were shut down idle), and which, when decode and scoring ask for different CPUs,
    leaves separate decode tasks waiting forever for CPUs the actors hold."""

    def __init__(self, *, batch_size: int, storage: StorageConfig | None, **kwargs):
        super().__init__(storage=storage, **kwargs)
        self.batch_size = batch_size
        self.storage = storage

    def __call__(self, batch: dict[str, np.ndarray]) -> Iterator[dict[str, np.ndarray]]:
        for clips in decode_in_batches(batch, self.batch_size, decode=self.decode, storage=self.storage, errors=self.errors):
            yield self.score_batch(clips)


def decode_in_batches(
    batch: dict[str, np.ndarray], batch_size: int, *, decode: DecodeConfig, storage: StorageConfig | None, errors=None
) -> Iterator[dict[str, np.ndarray]]:
    """`decode_videos` regrouped into batches of about `batch_size` clips (the last may be smaller)."""
    pending: list[dict[str, np.ndarray]] = []
    pending_clips = 0
    for clips in decode_videos(batch, decode=decode, storage=storage, errors=errors):
        pending.append(clips)
        pending_clips += len(clips["clip_index"])
        if pending_clips >= batch_size:
            yield _concatenate(pending)
            pending, pending_clips = [], 0
    if pending:
        yield _concatenate(pending)


def map_decoded_clips(
    ds, *, model_stage: type, fused_stage: type, constructor_kwargs: dict, decode: DecodeConfig,
    storage: StorageConfig | None, batch_size: int, concurrency: int, num_cpus: float, num_gpus: float,
    errors=None,
):
    """`ds` (decode task rows, `decode_tasks`) decoded and run through a model actor stage.

    With GPUs: decode tasks on the CPUs (`decode.num_cpus` each), then `model_stage` actors on the
    GPUs with batches of `batch_size` clips from many videos. Without: `fused_stage` (the model stage
    that decodes its own rows) takes one task row per call, one call in flight per actor, so a
    ready actor cannot hoard the rows the others wait for (see `DecodeAndScoreClips`)."""
    import ray

    if num_gpus > 0:
        ds = ds.map_batches(
            decode_videos, batch_size=1, fn_kwargs={"decode": decode, "storage": storage, "errors": errors}, num_cpus=decode.num_cpus
        )
        return ds.map_batches(
            model_stage,
            fn_constructor_kwargs=constructor_kwargs,
            batch_size=batch_size,
            compute=ray.data.ActorPoolStrategy(size=concurrency),
            num_cpus=num_cpus,
            num_gpus=num_gpus,
        )
    return ds.map_batches(
        fused_stage,
        fn_constructor_kwargs={**constructor_kwargs, "decode": decode, "storage": storage, "batch_size": batch_size},
        batch_size=1,
        compute=ray.data.ActorPoolStrategy(size=concurrency, max_tasks_in_flight_per_actor=1),
        num_cpus=num_cpus,
    )


def _concatenate(batches: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    if len(batches) == 1:
        return batches[0]
    return {name: np.concatenate([b[name] for b in batches]) for name in batches[0]}


def source_metadata(metadata: dict | None, size: int, mtime: float) -> dict:
    """Schema metadata of a result file plus the size and mtime of the video it was made from,
    so a run can adopt results a killed run wrote but never entered in the manifest."""
    return {**(metadata or {}), b"vad.source_size": str(size).encode(), b"vad.source_mtime": repr(mtime).encode()}


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
    """Gathers each video's scored clips and writes them, once all have arrived, as one Parquet
    file (plus a masks file for scorers that localise) named by video, model and decode.

    A re-run therefore overwrites rather than duplicates, and a video whose decoding or scoring
    failed part-way is never written. Clips delivered twice (retried tasks) are kept once.
    Returns one row per video written; must run as a single actor so each video's clips meet."""

    def __init__(self, *, output_uri: str, storage: StorageConfig | None, run_id: str, decode: DecodeConfig, errors=None):
        from vad.schema import decode_signature

        self.root = parse_uri(output_uri).join("scores")
        self.masks_root = parse_uri(output_uri).join("masks")
        self.fs = filesystem(self.root, storage)
        self.run_id = run_id
        self.decode_signature = decode_signature(decode.clip_len, decode.stride, decode.frame_step, decode.resize, decode.grayscale, decode.backend)
        self.errors = errors
        self._pending: dict[str, dict[int, tuple[pa.Table, pa.Table | None]]] = {}

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        table = scores_table(batch, dt.datetime.now(dt.timezone.utc))
        masks = masks_table(batch) if "mask_png" in batch else None
        uris = np.asarray(batch["video_uri"], dtype=object)
        out: dict[str, list] = {name: [] for name in ("video_uri", "path", "date", "camera", "rows", "anomalies")}
        for uri in dict.fromkeys(uris):
            rows = np.flatnonzero(uris == uri)
            expected = int(batch["clips_in_video"][rows[0]])
            clips = self._pending.setdefault(str(uri), {})
            for i in rows:
                clips[int(batch["clip_index"][i])] = (table.slice(i, 1), masks.slice(i, 1) if masks is not None else None)
            if len(clips) < expected:
                continue
            del self._pending[str(uri)]
            first = rows[0]
            written = self._write(
                str(uri), str(batch["date"][first]), str(batch["camera"][first]), clips,
                int(batch["video_size"][first]), float(batch["video_mtime"][first]),
            )
            if written is not None:
                for name, value in written.items():
                    out[name].append(value)
        return {
            "video_uri": np.array(out["video_uri"], dtype=object),
            "path": np.array(out["path"], dtype=object),
            "date": np.array(out["date"], dtype=object),
            "camera": np.array(out["camera"], dtype=object),
            "rows": np.array(out["rows"], dtype=np.int64),
            "anomalies": np.array(out["anomalies"], dtype=np.int64),
        }

    def _write(self, uri: str, raw_date: str, raw_camera: str, clips: dict, size: int, mtime: float) -> dict | None:
        from vad.ledger import error_row, report_errors
        from vad.schema import result_file_name
        from vad.sinks import write_parquet_atomic

        ordered = [clips[k] for k in sorted(clips)]
        part = pa.concat_tables([t for t, _ in ordered])
        part = part.replace_schema_metadata(source_metadata(part.schema.metadata, size, mtime))
        name = result_file_name(uri, part["model_name"][0].as_py(), part["model_version"][0].as_py(), self.decode_signature)
        try:
            # Re-validated here: these strings become folder names.
            date, camera = validate_date(raw_date), validate_camera(raw_camera)
            path = self.root.join(f"date={date}", f"camera={camera}", name).path
            if ordered[0][1] is not None:
                mask_path = self.masks_root.join(f"date={date}", f"camera={camera}", name).path
                write_parquet_atomic(self.fs, mask_path, pa.concat_tables([m for _, m in ordered]))
            write_parquet_atomic(self.fs, path, part)  # last: a scores file means the video is complete
        except Exception as exc:
            if self.errors is None:
                raise
            report_errors(self.errors, [error_row(uri, "write", exc)])
            return None
        anomalies = int(pc.sum(part["is_anomaly"]).as_py() or 0)
        return {"video_uri": uri, "path": path, "date": date, "camera": camera, "rows": part.num_rows, "anomalies": anomalies}


class ExtractFeatures:
    """Clip batches in, features out (C3D fc6 4096-d or I3D 1024-d); the frame column is dropped.

    Expects RGB clips (decode.grayscale = false) at the extractor's input size. `weights` is a
    state dict path or uri (c3d.pickle layout, or the output of `vad.extractors.i3d_convert`);
    without one the network is randomly initialised and every row says `pretrained = False`."""

    def __init__(
        self, *, extractor: str, weights: str | None = None, storage: StorageConfig | None = None, device: str = "auto",
        precision: str = "auto", memory_format: str = "auto", compile: bool = False,
    ):
        import io

        import torch

        from vad.extractors import build_extractor
        from vad.inference import InferenceOptions, prepare
        from vad.storage import read_bytes

        state = torch.load(io.BytesIO(read_bytes(weights, storage)), weights_only=True) if weights else None
        self.options = InferenceOptions.resolve(device, precision, memory_format, compile)
        self.device = self.options.device
        self.model, self.extract = prepare(build_extractor(extractor, state_dict=state), self.options)
        self.name = extractor

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        frames = batch.pop("frames")
        if frames.ndim != 5:
            raise ValueError(f"{self.name} needs RGB clips (B, T, H, W, 3); set decode.grayscale: false")
        with torch.inference_mode(), self.options.autocast():
            clips = torch.from_numpy(np.ascontiguousarray(frames)).to(self.device)
            clips = clips.float() if self.name == "c3d" else clips.float().div_(255.0)
            features = self.extract(clips).float().cpu().numpy()
        batch["features"] = features
        batch["extractor"] = np.array([self.name] * len(features), dtype=object)
        batch["pretrained"] = np.full(len(features), bool(self.model.pretrained))
        return batch


class DecodeAndExtractFeatures(ExtractFeatures):
    """`ExtractFeatures` that decodes its own task rows, for clusters without GPUs (see
    `DecodeAndScoreClips` for why the two stages are not left to Ray Data's fusion there)."""

    def __init__(self, *, batch_size: int, decode: DecodeConfig, storage: StorageConfig | None = None, **kwargs):
        super().__init__(storage=storage, **kwargs)
        self.batch_size, self.decode, self.storage = batch_size, decode, storage

    def __call__(self, batch: dict[str, np.ndarray]) -> Iterator[dict[str, np.ndarray]]:
        for clips in decode_in_batches(batch, self.batch_size, decode=self.decode, storage=self.storage):
            yield super().__call__(clips)
