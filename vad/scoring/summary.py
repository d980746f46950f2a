"""What a scoring run did, in one record: its projection (`RunSummary.figures`) becomes the `runs` row,
the MLflow metrics and the CLI's JSON."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from vad.io.sources import Rejected
from vad.results.schema import RUNS_SCHEMA, SCORES_SCHEMA_VERSION


@dataclass
class RunSummary:
    run_id: str
    run_date: str
    videos: int  # listed videos
    clips: int
    anomalous_clips: int
    files: list[str]
    rejected: list[Rejected] = field(default_factory=list)
    wall_s: float = 0.0
    mlflow_run_id: str | None = None
    up_to_date: int = 0  # skipped: the manifest has them, unchanged, for this model
    errors: list[dict] = field(default_factory=list)  # rows of the errors table
    attempted: int = 0  # objects this run tried (videos to score + newly rejected objects)
    max_failure_rate: float = 1.0
    started_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None
    source_uri: str = ""
    model_name: str = ""
    model_version: str = ""
    skipped: int = 0  # objects that are not video (labels, checksums, thumbnails): never failures
    report_path: str | None = None  # the review page, when report.enabled
    events: int = 0  # flagged clips merged into events (what a person reviews)
    unscored_cameras: list[str] = field(default_factory=list)  # cameras whose model could not be had (`model` errors), sorted

    @property
    def clips_per_s(self) -> float:
        return self.clips / self.wall_s if self.wall_s else 0.0

    @property
    def failure_rate(self) -> float:
        return len(self.errors) / self.attempted if self.attempted else 0.0

    @property
    def failed(self) -> bool:
        """True when too many objects failed for the job to count as a success."""
        return self.failure_rate > self.max_failure_rate

    def figures(self) -> dict:
        """The run in numbers: the one projection the runs row, MLflow and the CLI all show."""
        return {
            "videos": self.videos,
            "up_to_date": self.up_to_date,
            "rejected": len(self.rejected),
            "skipped": self.skipped,
            "errors": len(self.errors),
            "failure_rate": self.failure_rate,
            "clips": self.clips,
            "anomalous_clips": self.anomalous_clips,
            "events": self.events,
            "files": len(self.files),
            "wall_s": self.wall_s,
            "clips_per_s": self.clips_per_s,
        }

    def errors_by_stage(self) -> dict[str, int]:
        stages = sorted({row["stage"] for row in self.errors})
        return {stage: sum(row["stage"] == stage for row in self.errors) for stage in stages}

    def runs_row(self) -> dict:
        """The row of the `runs` table (its columns: identity, then the figures it keeps)."""
        row = {
            "schema_version": SCORES_SCHEMA_VERSION, "run_id": self.run_id, "run_date": dt.date.fromisoformat(self.run_date),
            "started_at": self.started_at, "finished_at": self.finished_at, "source_uri": self.source_uri,
            "model_name": self.model_name, "model_version": self.model_version, **self.figures(),
        }
        return {name: row[name] for name in RUNS_SCHEMA.names}

    def metrics(self) -> dict:
        """MLflow metrics: `score/<figure>` and `score/errors_<stage>`."""
        return {**{f"score/{k}": v for k, v in self.figures().items()}, **{f"score/errors_{k}": v for k, v in self.errors_by_stage().items()},
                "score/unscored_cameras": len(self.unscored_cameras)}

    def cli(self) -> dict:
        """What `vad score` prints."""
        return {"run_id": self.run_id, "run_date": self.run_date, **self.figures(), "mlflow_run_id": self.mlflow_run_id,
                **({"unscored_cameras": self.unscored_cameras} if self.unscored_cameras else {}),
                **({"report": self.report_path} if self.report_path else {})}
