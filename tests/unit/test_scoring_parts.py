import datetime as dt
import io
import pickle

import numpy as np
import pyarrow as pa
import pytest
import torch

from vad.config import DecodeConfig
from vad.evaluation.metrics import frame_level_report, frames_from_clips, normalise_per_video
from vad.models.checkpoint import check_decode_matches, decode_record, load_checkpoint, save_checkpoint
from vad.models.scorers import build_scorer
from vad.models.scorers.conv_ae.loss import regularity_score
from vad.results.schema import SCORES_SCHEMA, clip_id
from vad.results.tables import scores_table


def test_conv_ae_shapes_and_input_checks():
    model = build_scorer("conv_ae", clip_len=8, widths=[8, 8, 4])
    clips = torch.rand(3, 8, 32, 40)
    assert model(clips).shape == clips.shape
    out = model.score(clips)
    assert out.score.shape == (3,) and out.frame_scores.shape == (3, 8)
    assert torch.allclose(out.score, out.frame_scores.mean(1))
    with pytest.raises(ValueError, match="divisible by 8"):
        model(torch.rand(1, 8, 30, 40))
    with pytest.raises(ValueError, match="expects"):
        model(torch.rand(1, 4, 32, 32))


def test_regularity_score_follows_the_paper():
    errors = torch.tensor([2.0, 4.0, 10.0])
    assert torch.allclose(regularity_score(errors), torch.tensor([1.0, 0.8, 0.2]))


def test_checkpoint_round_trip_and_decode_check(tmp_path):
    model = build_scorer("conv_ae", clip_len=4, widths=[4, 4, 4])
    decode = DecodeConfig(clip_len=4, resize=(16, 16))
    path = str(tmp_path / "m.pt")
    save_checkpoint(path, model, version="7", threshold=0.5, decode=decode_record(decode))
    loaded = load_checkpoint(path)
    assert (loaded.name, loaded.version, loaded.threshold) == ("conv_ae", "7", 0.5)
    clips = torch.rand(2, 4, 16, 16)
    assert torch.equal(loaded.model.score(clips).score, model.eval().score(clips).score)
    check_decode_matches(loaded, decode)
    with pytest.raises(ValueError, match="decode.resize"):
        check_decode_matches(loaded, DecodeConfig(clip_len=4, resize=(32, 32)))


class _Evil:
    def __reduce__(self):
        return (exec, ("import pathlib; pathlib.Path('PWNED').write_text('x')",))


def test_checkpoint_loading_never_runs_pickled_code(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pt"
    buffer = io.BytesIO()
    torch.save({"format": "vad-checkpoint/1", "payload": _Evil()}, buffer, pickle_protocol=pickle.HIGHEST_PROTOCOL)
    path.write_bytes(buffer.getvalue())
    with pytest.raises(ValueError, match="not a loadable vad checkpoint"):
        load_checkpoint(str(path))
    assert not (tmp_path / "PWNED").exists()


def test_scores_table_has_the_schema():
    n = 2
    batch = {
        "run_id": np.array(["r", "r"], dtype=object),
        "clip_id": np.array([clip_id("u", 0, 16, 16, 1), clip_id("u", 1, 16, 16, 1)], dtype=object),
        "video_uri": np.array(["u", "u"], dtype=object),
        "clip_index": np.array([0, 1], dtype=np.int32),
        "start_frame": np.array([0, 16]),
        "end_frame": np.array([15, 31]),
        "frame_step": np.ones(n, dtype=np.int16),
        "start_time_s": np.array([0.0, 0.64]),
        "end_time_s": np.array([0.64, 1.28]),
        "model_name": np.array(["conv_ae"] * n, dtype=object),
        "model_version": np.array(["1"] * n, dtype=object),
        "model_fallback": np.zeros(n, dtype=bool),
        "score": np.array([0.1, 0.2], dtype=np.float32),
        "threshold": np.array([0.15, 0.15], dtype=np.float32),
        "is_anomaly": np.array([False, True]),
        "frame_scores": np.ones((n, 16), dtype=np.float32),
    }
    table = scores_table(batch, dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc))
    assert table.schema.equals(SCORES_SCHEMA, check_metadata=True)
    assert table.column("frame_scores").type.value_type == pa.float32()
    assert clip_id("u", 1, 16, 16, 1) != clip_id("u", 1, 16, 8, 1)
    del batch["score"]
    with pytest.raises(KeyError, match="score"):
        scores_table(batch, dt.datetime.now(dt.timezone.utc))


