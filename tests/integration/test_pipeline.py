"""The nightly job end to end: S3 source, Ray Data, Conv-AE, Parquet, MLflow, SQL."""

from pathlib import Path

import numpy as np
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest
from helpers import DECODE
from sklearn.metrics import roc_auc_score

from vad.cli import main
from vad.config import MlflowConfig, OutputConfig, RayConfig, ScoreJobConfig, ScorerConfig, SourceConfig
from vad.results.schema import PARTITION_SCHEMA, SCORES_SCHEMA
from vad.scoring.job import run_scoring
from vad.video.clips import clip_starts


@pytest.fixture(scope="module")
def scored(ray_local, s3, archive, checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("results")
    cfg = ScoreJobConfig(
        source=SourceConfig(uri=archive["uri"]),
        output=OutputConfig(uri=str(out / "results")),
        scorer=ScorerConfig(name="conv_ae", checkpoint=checkpoint["uri"], batch_size=5, device="cpu"),
        decode=DECODE,
        storage=s3.storage_config(),
        mlflow=MlflowConfig(experiment="test-score"),
        ray=RayConfig(num_cpus=2),
        work_dir=str(out / "work"),
    )
    summary = run_scoring(cfg)
    table = pads.dataset(str(out / "results" / "scores"), partitioning=pads.partitioning(PARTITION_SCHEMA, flavor="hive")).to_table()
    return {"cfg": cfg, "summary": summary, "table": table.to_pandas(), "root": out / "results"}


def test_every_clip_exactly_once(scored, archive):
    df = scored["table"]
    expected = set()
    for video in archive["videos"]:
        n = len(video.labels)
        for index, start in enumerate(clip_starts(n, DECODE.clip_len, DECODE.stride, DECODE.frame_step)):
            expected.add((f"{archive['uri']}/{video.key}", index, start))
    got = list(zip(df.video_uri, df.clip_index, df.start_frame))
    assert len(got) == len(set(got)), "duplicate clips"
    assert set(got) == expected
    assert scored["summary"].clips == len(expected) == len(df)
    assert df.clip_id.is_unique
    assert (df.end_frame - df.start_frame == DECODE.clip_len - 1).all()


def test_schema_and_partitions(scored):
    files = sorted(Path(scored["root"], "scores").rglob("*.parquet"))
    assert files and all(not f.name.startswith(".") for f in files)
    for f in files:
        rel = f.relative_to(scored["root"] / "scores").parts
        assert rel[0].startswith("date=") and rel[1].startswith("camera=") and len(rel) == 3
        schema = pq.read_schema(f)
        assert schema.equals(SCORES_SCHEMA)
        assert schema.metadata[b"vad.schema_version"] == SCORES_SCHEMA.metadata[b"vad.schema_version"]
        assert int(schema.metadata[b"vad.source_size"]) > 0
        table = pq.read_table(f, partitioning=None)
        assert len(set(table["video_uri"].to_pylist())) == 1, "one file per video"
        assert table["clip_index"].to_pylist() == list(range(table.num_rows)), "a video's clips, all, in order"
    assert len(files) == scored["summary"].videos
    df = scored["table"]
    assert set(df.camera) == {"cam01", "cam02"}
    assert {str(d) for d in df.date} == {"2026-11-24"}
    assert (df.camera == df.video_uri.str.split("/").str[4]).all()  # s3://archive/footage/<camera>/<date>/...
    assert (df.run_id == scored["summary"].run_id).all()
    # a checkpoint scored by its path is known by its version and its weights' digest
    assert (df.model_name == "conv_ae").all() and df.model_version.str.fullmatch(r"t1\+[0-9a-f]{8}").all() and df.model_version.nunique() == 1
    assert (df.is_anomaly == (df.score > df.threshold)).all()
    assert df.frame_scores.map(len).eq(DECODE.clip_len).all()


def test_injected_anomalies_score_higher(scored, archive):
    df = scored["table"]
    labels = {f"{archive['uri']}/{k}": v for k, v in archive["labels"].items()}
    test = df[df.video_uri.str.contains("/test_")]
    # A clip counts as anomalous when an injected anomaly is visible in most of its frames.
    clip_label = [labels[u][s : e + 1].mean() > 0.5 for u, s, e in zip(test.video_uri, test.start_frame, test.end_frame)]
    clip_label = np.array(clip_label)
    assert clip_label.any() and not clip_label.all()
    anomalous, normal = test.score[clip_label], df.score[df.video_uri.str.contains("/train_")]
    assert anomalous.mean() > normal.mean()
    assert roc_auc_score(clip_label, test.score) > 0.7


def test_run_metrics_in_parquet_and_mlflow(scored):
    import mlflow

    summary = scored["summary"]
    runs = pads.dataset(str(scored["root"] / "runs"), partitioning="hive").to_table().to_pylist()
    assert len(runs) == 1 and runs[0]["run_id"] == summary.run_id and runs[0]["clips"] == summary.clips
    client = mlflow.MlflowClient(f"sqlite:///{Path(scored['cfg'].work_dir).resolve() / 'mlflow.db'}")
    run = client.get_run(summary.mlflow_run_id)
    assert run.data.params["scorer.name"] == "conv_ae"
    assert run.data.params["decode.clip_len"] == str(DECODE.clip_len)
    assert run.data.metrics["score/clips"] == summary.clips
    assert run.data.metrics["score/videos"] == 6
    assert run.data.tags["vad.run_id"] == summary.run_id
    assert not any("secret" in v for v in run.data.params.values())


def test_query_command(scored, capsys):
    root = str(scored["root"])
    assert main(["query", "--results", root, "SELECT camera, count(*) AS n FROM scores GROUP BY camera ORDER BY camera"]) == 0
    out = capsys.readouterr().out
    counts = scored["table"].groupby("camera").size()
    assert f"cam01  | {counts['cam01']}" in out and f"cam02  | {counts['cam02']}" in out and "(2 rows)" in out
    assert main(["query", "--results", root, "--format", "json", "SELECT max(regularity) AS r FROM scores_regularity"]) == 0
    assert '"r": 1.0' in capsys.readouterr().out
    assert main(["query", "--results", root, "SELECT nope FROM scores"]) != 0
    assert main(["query", "--results", root, f"COPY scores TO '{root}/stolen.parquet'"]) != 0
    assert not Path(root, "stolen.parquet").exists()


@pytest.mark.timeout(300)
def test_videos_split_across_decode_tasks_with_the_pyav_decoder(scored, tmp_path):
    """Every video cut by several decode tasks (split_mb far below the object sizes), decoded by
    PyAV, on two actors that ask for other CPUs than decode tasks would (separate decode tasks
    would wait forever for CPUs the actors hold): the same clips, each once, one file per video,
    and the same scores up to the decoders' rounding."""
    from vad.io.sources import list_videos
    from vad.video.clips import split_parts

    decode = DECODE.model_copy(update={"split_mb": 0.01, "backend": "pyav", "num_cpus": 1.0})
    base = scored["cfg"]
    cfg = base.model_copy(update={
        "output": OutputConfig(uri=str(tmp_path / "results")),
        "decode": decode,
        "scorer": base.scorer.model_copy(update={"concurrency": 2, "num_cpus": 0.95}),
        "mlflow": MlflowConfig(enabled=False),
        "work_dir": str(tmp_path / "work"),
    })
    videos, _ = list_videos(cfg.source, cfg.storage, "2026-11-24")
    assert min(split_parts(v, decode) for v in videos) >= 3
    summary = run_scoring(cfg)
    table = pads.dataset(str(tmp_path / "results" / "scores"), partitioning=pads.partitioning(PARTITION_SCHEMA, flavor="hive")).to_table()
    split = table.to_pandas().set_index(["video_uri", "clip_index"]).sort_index()
    whole = scored["table"].set_index(["video_uri", "clip_index"]).sort_index()
    assert split.index.is_unique and split.index.equals(whole.index)
    assert summary.clips == len(whole) and len(summary.files) == len(videos)
    assert (split.start_frame == whole.start_frame).all() and (split.clip_id == whole.clip_id).all()
    # Not equal: the two decoders' scalers differ by a grey level or two after resizing (splitting
    # itself is exact: tests/unit/test_decode.py compares the frames of split and whole reads). The
    # median relative difference is a bound for a systematic shift (earlier runs stayed under 0.05, one
    # clean-clone run gave 0.052; why it varies between runs was not found), while the correlation says
    # the clips are the same ones.
    relative = np.abs(split.score - whole.score) / whole.score
    assert np.corrcoef(split.score, whole.score)[0, 1] > 0.99 and relative.median() < 0.08, relative.median()
    assert not set(summary.files) & set(scored["summary"].files), "the pyav decode has result files of its own"


def _score_one_camera(s3, source: str, scorer: str, checkpoint: str, decode, tmp_path):
    """The job on one camera's prefix with a checkpoint made by the test; MLflow off."""
    cfg = ScoreJobConfig(
        source=SourceConfig(uri=source),
        output=OutputConfig(uri=str(tmp_path / "results")),
        scorer=ScorerConfig(name=scorer, checkpoint=checkpoint, batch_size=4, device="cpu"),
        decode=decode,
        storage=s3.storage_config(),
        mlflow=MlflowConfig(enabled=False),
        work_dir=str(tmp_path / "work"),
    )
    return run_scoring(cfg)


def test_mask_scorer_writes_the_sibling_masks_table(ray_local, s3, archive, tmp_path, capsys):
    import torch

    from vad.models.checkpoint import decode_record, save_checkpoint
    from vad.models.scorers import build_scorer
    from vad.results.sql import run_query
    from vad.results.tables import decode_heatmap, decode_mask

    torch.manual_seed(0)
    model = build_scorer("vgg_ae", width_divisor=8, mask_percentile=98).eval()
    model.calibrate(torch.rand(2, DECODE.clip_len, *DECODE.resize))
    checkpoint = str(tmp_path / "vgg.pt")
    save_checkpoint(checkpoint, model, version="m1", threshold=0.1, decode=decode_record(DECODE))
    summary = _score_one_camera(s3, f"{archive['uri']}/cam01", "vgg_ae", checkpoint, DECODE, tmp_path)
    root = str(tmp_path / "results")
    _, rows = run_query(root, "SELECT count(*), count(DISTINCT m.clip_id) FROM masks m JOIN scores s USING (clip_id)")
    assert rows[0] == (summary.clips, summary.clips)
    _, masks = run_query(root, "SELECT height, width, mask_png, anomalous_pixels FROM masks LIMIT 3")
    for height, width, pngs, counts in masks:
        assert (height, width) == DECODE.resize and len(pngs) == DECODE.clip_len
        decoded = [decode_mask(png) for png in pngs]
        assert [int(m.sum()) for m in decoded] == counts
        assert all(m.shape == DECODE.resize for m in decoded)
    assert list(Path(root, "masks").rglob("date=2026-11-24/camera=cam01/*.parquet"))
    _, heat = run_query(root, "SELECT mask_png, heatmap_png, heatmap_scale FROM masks LIMIT 3")
    for pngs, heatmaps, scales in heat:  # the pixel scores the masks threshold, kept for pixel AUC
        assert len(heatmaps) == len(scales) == len(pngs) and all(scale > 0 for scale in scales)
        assert decode_heatmap(heatmaps[0], scales[0]).shape == DECODE.resize

    # Pixel-level evaluation from the results alone, against the synthetic scene's object masks.
    import json

    from vad.cli import main

    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps({k: v.tolist() for k, v in archive["labels"].items() if k.startswith("cam01/")}))
    assert main(["evaluate", "--results", root, "--labels", str(labels), "--masks", str(archive["masks"])]) == 0
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if line.startswith("pixel-level"))
    assert "all-ones mask F1" in line and "random mask of the same area F1" in line and "pixel AUC" in line
    assert "pixel ground truth but no masks: cam02/2026-11-24/test_000" in out  # only cam01 was scored


