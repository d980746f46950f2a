"""Test helpers: videos whose frames carry known content."""

from __future__ import annotations

import contextlib
import shutil
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import pyarrow.dataset as pads
import yaml

from vad.config import DecodeConfig, MlflowConfig, OutputConfig, RayConfig, RunPolicyConfig, ScoreJobConfig, ScorerConfig, SourceConfig
from vad.results.schema import PARTITION_SCHEMA
from vad.video.clips import clip_starts

# Small clips for the integration tests: quick to train and score on 2 CPUs.
DECODE = DecodeConfig(clip_len=8, stride=8, resize=(48, 64), grayscale=True, clips_per_batch=4)
DAY = "2026-11-24"
# The tests' local Ray: 2 CPUs, an object store sized for the small test footage.
LOCAL_RAY = {"num_cpus": 2, "object_store_memory": 2 * 2**30, "include_dashboard": False, "log_to_driver": False}


def level(i: int) -> int:
    """Gray level of frame i in the known-content videos (distinct by 7 levels, survives H.264)."""
    return 16 + 7 * i


def known_frames(n: int, height: int = 64, width: int = 96) -> np.ndarray:
    if level(n - 1) > 255:
        raise ValueError(f"at most 35 known frames, asked for {n}")
    return np.stack([np.full((height, width), level(i), dtype=np.uint8) for i in range(n)])


def frame_index_of(frame: np.ndarray) -> int:
    """Invert `level` from a decoded (possibly resized, lossy) frame."""
    return int(round((float(np.median(frame)) - 16) / 7))


# The nightly job: configs, uploads and the exactly-once check.


def scores(root: Path):
    folder = root / "scores"
    if not folder.exists():
        return None
    return pads.dataset(str(folder), partitioning=pads.partitioning(PARTITION_SCHEMA, flavor="hive")).to_table().to_pandas()


def table(root: Path, name: str):
    folder = root / name
    return pads.dataset(str(folder), partitioning="hive").to_table().to_pandas() if folder.exists() else None


def expected_clips(frames_by_uri: dict[str, int]) -> set[tuple[str, int]]:
    return {
        (uri, index)
        for uri, n in frames_by_uri.items()
        for index, _ in enumerate(clip_starts(n, DECODE.clip_len, DECODE.stride, DECODE.frame_step))
    }


def assert_exactly_once(root: Path, frames_by_uri: dict[str, int]) -> None:
    df = scores(root)
    got = list(zip(df.video_uri, df.clip_index))
    assert len(got) == len(set(got)), "a clip was written twice"
    assert set(got) == expected_clips(frames_by_uri)


def hand_scored(uri: str, model: str, version: str, run_id: str, frame_scores: list[list[float]], *, clip_len: int,
                flagged: list[bool] | None = None, reasons: list[str] | None = None) -> dict[str, np.ndarray]:
    """One video's clips scored by hand, as a scoring actor hands them on: clip i is frames [i*clip_len, (i+1)*clip_len)
    at 10 frames/s, its score its worst frame's, threshold 1; flagged above it unless `flagged` says otherwise."""
    from vad.results.schema import clip_id

    n = len(frame_scores)
    i = np.arange(n)
    score = np.array([max(f) for f in frame_scores], np.float32)
    return {
        "run_id": np.array([run_id] * n, dtype=object), "clip_id": np.array([clip_id(uri, k, clip_len, clip_len, 1) for k in i], dtype=object),
        "video_uri": np.array([uri] * n, dtype=object), "clip_index": i.astype(np.int32), "start_frame": i * clip_len,
        "end_frame": i * clip_len + clip_len - 1, "frame_step": np.ones(n, np.int16), "start_time_s": i * clip_len / 10.0,
        "end_time_s": (i + 1) * clip_len / 10.0, "model_name": np.array([model] * n, dtype=object),
        "model_version": np.array([version] * n, dtype=object), "model_fallback": np.zeros(n, bool), "score": score,
        "threshold": np.ones(n, np.float32), "is_anomaly": np.array(flagged) if flagged is not None else score > 1,
        "frame_scores": frame_scores, **({"reason": np.array(reasons, dtype=object)} if reasons is not None else {}),
    }


def write_hand_scored(root: str, camera: str, batch: dict[str, np.ndarray], decode: str, scored_at, *, size: int | None = None,
                      mtime: float | None = None) -> str:
    """`hand_scored` rows as the writer files them (night 2026-11-24, `camera`'s partition; with `size` and `mtime`, the
    scored object's in the file's metadata); returns the file's path."""
    from vad.io.storage import filesystem, parse_uri, write_parquet_atomic
    from vad.results.schema import result_file_name
    from vad.results.tables import scores_table, source_metadata

    table = scores_table(batch, scored_at)
    if size is not None:
        table = table.replace_schema_metadata(source_metadata(table.schema.metadata, size, mtime))
    name = result_file_name(batch["video_uri"][0], batch["model_name"][0], batch["model_version"][0], decode)
    location = parse_uri(root).join("scores", f"date={DAY}", f"camera={camera}", name)
    write_parquet_atomic(filesystem(location), location.path, table)
    return location.path