def test_frames_from_clips_overlap_and_gaps():
    clips = [(0, 1, [1, 1, 1, 1]), (2, 1, [3, 3, 3, 3])]
    assert frames_from_clips(8, clips, "max")[:6].tolist() == [1, 1, 3, 3, 3, 3]
    assert frames_from_clips(8, clips, "mean")[:6].tolist() == [1, 1, 2, 2, 3, 3]
    assert np.isnan(frames_from_clips(8, clips)[6:]).all()
    stepped = frames_from_clips(6, [(0, 2, [1, 5, 9])])
    assert stepped[[0, 2, 4]].tolist() == [1, 5, 9] and np.isnan(stepped[1])


def test_frame_level_report_on_separable_and_random_scores():
    rng = np.random.default_rng(0)
    labels = [np.r_[np.zeros(50), np.ones(20), np.zeros(30)] for _ in range(3)]
    perfect = [y * 2 + rng.uniform(0, 1, len(y)) for y in labels]
    report = frame_level_report(labels, perfect)
    assert report["auc_micro"] == 1.0 and report["auc_macro"] == 1.0 and report["eer"] == 0.0
    noise = frame_level_report(labels, [rng.uniform(size=len(y)) for y in labels])
    assert 0.3 < noise["auc_micro"] < 0.7
    assert normalise_per_video(np.array([2.0, 4.0, 6.0])).tolist() == [0.0, 0.5, 1.0]


def test_regularity_normalisation_is_one_minus_the_papers_score():
    errors = np.array([2.0, 4.0, 10.0])
    expected = 1.0 - regularity_score(torch.tensor(errors)).numpy()
    assert np.allclose(normalise_per_video(errors, "regularity"), expected)
    assert normalise_per_video(errors, "none") is errors
    # a video whose errors barely vary stays low under "regularity", spans [0, 1] under "minmax"
    flat = np.array([10.0, 10.5, 11.0])
    assert normalise_per_video(flat, "regularity").max() < 0.1 and normalise_per_video(flat).max() == 1.0
    with pytest.raises(ValueError, match="normalisation"):
        normalise_per_video(errors, "zscore")
    with pytest.raises(ValueError, match="non-negative"):
        normalise_per_video(np.array([-30.0, -20.0]), "regularity")


def test_pixel_level_report():
    from vad.evaluation.metrics import pixel_level_report

    truth = np.zeros((2, 4, 4), dtype=bool)
    truth[0, :2, :2] = True  # 4 pixels
    predicted = np.zeros_like(truth)
    predicted[0, :2, :] = True  # 8 pixels, 4 right
    report = pixel_level_report(predicted, truth, pixel_scores=truth * 2.0 + predicted)
    assert report["pixel_precision"] == 0.5 and report["pixel_recall"] == 1.0
    assert report["pixel_f1"] == pytest.approx(2 / 3)
    assert report["pixel_auc"] == 1.0
    assert report["pixel_f1_all_ones"] == pytest.approx(2 * (4 / 32) / (1 + 4 / 32))  # precision 1/8, recall 1
    assert report["pixel_area"] == 8 / 32 and 0 <= report["pixel_f1_random"] < report["pixel_f1"]
    with pytest.raises(ValueError, match="shapes differ"):
        pixel_level_report(predicted[:1], truth)


def test_heatmaps_keep_pixel_scores_within_a_level_and_shrink_large_frames():
    from vad.results.tables import decode_heatmap, encode_heatmap

    errors = np.random.default_rng(0).random((48, 64)).astype(np.float32) * 0.3
    png, scale = encode_heatmap(errors)
    assert scale == pytest.approx(errors.max()) and len(png) < errors.nbytes
    assert np.abs(decode_heatmap(png, scale) - errors).max() <= scale / 255 / 2 + 1e-6
    big = np.zeros((240, 320), np.float32)
    big[100:140, 100:180] = 1.0
    png, scale = encode_heatmap(big)
    small = decode_heatmap(png, scale)
    assert small.shape == (48, 64) and scale == 1.0  # pooled 5x: longer side <= 64
    restored = decode_heatmap(png, scale, size=(240, 320))
    assert restored.shape == (240, 320) and restored[120, 140] == pytest.approx(1.0) and restored[10, 10] == 0
    assert decode_heatmap(*encode_heatmap(np.zeros((8, 8))), size=(8, 8)).max() == 0



