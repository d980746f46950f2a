"""The writer stage: each video's scored clips gathered and written as one Parquet file.

Scored batches are turned into Arrow tables by a Ray Data stage (`route_to_writers`, as parallel as
Ray Data likes) and each video's rows are sent to one of `output.writers` `WriteScores` actors, chosen
by a hash of the video, so every clip of a video meets in the same actor and the video is written
whole, once, by it. More writers raise the ceiling (`bench/fleet.py` measures it) without giving up
the whole-video write.
"""

from __future__ import annotations

import datetime as dt
import hashlib

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from vad.config import DecodeConfig, ScoreJobConfig, StorageConfig
from vad.io.sources import validate_camera, validate_date
from vad.io.storage import filesystem, parse_uri
from vad.results.events import events_table
from vad.results.tables import explode_objects, masks_table, objects_table, scores_table, source_metadata, write_video_results

WRITTEN_COLUMNS = ("video_uri", "path", "date", "camera", "rows", "anomalies", "events")


def writer_of(video_uri: str, writers: int) -> int:
    """The writer that owns a video (stable across processes, unlike `hash`)."""
    return int.from_bytes(hashlib.blake2b(video_uri.encode(), digest_size=4).digest(), "big") % writers


class WriteScores:
    """Gathers the clips of the videos routed to it and writes each video, once all its clips have
    arrived, as one Parquet file (plus masks and objects files for scorers that give them) named by video, model
    and decode. A re-run therefore overwrites rather than duplicates, and a video whose decoding or
    scoring failed part-way is never written. Clips delivered twice (retried tasks) are kept once."""

    def __init__(self, *, output_uri: str, storage: StorageConfig | None, decode: DecodeConfig, errors=None, merge_gap_s: float = 2.0):
        from vad.results.schema import signature_of

        self.output = parse_uri(output_uri)
        self.merge_gap_s = merge_gap_s
        self.fs = filesystem(self.output, storage)
        self.decode_signature = signature_of(decode)
        self.errors = errors
        self._pending: dict[str, dict] = {}  # video uri -> {"seen": set, "parts": [(scores, masks)]}

    def add(self, parts: list[dict]) -> list[dict]:
        """Each part: one video's rows of a batch (`video`: uri, date, camera, size, mtime, expected;
        `scores` table; `sides`: {table: rows}, masks and objects where the scorer gives them). Returns a row per
        video completed and written."""
        written = []
        for part in parts:
            video = part["video"]
            state = self._pending.setdefault(video["uri"], {"seen": set(), "parts": []})
            scores, sides = part["scores"], part["sides"]
            indices = scores["clip_index"].to_pylist()
            first = {clip: i for i, clip in reversed(list(enumerate(indices)))}  # each clip's first row here
            fresh = sorted(i for clip, i in first.items() if clip not in state["seen"])
            if not fresh:  # all delivered before (a retried task)
                continue
            if len(fresh) < len(indices):  # partly delivered before: keep the first copies
                take = pa.array(fresh, type=pa.int64())
                scores = scores.take(take)
                sides = {name: table.take(take) for name, table in sides.items()}  # a row per clip, like scores
            state["seen"].update(indices)
            state["parts"].append((scores, sides))
            if len(state["seen"]) >= video["expected"]:
                del self._pending[video["uri"]]
                row = self._write(video, state["parts"])
                if row is not None:
                    written.append(row)
        return written

    def pending(self) -> tuple[int, int]:
        """(videos, clips) held, waiting for the rest of their clips."""
        return len(self._pending), sum(len(s["seen"]) for s in self._pending.values())

    def _write(self, video: dict, parts: list[tuple]) -> dict | None:
        from vad.results.ledger import error_row, report_errors
        from vad.results.schema import result_file_name

        uri = video["uri"]
        scores = pa.concat_tables([s for s, _ in parts])
        order = pc.sort_indices(scores["clip_index"])
        scores = scores.take(order)
        scores = scores.replace_schema_metadata(source_metadata(scores.schema.metadata, video["size"], video["mtime"]))
        name = result_file_name(uri, scores["model_name"][0].as_py(), scores["model_version"][0].as_py(), self.decode_signature)
        try:
            # Re-validated here: these strings become folder names.
            date, camera = validate_date(video["date"]), validate_camera(video["camera"])
            written = {}
            for table in parts[0][1]:
                rows = pa.concat_tables([sides[table] for _, sides in parts]).take(order)
                written[table] = explode_objects(rows) if table == "objects" else rows
            events = events_table(scores, self.merge_gap_s)  # always written: a re-run's none replace an earlier run's
            path = write_video_results(self.fs, self.output, date, camera, name, scores, {**written, "events": events})
        except Exception as exc:
            if self.errors is None:
                raise
            report_errors(self.errors, [error_row(uri, "write", exc)])
            return None
        anomalies = int(pc.sum(scores["is_anomaly"]).as_py() or 0)
        return {"video_uri": uri, "path": path, "date": date, "camera": camera, "rows": scores.num_rows, "anomalies": anomalies,
                "events": events.num_rows}


