"""The writer stage: each video's scored clips gathered and written as one Parquet file."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from vad.config import DecodeConfig, StorageConfig
from vad.io.sources import validate_camera, validate_date
from vad.io.storage import filesystem, parse_uri
from vad.results.tables import masks_table, scores_table


def source_metadata(metadata: dict | None, size: int, mtime: float) -> dict:
    """Schema metadata of a result file plus the size and mtime of the video it was made from,
    so a run can adopt results a killed run wrote but never entered in the manifest."""
    return {**(metadata or {}), b"vad.source_size": str(size).encode(), b"vad.source_mtime": repr(mtime).encode()}


class WriteScores:
    """Gathers each video's scored clips and writes them, once all have arrived, as one Parquet
    file (plus a masks file for scorers that localise) named by video, model and decode.

    A re-run therefore overwrites rather than duplicates, and a video whose decoding or scoring
    failed part-way is never written. Clips delivered twice (retried tasks) are kept once.
    Returns one row per video written; must run as a single actor so each video's clips meet."""

    def __init__(self, *, output_uri: str, storage: StorageConfig | None, run_id: str, decode: DecodeConfig, errors=None):
        from vad.results.schema import signature_of

        self.root = parse_uri(output_uri).join("scores")
        self.masks_root = parse_uri(output_uri).join("masks")
        self.fs = filesystem(self.root, storage)
        self.run_id = run_id
        self.decode_signature = signature_of(decode)
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
        from vad.io.storage import write_parquet_atomic
        from vad.results.ledger import error_row, report_errors
        from vad.results.schema import result_file_name

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