def _score_stage(tmp_path, errors):
    from vad.scoring.routing import ModelRoute
    from vad.scoring.stages import ScoreClips

    decode = DecodeConfig(clip_len=8, stride=8, resize=(32, 40))
    torch.manual_seed(0)
    path = tmp_path / "model.pt"
    save_checkpoint(str(path), build_scorer("conv_ae", clip_len=8, widths=[8, 8, 4]), version="t", threshold=0.01, decode=decode_record(decode))
    route = ModelRoute(str(path), "conv_ae", "t", 0.01, "conv_ae").to_dict()
    return ScoreClips(routes=[route], storage=None, device="cpu", run_id="run", decode=decode, errors=errors)


def _batch(frames: np.ndarray, uris: list[str]) -> dict:
    return {"frames": frames, "video_uri": np.array(uris, dtype=object), "clip_index": np.arange(len(uris), dtype=np.int32)}


def test_score_clips_falls_back_to_scoring_video_by_video(tmp_path):
    """A batch that fails is scored again per video: the video that still fails is reported once and
    dropped; the others keep exactly the scores they get on their own."""
    from vad.results.ledger import ErrorLog

    errors = ErrorLog()
    stage = _score_stage(tmp_path, errors)
    real = stage.score_fn

    def fails_on_white_clips(clips):  # stands in for a model that chokes on one video's input
        if bool((clips.flatten(1) == 1.0).all(dim=1).any()):
            raise RuntimeError("cannot score a white clip")
        return real(clips)

    stage.score_fn = fails_on_white_clips
    rng = np.random.default_rng(0)
    good = rng.integers(0, 200, (3, 8, 32, 40), dtype=np.uint8)
    white = np.full((2, 8, 32, 40), 255, dtype=np.uint8)
    frames = np.concatenate([good[:2], white[:1], good[2:], white[1:]])
    out = stage(_batch(frames, ["a", "a", "bad", "b", "bad"]))
    assert out["video_uri"].tolist() == ["a", "a", "b"]
    alone = stage(_batch(good, ["a", "a", "b"]))
    assert np.allclose(out["score"], alone["score"]) and np.allclose(out["frame_scores"], alone["frame_scores"])
    assert [(row["uri"], row["stage"], row["error_class"]) for row in errors.rows()] == [("bad", "score", "RuntimeError")]
    assert "white clip" in errors.rows()[0]["message"]


def test_score_clips_without_an_error_log_raises_the_failure(tmp_path):
    stage = _score_stage(tmp_path, None)
    stage.score_fn = lambda clips: (_ for _ in ()).throw(RuntimeError("model is broken"))
    with pytest.raises(RuntimeError, match="model is broken"):
        stage(_batch(np.zeros((2, 8, 32, 40), dtype=np.uint8), ["a", "b"]))


def test_the_model_cache_holds_at_most_its_bound_and_drops_the_least_recently_used():
    from vad.models.cache import ModelCache

    loaded: list[str] = []

    def load(key):
        loaded.append(key)
        return torch.nn.Linear(256, 256 if key != "big" else 1024)  # ~0.25 MiB; "big" ~1 MiB

    from vad.models.cache import weight_bytes

    cache = ModelCache(load, weight_bytes, max_models=2, max_mb=1.0)
    for key in ["a", "b", "a", "c", "a", "b"]:
        cache.get(key)
        assert len(cache.keys()) <= 2
    # a stayed (used just before c came), b was dropped for c, then c (least recent) for b
    assert loaded == ["a", "b", "c", "b"] and cache.keys() == ["a", "b"] and cache.evictions == 2
    cache.get("big")  # over max_mb on its own: the others go, it stays
    assert cache.keys() == ["big"] and cache.held_bytes > 2**20
    with pytest.raises(ValueError):
        ModelCache(load, weight_bytes, max_models=0, max_mb=1.0)