def put(s3, bucket: str, key: str, data: bytes) -> None:
    s3.client().put_object(Bucket=bucket, Key=key, Body=data)


def job_config(s3, source: str, checkpoint: str, out: Path, storage=None, **run) -> ScoreJobConfig:
    return ScoreJobConfig(
        source=SourceConfig(uri=source),
        output=OutputConfig(uri=str(out / "results")),
        scorer=ScorerConfig(name="conv_ae", checkpoint=checkpoint, batch_size=4, device="cpu"),
        decode=DECODE,
        storage=storage or s3.storage_config(),
        mlflow=MlflowConfig(experiment="test-nightly"),
        ray=RayConfig(num_cpus=2),
        run=RunPolicyConfig(**run),
        work_dir=str(out / "work"),
    )


def write_yaml(cfg: ScoreJobConfig, path: Path) -> Path:
    data = cfg.model_dump(mode="json")
    data["storage"]["access_key_id"] = cfg.storage.access_key_id.get_secret_value()
    data["storage"]["secret_access_key"] = cfg.storage.secret_access_key.get_secret_value()
    path.write_text(yaml.safe_dump(data))
    return path


def actor_pids(class_part: str) -> list[int]:
    """PIDs of the live actors of *this* Ray cluster whose class name contains `class_part`
    (from the GCS actor table, so other Ray sessions on the machine are never touched)."""
    import ray

    return [
        int(actor["Pid"])
        for actor in ray._private.state.actors().values()
        if actor["State"] == "ALIVE" and class_part in actor["ActorClassName"] and actor.get("Pid")
    ]


# A real Ray head, as a user starts one.


@contextlib.contextmanager
def ray_head(*args: str, path_first: str | None = None, log: Path | None = None):
    """`ray start --head --block <args>` from this environment in its own process group, stopped with
    the whole group on exit; the host's record of the latest cluster
    (/tmp/ray/ray_current_cluster, which plain `ray.init()` would follow) is put back as it was.
    `path_first`: a folder put first on the head's PATH, as an activated virtualenv does; `log`: a file
    for the head's own output."""
    ray = str(Path(sys.executable).with_name("ray"))
    latest = Path("/tmp/ray/ray_current_cluster")
    before = latest.read_text() if latest.exists() else None
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    if path_first:
        env["PATH"] = f"{path_first}{os.pathsep}{env.get('PATH', '')}"
    output = open(log, "wb") if log is not None else subprocess.DEVNULL  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [ray, "start", "--head", "--block", "--disable-usage-stats", *args],
        stdout=output, stderr=subprocess.STDOUT, env=env, start_new_session=True,
    )
    try:
        yield process
    finally:
        # Every process of the head (gcs_server, raylet, its workers) is in this process group. `ray start --block`
        # takes some 30 s to stop them gracefully; a test head has nothing to save: they are killed after 3 s.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=3)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
        if log is not None:
            output.close()
        if before is None:
            latest.unlink(missing_ok=True)
        else:
            latest.write_text(before)


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def render_in_browser(page: Path) -> str:
    """The page's DOM after Chromium loaded it (images decoded, scripts run)."""
    if CHROMIUM is None:
        pytest.fail("Debian's chromium is not installed: ./dev test installs it (apt-get install chromium)")
    done = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--allow-file-access-from-files", "--virtual-time-budget=15000",
         "--dump-dom", page.resolve().as_uri()],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def budget_threshold_holds(checkpoint: str, metrics: dict) -> None:
    """The threshold a Ray path recorded came from its false-alarm budget, measured on one held-out 4.8 s video."""
    import pytest

    from vad.models.checkpoint import load_checkpoint

    loaded = load_checkpoint(checkpoint)
    budget = loaded.alert_budget
    assert budget is not None and budget["max_false_per_hour"] == 2000.0 and budget["merge_gap_s"] == 0.0
    assert 0 < budget["held_out_hours"] * 3600 <= 120 / 25 + 1e-3  # one held-out video of 120 frames at 25 fps (float32 times)
    assert loaded.threshold == pytest.approx(budget["threshold"])
    assert 1 <= budget["events"] <= 2000.0 * budget["held_out_hours"]  # some raised, within the budget
    assert metrics["alerts/threshold"] == pytest.approx(budget["threshold"]) and metrics["alerts/max_false_per_hour"] == 2000.0
