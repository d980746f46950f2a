"""The scoring job's bookkeeping: the `errors` table and the `manifest` of what was scored.

Errors are reported by the Ray stages to one small actor on the driver's node and written
by the driver at the end of each run. The manifest is written by the driver as result files
arrive; an object listed there as scored (or permanently bad) by the same model and decode,
with the same size and mtime, is not scored again.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
import uuid
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.fs as pafs

from vad.config import StorageConfig
from vad.io.storage import filesystem, parse_uri, write_parquet_atomic
from vad.results.schema import ERRORS_SCHEMA, MANIFEST_SCHEMA, SCORES_SCHEMA_VERSION

log = logging.getLogger(__name__)

MAX_MESSAGE = 2000


def error_row(uri: str, stage: str, exc: BaseException | None = None, *, error_class: str | None = None,
              message: str | None = None, permanent: bool = False, size: int | None = None) -> dict:
    """One `errors` row (run_id is filled in when the run's errors are written)."""
    text = message if message is not None else f"{exc}"
    return {
        "uri": uri,
        "stage": stage,
        "error_class": error_class or (type(exc).__name__ if exc is not None else "Error"),
        "message": text[:MAX_MESSAGE],
        "permanent": permanent,
        "size": size,
        "recorded_at": dt.datetime.now(dt.timezone.utc),
    }


class ErrorLog:
    """Collects error rows from Ray tasks and actors (run as a Ray actor, see `start_error_log`)."""

    def __init__(self):
        self._rows: list[dict] = []

    def record(self, rows: list[dict]) -> None:
        self._rows.extend(rows)

    def rows(self) -> list[dict]:
        return list(self._rows)


def start_error_log():
    """An `ErrorLog` actor pinned to this (the driver's) node, so losing a worker node loses no errors."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = ray.get_runtime_context().get_node_id()
    actor = ray.remote(num_cpus=0, max_restarts=0)(ErrorLog)
    return actor.options(scheduling_strategy=NodeAffinitySchedulingStrategy(here, soft=False)).remote()


def report_errors(errors, rows: list[dict]) -> None:
    """Send error rows to the run's error log (an actor, or a plain `ErrorLog` in one process)
    and wait until it has them."""
    if not rows:
        return
    if isinstance(errors, ErrorLog):
        errors.record(rows)
        return
    import ray

    ray.get(errors.record.remote(rows))


def unique_errors(rows: list[dict]) -> list[dict]:
    """One row per (uri, stage, class): retried tasks may report the same failure twice."""
    seen, out = set(), []
    for row in rows:
        key = (row["uri"], row["stage"], row["error_class"])
        if key not in seen:
            seen.add(key)
            out.append(row)
    return out


def write_errors(output_uri: str, run_date: str, run_id: str, rows: list[dict], storage: StorageConfig | None = None) -> str | None:
    if not rows:
        return None
    root = parse_uri(output_uri).join("errors", f"date={run_date}")
    fs = filesystem(root, storage)
    table = pa.Table.from_pylist(
        [{"schema_version": SCORES_SCHEMA_VERSION, "run_id": run_id, **row} for row in rows], schema=ERRORS_SCHEMA
    )
    path = root.join(f"errors-{run_id}.parquet").path
    write_parquet_atomic(fs, path, table)
    return path


@dataclass(frozen=True)
class ManifestKey:
    uri: str
    model_name: str
    model_version: str
    decode: str


@dataclass(frozen=True)
class ManifestEntry:
    size: int
    mtime: float
    status: str
    scores_path: str | None


def read_manifest(output_uri: str, storage: StorageConfig | None = None) -> dict[ManifestKey, ManifestEntry]:
    """The newest manifest entry per (uri, model, decode); empty when there is none yet."""
    root = parse_uri(output_uri).join("manifest")
    fs = filesystem(root, storage)
    infos = fs.get_file_info(pafs.FileSelector(root.path, recursive=True, allow_not_found=True))
    files = sorted(f.path for f in infos if f.is_file and f.path.endswith(".parquet") and "/." not in f.path)
    if not files:
        return {}
    table = pads.dataset(files, schema=MANIFEST_SCHEMA, filesystem=fs, format="parquet").to_table()
    table = table.sort_by([("recorded_at", "ascending")])
    latest: dict[ManifestKey, ManifestEntry] = {}
    for row in table.to_pylist():
        key = ManifestKey(row["uri"], row["model_name"], row["model_version"], row["decode"])
        latest[key] = ManifestEntry(row["size"], row["mtime"], row["status"], row["scores_path"])
    return latest


def is_up_to_date(entry: ManifestEntry | None, size: int, mtime: float) -> bool:
    return entry is not None and entry.size == size and abs(entry.mtime - mtime) < 1e-3


class ManifestWriter:
    """Appends manifest rows in small atomic files, flushed every `flush_every` rows or `flush_s`
    seconds, so a killed run redoes at most that much work."""

    def __init__(self, output_uri: str, run_date: str, run_id: str, storage: StorageConfig | None = None,
                 flush_every: int = 256, flush_s: float = 30.0):
        self.root = parse_uri(output_uri).join("manifest", f"date={run_date}")
        self.fs = filesystem(self.root, storage)
        self.run_id = run_id
        self.flush_every = flush_every
        self.flush_s = flush_s
        self._pending: list[dict] = []
        self._last_flush = time.monotonic()
        self.written = 0

    def add(self, *, uri: str, size: int, mtime: float, key: ManifestKey, status: str, clips: int, scores_path: str | None) -> None:
        self._pending.append(
            {
                "schema_version": SCORES_SCHEMA_VERSION,
                "run_id": self.run_id,
                "uri": uri,
                "size": size,
                "mtime": mtime,
                "model_name": key.model_name,
                "model_version": key.model_version,
                "decode": key.decode,
                "status": status,
                "clips": clips,
                "scores_path": scores_path,
                "recorded_at": dt.datetime.now(dt.timezone.utc),
            }
        )
        if len(self._pending) >= self.flush_every or time.monotonic() - self._last_flush > self.flush_s:
            self.flush()

    def flush(self) -> None:
        self._last_flush = time.monotonic()
        if not self._pending:
            return
        table = pa.Table.from_pylist(self._pending, schema=MANIFEST_SCHEMA)
        write_parquet_atomic(self.fs, self.root.join(f"part-{self.run_id}-{uuid.uuid4().hex[:8]}.parquet").path, table)
        self.written += len(self._pending)
        self._pending = []


def adopt_finished(output_uri: str, videos: list, key_of, storage: StorageConfig | None = None) -> list[tuple]:
    """Videos whose complete result file is already there, made from the same object (size and
    mtime in its metadata) by this model and decode: what a killed run wrote after its last
    manifest flush. Returns (video, path, clips) triples; costs one listing per partition folder
    and one footer read per file found."""
    import pyarrow.parquet as pq

    from vad.results.schema import result_file_name

    root = parse_uri(output_uri).join("scores")
    fs = filesystem(root, storage)
    by_folder: dict[str, list] = {}
    for video in videos:
        by_folder.setdefault(root.join(f"date={video.date}", f"camera={video.camera}").path, []).append(video)
    adopted = []
    for folder, members in by_folder.items():
        present = {i.base_name for i in fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True)) if i.is_file}
        for video in members:
            key = key_of(video)
            name = result_file_name(video.uri, key.model_name, key.model_version, key.decode)
            if name not in present:
                continue
            path = f"{folder}/{name}"
            with fs.open_input_file(path) as handle:
                meta = pq.read_metadata(handle)
            found = meta.metadata or {}
            size, mtime = found.get(b"vad.source_size"), found.get(b"vad.source_mtime")
            if size is not None and mtime is not None and is_up_to_date(ManifestEntry(int(size), float(mtime), "scored", path), video.size, video.mtime):
                adopted.append((video, path, meta.num_rows))
    return adopted