def test_scoring_routes_each_clip_to_its_models_and_records_it(tmp_path):
    """Clips of two routes in one batch: each scored by its own model (same scores as alone), named by it."""
    from vad.scoring.routing import ModelRoute
    from vad.scoring.stages import ScoreClips

    decode = DecodeConfig(clip_len=8, stride=8, resize=(32, 40))
    routes = []
    for seed, threshold in ((0, 0.01), (1, 0.5)):
        torch.manual_seed(seed)
        path = tmp_path / f"m{seed}.pt"
        save_checkpoint(str(path), build_scorer("conv_ae", clip_len=8, widths=[8, 8, 4]), version="v", threshold=threshold,
                        decode=decode_record(decode))
        routes.append(ModelRoute(str(path), f"vad-conv-ae.cam{seed}", str(seed + 1), threshold, "conv_ae", fallback=seed == 1).to_dict())
    stage = ScoreClips(routes=routes, storage=None, device="cpu", run_id="r", decode=decode, max_models=1)
    frames = np.random.default_rng(0).integers(0, 255, (4, 8, 32, 40), dtype=np.uint8)
    index = np.array([0, 1, 0, 1], dtype=np.int32)
    mixed = stage({**_batch(frames, ["a", "b", "a", "b"]), "model_index": index})
    assert mixed["model_name"].tolist() == ["vad-conv-ae.cam0", "vad-conv-ae.cam0", "vad-conv-ae.cam1", "vad-conv-ae.cam1"]
    assert mixed["model_fallback"].tolist() == [False, False, True, True] and np.allclose(mixed["threshold"], [0.01, 0.01, 0.5, 0.5])
    for route in (0, 1):
        alone = stage({**_batch(frames[index == route], ["x", "x"]), "model_index": index[index == route]})
        assert np.allclose(mixed["score"][mixed["model_name"] == routes[route]["name"]], alone["score"])
    assert stage.models.keys() == [1] and stage.models.loads >= 3  # max_models=1: one held at a time


def test_the_writer_keeps_clips_delivered_twice_once_and_writes_each_video_whole(tmp_path):
    """Retried tasks deliver clips again (whole batches or parts); a video is written once all its
    clips are there, each clip once, in order."""
    import pyarrow.parquet as pq

    from vad.results.schema import OBJECTS_SCHEMA
    from vad.scoring.writer import WriteScores, video_parts, writer_of

    def batch(indices):
        n = len(indices)
        return {
            "run_id": np.array(["r"] * n, dtype=object), "clip_id": np.array([f"c{i}" for i in indices], dtype=object),
            "video_uri": np.array(["/a/cam01/2026-11-24/v.mp4"] * n, dtype=object), "clip_index": np.array(indices, dtype=np.int32),
            "start_frame": np.array(indices) * 8, "end_frame": np.array(indices) * 8 + 7, "frame_step": np.ones(n, np.int16),
            "start_time_s": np.zeros(n), "end_time_s": np.zeros(n), "model_name": np.array(["m"] * n, dtype=object),
            "model_version": np.array(["1"] * n, dtype=object), "model_fallback": np.zeros(n, bool),
            "score": np.array(indices, dtype=np.float32), "threshold": np.ones(n, np.float32), "is_anomaly": np.zeros(n, bool),
            "frame_scores": np.zeros((n, 8), np.float32), "date": np.array(["2026-11-24"] * n, dtype=object),
            "camera": np.array(["cam01"] * n, dtype=object), "video_size": np.full(n, 10), "video_mtime": np.full(n, 1.0),
            "clips_in_video": np.full(n, 5),
            # a scorer that explains: a reason per clip and its objects, worst first (two per clip here)
            "reason": np.array([f"clip {i}" for i in indices], dtype=object), "frame_height": np.full(n, 48, np.int32),
            "frame_width": np.full(n, 64, np.int32), "objects": objects_of(indices),
        }

    def objects_of(indices):
        out = np.empty(len(indices), dtype=object)
        out[:] = [[{"frame": f, "x0": 1.0, "y0": 2.0, "x1": 3.0, "y1": 4.0, "label": "person", "label_score": 0.5, "source": "detector",
                    "speed": 1.0, "relative_speed": 0.1, "box_height": 2.0, "velocity_score": s, "geometry_score": 0.0,
                    "appearance_score": 0.0, "score": s, "attribute": "velocity"} for f, s in ((1, 10.0 + i), (2, float(i)))] for i in indices]
        return out

    now = dt.datetime.now(dt.timezone.utc)
    writer = WriteScores(output_uri=str(tmp_path), storage=None, decode=DecodeConfig(clip_len=8, stride=8))
    assert writer.add(video_parts(batch([3, 4]), now)) == []
    assert writer.add(video_parts(batch([3, 4]), now)) == []  # the same batch again
    assert writer.pending() == (1, 2)
    [written] = writer.add(video_parts(batch([0, 1, 1, 4, 2]), now))  # partly seen, one clip twice within
    table = pq.read_table(written["path"])
    assert table["clip_index"].to_pylist() == [0, 1, 2, 3, 4] and table["score"].to_pylist() == [0, 1, 2, 3, 4]
    assert written["rows"] == 5 and writer.pending() == (0, 0)
    assert table["reason"].to_pylist() == [f"clip {i}" for i in range(5)]
    objects = pq.read_table(written["path"].replace("/scores/", "/objects/"))  # beside the scores, each clip's once
    assert objects["clip_index"].to_pylist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert objects["score"].to_pylist() == [x for i in range(5) for x in (10.0 + i, float(i))]
    assert objects["frame"].to_pylist() == [x for i in range(5) for x in (i * 8 + 1, i * 8 + 2)]  # the frame in the video
    assert objects.schema.equals(OBJECTS_SCHEMA, check_metadata=False) and set(objects["clip_id"].to_pylist()) == {f"c{i}" for i in range(5)}
    assert {writer_of(f"v{i}", 4) for i in range(64)} == {0, 1, 2, 3} and writer_of("v1", 4) == writer_of("v1", 4)


