"""The nightly job on a messy archive and a misbehaving object store: nothing lost, nothing twice."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import DAY, DECODE, assert_exactly_once, expected_clips, job_config, put, scores, table, write_yaml

from vad.cli import main
from vad.config import MlflowConfig, OutputConfig, RayConfig
from vad.scoring.job import run_scoring
from vad.testing.faults import FAULT_KINDS, FaultyS3Proxy, bad_object
from vad.testing.synthetic import encode_mp4, render_scene

GOOD_FRAMES = 40
EXPECTED_STAGE = {
    "zero_byte": ("open", "EmptyObject"),
    "truncated": ("open", "CorruptVideo"),
    "garbage": ("open", "CorruptVideo"),
    "too_short": ("open", "TooShort"),
    "bad_frame": ("decode", "CorruptFrame"),
}


@pytest.fixture(scope="module")
def messy(s3):
    """s3://messy/footage/cam01/<day>/: two good videos and one object of every fault kind."""
    s3.client().create_bucket(Bucket="messy")
    rng = np.random.default_rng(11)
    prefix = f"footage/cam01/{DAY}"
    good = {}
    for i in range(2):
        key = f"{prefix}/good_{i}.mp4"
        put(s3, "messy", key, encode_mp4(render_scene(100 + i, GOOD_FRAMES, height=64, width=96).frames))
        good[f"s3://messy/{key}"] = GOOD_FRAMES
    objects = {}
    for kind in FAULT_KINDS:
        obj = bad_object(kind, rng, clip_len=DECODE.clip_len, frames=GOOD_FRAMES, name=kind)
        for rel, data in obj.files.items():
            put(s3, "messy", f"{prefix}/{rel}", data)
        objects[kind] = (f"s3://messy/{prefix}/{obj.name}", obj)
    return {"uri": "s3://messy/footage", "good": good, "objects": objects}