def video_parts(batch: dict[str, np.ndarray], scored_at: dt.datetime) -> list[dict]:
    """A scored batch as Arrow tables, one part per video (see `WriteScores.add`)."""
    table = scores_table(batch, scored_at)
    sides = {}
    if "mask_png" in batch:
        sides["masks"] = masks_table(batch)
    if "objects" in batch:
        sides["objects"] = objects_table(batch)
    uris = np.asarray(batch["video_uri"], dtype=object)
    parts = []
    for uri in dict.fromkeys(uris):
        rows = np.flatnonzero(uris == uri)
        first = rows[0]
        video = {
            "uri": str(uri), "date": str(batch["date"][first]), "camera": str(batch["camera"][first]),
            "size": int(batch["video_size"][first]), "mtime": float(batch["video_mtime"][first]),
            "expected": int(batch["clips_in_video"][first]),
        }
        take = pa.array(rows)
        parts.append({"video": video, "scores": table.take(take), "sides": {name: t.take(take) for name, t in sides.items()}})
    return parts


def route_to_writers(batch: dict[str, np.ndarray], *, writers: list) -> dict[str, np.ndarray]:
    """The Ray Data stage before the writers: a scored batch's videos sent to their writers; returns a
    row per video they completed."""
    import ray

    if len(batch["video_uri"]) == 0:  # every clip's model failed to load (its videos are errors already)
        return {name: np.array([], dtype=np.int64 if name in ("rows", "anomalies", "events") else object) for name in WRITTEN_COLUMNS}
    by_writer: dict[int, list[dict]] = {}
    for part in video_parts(batch, dt.datetime.now(dt.timezone.utc)):
        by_writer.setdefault(writer_of(part["video"]["uri"], len(writers)), []).append(part)
    written = [row for rows in ray.get([writers[w].add.remote(parts) for w, parts in by_writer.items()]) for row in rows]
    return {
        name: np.array([row[name] for row in written], dtype=np.int64 if name in ("rows", "anomalies", "events") else object)
        for name in WRITTEN_COLUMNS
    }


def start_writers(cfg: ScoreJobConfig, errors=None) -> list:
    """`output.writers` `WriteScores` actors for one pass. I/O-bound, so each reserves a tenth of a
    CPU. A writer that dies is restarted empty: the videos it held are left incomplete and scored
    again by the job's next pass."""
    import ray

    actor = ray.remote(num_cpus=0.1, max_restarts=-1, max_task_retries=-1)(WriteScores)
    return [actor.remote(output_uri=cfg.output.uri, storage=cfg.storage, decode=cfg.decode, errors=errors, merge_gap_s=cfg.alerts.merge_gap_s)
            for _ in range(cfg.output.writers)]


ROUTING_BATCH = 256  # clips per routing task: a task per 32-clip block costs ~3x more (bench/fleet.py)


def write_by_video(ds, writers: list):
    """`ds` (scored clip batches) through the writers: one row per video written."""
    return ds.map_batches(route_to_writers, fn_kwargs={"writers": writers}, batch_size=ROUTING_BATCH, num_cpus=0.1)