def test_mil_scorer_runs_in_the_pipeline_on_rgb_clips(ray_local, s3, archive, tmp_path):
    """Backbone + MIL head as one checkpoint: the job decodes RGB clips and writes one score per clip,
    the same score the in-memory scorer gives those clips."""
    import torch

    from vad.config import SourceConfig as Source
    from vad.io.sources import list_videos
    from vad.models.checkpoint import decode_record, save_checkpoint
    from vad.models.scorers import build_scorer
    from vad.video.clips import iter_clips

    torch.manual_seed(0)
    model = build_scorer("mil", extractor="i3d").eval()
    decode = DECODE.model_copy(update={"clip_len": 16, "stride": 16, "resize": (32, 32), "grayscale": False})
    checkpoint = str(tmp_path / "mil.pt")
    save_checkpoint(checkpoint, model, version="mil1", threshold=0.5, decode=decode_record(decode))
    source = f"{archive['uri']}/cam02"
    summary = _score_one_camera(s3, source, "mil", checkpoint, decode, tmp_path)
    table = pads.dataset(str(tmp_path / "results" / "scores"), partitioning=pads.partitioning(PARTITION_SCHEMA, flavor="hive")).to_table().to_pandas()
    assert summary.clips == len(table) > 0 and set(table["model_name"]) == {"mil"}
    video, _ = list_videos(Source(uri=source), s3.storage_config())
    first = video[0]
    clips = np.stack([c.frames for c in iter_clips(first, decode, s3.storage_config())])
    with torch.inference_mode():
        expected = model.score(torch.from_numpy(clips).float() / 255).score.numpy()
    got = table[table["video_uri"] == first.uri].sort_values("clip_index")["score"].to_numpy()
    assert np.allclose(got, expected, atol=1e-5)
    assert all(np.allclose(f, s) for f, s in zip(table["frame_scores"], table["score"]))