@pytest.fixture(scope="module")
def first_night(ray_local, s3, messy, checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("nightly")
    cfg = job_config(s3, messy["uri"], checkpoint["uri"], out)
    config = write_yaml(cfg, out / "score.yaml")
    code = main(["score", "--config", str(config), "--date", DAY])
    return {"cfg": cfg, "config": config, "root": out / "results", "code": code}


def scored_frames(messy) -> dict[str, int]:
    frames = dict(messy["good"])
    for kind, (uri, obj) in messy["objects"].items():
        if obj.expect == "scored":
            frames[uri] = obj.frames
    return frames


def test_bad_objects_become_error_rows_and_the_rest_is_scored(first_night, messy):
    root = first_night["root"]
    assert first_night["code"] == 3, "5 of the 9 video objects failed: above the default max_failure_rate, so non-zero"
    errors = table(root, "errors")
    by_uri = {row.uri: row for row in errors.itertuples()}
    for kind, (stage, error_class) in EXPECTED_STAGE.items():
        row = by_uri[messy["objects"][kind][0]]
        assert (row.stage, row.error_class, row.permanent) == (stage, error_class, True), kind
        assert row.message
    assert len(errors) == len(EXPECTED_STAGE)
    run = table(root, "runs").iloc[0]
    assert errors.run_id.eq(run.run_id).all()
    assert run.errors == 5 and run.failure_rate == pytest.approx(5 / 9)
    assert run.skipped == 1, "the notes file is not video: skipped, not a failure"
    assert messy["objects"]["not_video"][0] not in by_uri
    # Good, variable-frame-rate and odd-sized videos: every clip, once; the video that broke
    # part-way (bad_frame) has no rows at all, although its first clips were decoded.
    assert_exactly_once(root, scored_frames(messy))


def test_variable_frame_rate_gets_true_clip_times(first_night, messy):
    uri, obj = messy["objects"]["vfr"]
    df = scores(first_night["root"])
    clips = df[df.video_uri == uri].sort_values("clip_index")
    stamps = np.array(obj.timestamps_s)
    assert np.allclose(clips.start_time_s, stamps[clips.start_frame], atol=2e-3)
    assert (np.diff(clips.start_time_s) > 0).all()
    assert (clips.end_time_s > clips.start_time_s).all()


def test_error_counters_in_mlflow_and_sql(first_night):
    import mlflow

    from vad.results.sql import run_query

    root = first_night["root"]
    run_id = table(root, "runs").iloc[0].run_id
    client = mlflow.MlflowClient(f"sqlite:///{Path(first_night['cfg'].work_dir).resolve() / 'mlflow.db'}")
    [run] = client.search_runs(client.get_experiment_by_name("test-nightly").experiment_id, f"tags.`vad.run_id` = '{run_id}'")
    assert run.data.metrics["score/errors"] == 5 and run.data.metrics["score/skipped"] == 1
    assert run.data.metrics["score/errors_open"] == 4 and run.data.metrics["score/errors_decode"] == 1
    assert "score/errors_list" not in run.data.metrics and run.data.metrics["score/unscored_cameras"] == 0
    _, rows = run_query(str(root), "SELECT stage, count(*) FROM errors GROUP BY stage ORDER BY stage")
    assert rows == [("decode", 1), ("open", 4)]
    _, rows = run_query(str(root), "SELECT status, count(*) FROM manifest GROUP BY status ORDER BY status")
    assert rows == [("failed", 5), ("scored", 4)]


def test_rerun_does_no_work_then_scores_only_what_changed(first_night, messy, s3, capsys, tmp_path):
    """On a copy of the first night's results (the other tests read the first night as it was left)."""
    import shutil

    root = Path(shutil.copytree(first_night["root"], tmp_path / "results"))
    cfg = first_night["cfg"]
    config = write_yaml(cfg.model_copy(update={"output": cfg.output.model_copy(update={"uri": str(root)})}), tmp_path / "score.yaml")
    before = {p: p.stat().st_mtime_ns for p in root.joinpath("scores").rglob("*.parquet")}
    capsys.readouterr()
    assert main(["score", "--config", str(config), "--date", DAY]) == 0
    again = json.loads(capsys.readouterr().out)
    assert (again["clips"], again["errors"], again["files"], again["up_to_date"]) == (0, 0, 0, 9)
    assert {p: p.stat().st_mtime_ns for p in root.joinpath("scores").rglob("*.parquet")} == before

    # A good video is replaced by a longer one, a new one arrives: only those two are scored,
    # and the replaced video's old rows are gone.
    changed, added = next(iter(messy["good"])), f"s3://messy/footage/cam01/{DAY}/late.mp4"
    put(s3, "messy", changed.removeprefix("s3://messy/"), encode_mp4(render_scene(7, 56, height=64, width=96).frames))
    put(s3, "messy", added.removeprefix("s3://messy/"), encode_mp4(render_scene(8, 24, height=64, width=96).frames))
    assert main(["score", "--config", str(config), "--date", DAY]) == 0
    third = json.loads(capsys.readouterr().out)
    assert (third["files"], third["up_to_date"]) == (2, 8)
    assert third["clips"] == len(expected_clips({changed: 56, added: 24}))
    assert_exactly_once(root, {**scored_frames(messy), changed: 56, added: 24})


def test_a_killed_run_rerun_leaves_every_clip_once(ray_local, s3, checkpoint, tmp_path):
    """SIGKILL the job's driver once results have started to appear, then run it again."""
    s3.client().create_bucket(Bucket="killed")
    video = encode_mp4(render_scene(21, 320, height=64, width=96).frames)
    frames = {}
    for i in range(24):  # about 10 s of work: long enough for the kill to land mid-run
        put(s3, "killed", f"footage/cam0{i % 2}/{DAY}/v{i:02d}.mp4", video)
        frames[f"s3://killed/footage/cam0{i % 2}/{DAY}/v{i:02d}.mp4"] = 320
    cfg = job_config(s3, "s3://killed/footage", checkpoint["uri"], tmp_path, manifest_flush_s=0.01)
    cfg = cfg.model_copy(update={"ray": RayConfig(address=ray_local.get_runtime_context().gcs_address), "mlflow": MlflowConfig(enabled=False)})
    config = write_yaml(cfg, tmp_path / "score.yaml")
    job = subprocess.Popen([sys.executable, "-m", "jobs.score", "--config", str(config), "--date", DAY],
                           cwd=Path(__file__).parents[2], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    results = tmp_path / "results" / "scores"
    deadline = time.monotonic() + 240
    while not list(results.rglob("video-*.parquet")) and job.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    job.send_signal(signal.SIGKILL)
    job.wait()
    written_before_kill = len(list(results.rglob("video-*.parquet")))
    assert 0 < written_before_kill < len(frames), "the kill should land mid-run"
    summary = run_scoring(cfg, run_date=DAY)
    assert_exactly_once(tmp_path / "results", frames)
    assert summary.errors == [] and summary.up_to_date + len(summary.files) == len(frames)
    assert summary.up_to_date > 0, "what the killed run finished and recorded is not redone"
    assert not [p for p in results.rglob("*") if p.name.startswith(".")], "no temp files left visible"


def test_flaky_object_store_is_retried(ray_local, s3, archive, checkpoint, tmp_path):
    """503s, dropped connections and slow answers on a fifth of all requests: nothing is lost."""
    with FaultyS3Proxy(s3.endpoint_url, fail_rate=0.15, drop_rate=0.05, delay_rate=0.05, delay_s=0.2, seed=5) as proxy:
        storage = s3.storage_config().model_copy(update={"endpoint_url": proxy.endpoint_url, "retries": 8})
        cfg = job_config(s3, f"{archive['uri']}/cam01", checkpoint["uri"], tmp_path, storage=storage)
        cfg = cfg.model_copy(update={"output": OutputConfig(uri="s3://models/flaky-results")})
        summary = run_scoring(cfg, run_date=DAY)
    assert proxy.stats["failed"] >= 3 and proxy.stats["dropped"] >= 1, proxy.stats
    assert summary.errors == []
    frames = {f"{archive['uri']}/{v.key}": len(v.labels) for v in archive["videos"] if v.key.startswith("cam01/")}
    assert summary.clips == len(expected_clips(frames)) and len(summary.files) == len(frames)


def test_a_video_and_a_model_the_store_keeps_refusing_are_errors_retried_next_run(ray_local, s3, archive, checkpoint, tmp_path):
    """A night on which the store keeps refusing two objects. One video: every read fails (a `read` error). A
    fleet's model, cam02's: it loads on the driver (planning) but is refused afterwards, when the scoring
    actors load it: its camera's videos become `errors` rows with stage `model`, the other camera is scored,
    and the summary names the camera left unscored. Neither is permanent: the next night, the store
    recovered, scores only those videos."""
    import time as clock

    import mlflow

    from vad.scoring.job import execute, plan_run, report
    from vad.tracking.runs import mlflow_run, tracking_uri

    client = s3.client()
    data = client.get_object(Bucket="models", Key=checkpoint["uri"].split("s3://models/", 1)[1])["Body"].read()
    for camera in ("cam01", "cam02"):  # one model per camera (the same weights: routing is what is tested)
        client.put_object(Bucket="models", Key=f"failing-fleet/{camera}.pt", Body=data)
    victim = next(v for v in archive["videos"] if v.key.startswith("cam01/"))
    victim_uri = f"{archive['uri']}/{victim.key}"
    with FaultyS3Proxy(s3.endpoint_url) as proxy:
        storage = s3.storage_config().model_copy(update={"endpoint_url": proxy.endpoint_url, "retries": 2})
        cfg = job_config(s3, archive["uri"], "s3://models/failing-fleet/{camera}.pt", tmp_path, storage=storage, max_failure_rate=1.0)
        plan = plan_run(cfg, DAY)
        assert len(plan.routing.routes) == 2 and not plan.routing.missing  # both models loaded on the driver
        proxy.fail_paths = ("failing-fleet/cam02.pt", victim.key)  # ... and from now on cam02's model and the video are refused
        summary = execute(cfg, plan, clock.perf_counter())
    cam02 = {f"{archive['uri']}/{v.key}" for v in archive["videos"] if v.key.startswith("cam02/")}
    assert {e["uri"]: e["stage"] for e in summary.errors} == {**dict.fromkeys(cam02, "model"), victim_uri: "read"}
    assert not any(e["permanent"] for e in summary.errors) and proxy.refused["failing-fleet/cam02.pt"] > 0
    assert proxy.refused[victim.key] >= 9  # 3 whole reads (ours), each 3 requests (the S3 client's retries)
    assert summary.unscored_cameras == ["cam02"] and summary.cli()["unscored_cameras"] == ["cam02"]
    with mlflow_run(cfg.mlflow, cfg.work_dir, "refused-model", {"vad.run_id": plan.run_id}) as tracker:
        report(cfg, summary, tracker)  # what run_scoring does after execute: the runs row and MLflow
    metrics = mlflow.MlflowClient(tracking_uri(cfg.mlflow, cfg.work_dir)).get_run(summary.mlflow_run_id).data.metrics
    assert metrics["score/unscored_cameras"] == 1 and metrics["score/errors_model"] == len(cam02) and metrics["score/errors_read"] == 1
    assert table(tmp_path / "results", "runs").set_index("run_id").loc[plan.run_id, "errors"] == len(cam02) + 1
    assert [Path(p).parent.name for p in summary.files] == ["camera=cam01"] * (len(archive["videos"]) - len(cam02) - 1)
    # next night, the store has recovered: only the refused video and cam02's videos are scored
    second = run_scoring(cfg.model_copy(update={"storage": s3.storage_config()}), run_date=DAY)
    assert sorted(Path(p).parent.name for p in second.files) == sorted(["camera=cam01"] + ["camera=cam02"] * len(cam02))
    assert second.errors == [] and not second.unscored_cameras


def test_credentials_never_reach_logs_parquet_or_mlflow(ray_local, s3, archive, checkpoint, tmp_path, capfd, caplog):
    import logging

    key, secret = "AKIAVADLEAKCHECK0001", "vad-leak-check-secret-4f1c9e"
    from pydantic import SecretStr

    storage = s3.storage_config().model_copy(update={"access_key_id": SecretStr(key), "secret_access_key": SecretStr(secret)})
    cfg = job_config(s3, f"{archive['uri']}/cam01", checkpoint["uri"], tmp_path, storage=storage)
    config = write_yaml(cfg, tmp_path / "score.yaml")
    with caplog.at_level(logging.DEBUG):
        assert main(["score", "--config", str(config), "--date", DAY, "--set", "run.max_failure_rate=0"]) == 0
    captured = capfd.readouterr()
    texts = {"stdout": captured.out, "stderr": captured.err, "log": caplog.text}
    for path in [*tmp_path.joinpath("results").rglob("*"), *tmp_path.joinpath("work").rglob("*")]:
        if path.is_file():
            texts[str(path)] = path.read_bytes().decode("latin-1")
    session = Path(ray_local._private.worker._global_node.get_session_dir_path()) / "logs"
    for path in session.rglob("*"):
        if path.is_file() and path.stat().st_size < 50 << 20:
            texts[str(path)] = path.read_bytes().decode("latin-1")
    assert any("mlflow.db" in name for name in texts) and any(name.endswith(".parquet") for name in texts)
    leaks = [name for name, text in texts.items() if key in text or secret in text]
    assert leaks == []


_VALID = encode_mp4(render_scene(9, 24, height=64, width=96).frames)
HOSTILE_KEYS = ("footage/..%2F..%2Fetc/2026-11-24/a.mp4", "footage/cam$(id)/2026-11-24/b.mp4", "footage/cam01/2026-13-45/c.mp4")


def _mixed_objects(seed: int) -> list[bytes]:
    """Random bytes, a truncated video, one with bytes overwritten, and a whole one."""
    rng = np.random.default_rng(seed)
    corrupted = bytearray(_VALID)
    for position in rng.integers(0, len(corrupted), 32):
        corrupted[position] = int(rng.integers(0, 256))
    return [rng.bytes(3000), _VALID[: len(_VALID) // 2], bytes(corrupted), _VALID]


@pytest.fixture(scope="module")
def hostile_night(ray_local, s3, checkpoint, tmp_path_factory):
    """One night of a hostile archive: keys whose camera id or date would escape or break the results'
    folders, and under cam01 a fixed mix of random and corrupted objects."""
    s3.client().create_bucket(Bucket="hostile")
    for key in HOSTILE_KEYS:
        put(s3, "hostile", key, _VALID)
    mixed = []
    for i, raw in enumerate(_mixed_objects(7)):
        put(s3, "hostile", f"footage/cam01/{DAY}/o{i}.mp4", raw)
        mixed.append(f"s3://hostile/footage/cam01/{DAY}/o{i}.mp4")
    out = tmp_path_factory.mktemp("hostile")
    cfg = job_config(s3, "s3://hostile/footage", checkpoint["uri"], out, max_failure_rate=1.0)
    summary = run_scoring(cfg.model_copy(update={"mlflow": MlflowConfig(enabled=False)}), run_date=DAY)
    return {"root": out / "results", "summary": summary, "hostile": [f"s3://hostile/{k}" for k in HOSTILE_KEYS], "mixed": mixed}


def test_partition_values_from_keys_are_validated(hostile_night):
    """Camera ids and dates from object keys become folders: hostile ones are refused, not written."""
    root, summary = hostile_night["root"], hostile_night["summary"]
    refused = {e["uri"]: e["stage"] for e in summary.errors if e["uri"] in hostile_night["hostile"]}
    assert refused == dict.fromkeys(hostile_night["hostile"], "list")
    assert all(e["stage"] != "list" for e in summary.errors if e["uri"] not in refused)
    assert not set(scores(root).video_uri) & refused.keys()
    folders = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_dir()}
    assert all(".." not in f and "$" not in f for f in folders)
    assert os.listdir(root / "scores" / "date=2026-11-24") == ["camera=cam01"]


def test_random_corrupted_objects_never_crash_the_job(hostile_night):
    """Random and corrupted objects in one night: the job finishes, and each object is either scored completely
    or has one row in the errors table. (Hypothesis fuzzes the decode stage itself, test_bad_input; the job
    adds the writer's whole-video rule, checked here on one fixed mix.)"""
    uris, summary = hostile_night["mixed"], hostile_night["summary"]
    errors = [e for e in summary.errors if e["uri"] in uris]
    failed = {e["uri"] for e in errors}
    assert len(failed) == len(errors), "one error row per failed object"
    written = scores(hostile_night["root"])
    complete = set(written.video_uri) & set(uris) if written is not None else set()
    assert failed.isdisjoint(complete) and failed | complete == set(uris)
    assert uris[0] in failed and uris[3] in complete  # random bytes fail; the whole video is scored
    for uri in complete:
        rows = written[written.video_uri == uri]
        assert sorted(rows.clip_index) == list(range(len(rows))) and rows.clip_id.is_unique