def test_a_model_that_cannot_be_loaded_in_the_stage_reports_its_videos_and_the_others_go_on(tmp_path):
    """Route 1's checkpoint is gone by the time the stage loads it: its videos are reported once with stage
    `model`, not raised (which Ray would retry); route 0's clips are scored as before, and so is a batch of route 1
    alone (an empty batch of the same columns) without trying the load again."""
    from vad.results.ledger import ErrorLog
    from vad.scoring.routing import ModelRoute
    from vad.scoring.stages import ScoreClips

    decode = DecodeConfig(clip_len=8, stride=8, resize=(32, 40))
    save_checkpoint(str(tmp_path / "m0.pt"), build_scorer("conv_ae", clip_len=8, widths=[8, 8, 4]), version="v", threshold=0.1,
                    decode=decode_record(decode))
    routes = [ModelRoute(str(tmp_path / f"m{i}.pt"), f"vad-conv-ae.cam{i}", "v", 0.1, "conv_ae").to_dict() for i in (0, 1)]
    errors = ErrorLog()
    stage = ScoreClips(routes=routes, storage=None, device="cpu", run_id="r", decode=decode, errors=errors)
    frames = np.random.default_rng(0).integers(0, 255, (4, 8, 32, 40), dtype=np.uint8)
    mixed = stage({**_batch(frames, ["a", "b", "a", "b"]), "model_index": np.array([0, 1, 0, 1], dtype=np.int32)})
    assert mixed["video_uri"].tolist() == ["a", "a"] and mixed["model_name"].tolist() == ["vad-conv-ae.cam0"] * 2
    [row] = errors.rows()
    assert (row["uri"], row["stage"], row["permanent"]) == ("b", "model", False) and "not found" in row["message"]
    alone = stage({**_batch(frames[:2], ["c", "c"]), "model_index": np.array([1, 1], dtype=np.int32)})
    assert len(alone["video_uri"]) == 0 and "frames" not in alone and [r["uri"] for r in errors.rows()] == ["b", "c"]
    assert stage.models.loads == 1  # route 1 was tried once
    with pytest.raises(RuntimeError, match="cannot be loaded"):  # without an error log the failure is the caller's
        ScoreClips(routes=routes, storage=None, device="cpu", run_id="r", decode=decode)(
            {**_batch(frames[:2], ["c", "c"]), "model_index": np.array([1, 1], dtype=np.int32)})