def test_evaluate_command(scored, archive, tmp_path, capsys):
    import json

    labels = tmp_path / "labels.json"
    test_labels = {k: v.tolist() for k, v in archive["labels"].items() if "/test_" in k}
    labels.write_text(json.dumps({**test_labels, "cam09/2026-11-24/missing.mp4": [0, 1]}))
    plots = tmp_path / "plots"
    code = main(["evaluate", "--results", str(scored["root"]), "--labels", str(labels), "--plots", str(plots), "--smoothing", "5"])
    assert code == 0
    out = capsys.readouterr().out
    micro = float(out.split("concatenated) ")[1].split()[0])
    assert 0.6 < micro <= 1.0
    assert f"[{len(test_labels)} videos" in out and "missing.mp4" in out
    assert (plots / "roc.png").stat().st_size > 1000 and (plots / "timelines.png").stat().st_size > 1000
    # the default compares raw scores across videos, as the nightly job does; conv_ae's paper's regularity score beside it
    assert "per-video normalisation none" in out and "paper's per-video normalisation (regularity" in out
    paper = float(out.split("(regularity")[1].split("micro ")[1].split()[0])
    assert 0.5 < paper <= 1.0 and paper != micro
    tracking = f"sqlite:///{Path(scored['cfg'].work_dir).resolve() / 'mlflow.db'}"
    run_id = scored["summary"].mlflow_run_id
    assert main(["evaluate", "--results", str(scored["root"]), "--labels", str(labels), "--normalise", "minmax",
                 "--mlflow-run-id", run_id, "--tracking-uri", tracking]) == 0
    out = capsys.readouterr().out
    minmax = float(out.split("concatenated) ")[1].split()[0])
    assert "normalisation minmax" in out and 0.5 < minmax <= 1.0
    import mlflow

    logged = mlflow.MlflowClient(tracking).get_run(run_id).data
    assert logged.metrics["eval/auc_micro"] == pytest.approx(minmax, abs=1e-4)
    assert logged.tags["eval/normalisation"] == "minmax"
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    assert main(["evaluate", "--results", str(scored["root"]), "--labels", str(bad)]) == 2