def test_a_checkpoint_known_by_its_path_is_known_by_its_weights(tmp_path):
    """Retrained weights under the same `output.version` are a new model to the manifest (its camera is scored
    again); the same weights saved again are the same model (nothing is)."""
    from vad.config import MlflowConfig, OutputConfig, ScoreJobConfig, ScorerConfig, SourceConfig
    from vad.results.ledger import ManifestWriter
    from vad.scoring.job import plan_run
    from vad.testing.synthetic import generate_dataset

    decode = DecodeConfig(clip_len=8, stride=8, resize=(32, 40))
    generate_dataset(tmp_path / "footage", cameras=2, train_per_camera=1, test_per_camera=0, num_frames=24, seed=1)

    def save(camera: str, seed: int) -> None:
        torch.manual_seed(seed)
        save_checkpoint(str(tmp_path / f"{camera}.pt"), build_scorer("conv_ae", clip_len=8, widths=[8, 8, 4]), version="v1",
                        threshold=0.1, decode=decode_record(decode))

    save("cam01", 0)
    save("cam02", 0)
    cfg = ScoreJobConfig(source=SourceConfig(uri=str(tmp_path / "footage")), output=OutputConfig(uri=str(tmp_path / "results")),
                         scorer=ScorerConfig(name="conv_ae", checkpoint=str(tmp_path / "{camera}.pt")), decode=decode,
                         mlflow=MlflowConfig(enabled=False), work_dir=str(tmp_path / "work"))
    first = plan_run(cfg, "2026-11-24")
    assert len(first.todo) == 2 and {r.version for r in first.routing.routes} == {load_checkpoint(str(tmp_path / "cam01.pt")).identity_version}
    assert first.routing.routes[0].version.startswith("v1+")
    manifest = ManifestWriter(cfg.output.uri, "2026-11-24", first.run_id)
    for video in first.todo:  # as if the night had scored them
        manifest.add(uri=video.uri, size=video.size, mtime=video.mtime, key=first.key(video), status="scored", clips=3, scores_path="x")
    manifest.flush()
    save("cam01", 0)  # the same weights written again (a new file, a new saved_at)
    save("cam02", 1)  # cam02 retrained: new weights, the same output.version
    again = plan_run(cfg, "2026-11-25")
    assert [v.camera for v in again.todo] == ["cam02"]


def test_a_source_with_no_videos_is_said_not_passed_over(tmp_path, caplog):
    """A night whose source lists no video (a quiet night, or a path that names the wrong place) warns, naming the
    source and the objects it skipped; a night with videos does not."""
    import logging

    from vad.config import MlflowConfig, OutputConfig, ScoreJobConfig, ScorerConfig, SourceConfig
    from vad.scoring.job import plan_run
    from vad.testing.synthetic import generate_dataset

    decode = DecodeConfig(clip_len=8, stride=8, resize=(32, 40))
    save_checkpoint(str(tmp_path / "m.pt"), build_scorer("conv_ae", clip_len=8, widths=[8, 8, 4]), version="v", threshold=0.1,
                    decode=decode_record(decode))
    (tmp_path / "footage" / "cam01").mkdir(parents=True)
    (tmp_path / "footage" / "cam01" / "notes.txt").write_text("not a video")
    cfg = ScoreJobConfig(source=SourceConfig(uri=str(tmp_path / "footage")), output=OutputConfig(uri=str(tmp_path / "results")),
                         scorer=ScorerConfig(name="conv_ae", checkpoint=str(tmp_path / "m.pt")), decode=decode,
                         mlflow=MlflowConfig(enabled=False), work_dir=str(tmp_path / "work"))
    with caplog.at_level(logging.WARNING, logger="vad.scoring.job"):
        plan = plan_run(cfg, "2026-11-24")
    assert plan.videos == [] and f"no videos under {tmp_path / 'footage'} (1 other objects skipped" in caplog.text
    generate_dataset(tmp_path / "footage", cameras=1, train_per_camera=1, test_per_camera=0, num_frames=24, seed=1)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="vad.scoring.job"):
        assert len(plan_run(cfg, "2026-11-24").videos) == 1
    assert "no videos" not in caplog.text
