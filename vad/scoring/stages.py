"""The Ray Data model stages: clip batches in, model outputs out (scores and masks, or features).

Each stage is a callable class that loads what it needs in `__init__` and does pure batch-to-batch work
in `__call__`; its `DecodeAnd...` twin decodes its own task rows, for clusters without GPUs.
`vad.scoring.decoding` decodes the clips and composes these stages with it (`map_decoded_clips`, which
sets their resources); the writer stage is in `vad.scoring.writer`, the job that runs it all in
`vad.scoring.job`.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from vad.config import DecodeConfig, StorageConfig
from vad.results.schema import clip_id
from vad.results.tables import mask_columns
from vad.scoring.decoding import concatenate_batches, decode_in_batches


class ScoreClips:
    """Scores clip batches with the model of each clip's route and drops the frame column.

    `routes` are `vad.scoring.routing.ModelRoute` dicts; clip rows name theirs by `model_index` (none:
    the first). Models are loaded on first use and kept in a bounded LRU cache (`max_models`,
    `max_model_mb`), so an actor serving a fleet holds only the cameras it is working through.
    A batch that fails is scored again video by video; videos that still fail are reported to the
    run's error log and dropped (their other clips are then never written). A model that cannot be
    loaded here (its object unreadable, replaced or too big since the driver planned the run) is not
    the actor's failure, which Ray would retry: its videos are reported with stage `model` and
    dropped, and the actor goes on with the other routes."""

    def __init__(
        self, *, routes: list[dict], storage: StorageConfig | None, device: str, run_id: str, decode: DecodeConfig, errors=None,
        precision: str = "auto", memory_format: str = "auto", compile: bool = False, max_models: int = 8, max_model_mb: float = 2048.0,
    ):
        from vad.models.cache import ModelCache, weight_bytes
        from vad.models.inference import InferenceOptions
        from vad.models.scorers import scorer_meta

        # every route is a model of the same scorer (`vad.scoring.routing`): its record says its precision
        self.meta = scorer_meta(routes[0]["scorer"]) if routes and routes[0].get("scorer") else None
        self.options = InferenceOptions.resolve(device, precision, memory_format, compile, prefers=self.meta.precision if self.meta else "bf16")
        self.device = self.options.device
        self.routes = routes
        self.storage = storage
        self.run_id = run_id
        self.decode = decode
        self.errors = errors  # a vad.results.ledger.ErrorLog actor; None: a failing batch raises
        self.models = ModelCache(self._load, lambda entry: weight_bytes(entry[1]), max_models=max_models, max_mb=max_model_mb)
        self.unloadable: dict[int, BaseException] = {}  # routes whose model failed to load in this actor: not tried again
        try:
            self._use(0)  # the first model loads now (a fleet's others on first use)
        except Exception as exc:
            self._unloadable(0, exc)

    def _load(self, index: int):
        from vad.models.checkpoint import check_decode_matches, load_checkpoint
        from vad.models.inference import prepare

        loaded = load_checkpoint(self.routes[index]["checkpoint"], self.storage)
        check_decode_matches(loaded, self.decode)
        model, score_fn = prepare(loaded.model, self.options, "score")
        return loaded, model, score_fn

    def _use(self, index: int) -> None:
        """Make route `index`'s model the current one (`loaded`, `model`, `score_fn`, `route`); raises the
        load's error (once remembered, without trying again)."""
        if getattr(self, "route_index", None) == index:
            return
        if index in self.unloadable:
            raise self.unloadable[index]
        self.loaded, self.model, self.score_fn = self.models.get(index)
        self.route, self.route_index = self.routes[index], index

    def _unloadable(self, index: int, exc: BaseException) -> None:
        import logging

        if index not in self.unloadable:
            logging.getLogger(__name__).warning("model %s (%s) cannot be loaded in this actor; its videos are errors: %s",
                                                self.routes[index]["name"], self.routes[index]["checkpoint"], exc)
        self.unloadable[index] = exc

    def _model_failed(self, index: int, batch: dict[str, np.ndarray], exc: BaseException) -> dict[str, np.ndarray]:
        """The batch's videos reported with stage `model`; an empty batch of the same columns goes on."""
        from vad.results.ledger import error_row, report_errors

        self._unloadable(index, exc)
        failures = [error_row(str(uri), "model", exc) for uri in dict.fromkeys(np.asarray(batch["video_uri"], dtype=object))]
        if self.errors is None:
            raise RuntimeError(f"model {self.routes[index]['checkpoint']} cannot be loaded: {exc}") from exc
        report_errors(self.errors, failures)
        return {name: np.asarray(column)[:0] for name, column in batch.items() if name != "frames"}

    def _score(self, frames: np.ndarray) -> dict[str, np.ndarray]:
        """The model's outputs for a batch of uint8 clips: score, frame_scores, and for scorers that
        localise, mask and pixel_scores."""
        import torch

        from vad.models.inputs import model_input

        with torch.inference_mode(), self.options.autocast():
            output = self.score_fn(model_input(self.loaded.model.meta, frames, self.device))
        out = {"score": output.score, "frame_scores": output.frame_scores, "mask": output.mask, "pixel_scores": output.pixel_scores}
        arrays = {
            name: value.cpu().numpy() if value.dtype == torch.bool else value.float().cpu().numpy().astype(np.float32)
            for name, value in out.items()
            if value is not None
        }
        for name, values in (("reason", output.reasons), ("objects", output.objects)):  # scorers that explain
            if values is not None:
                arrays[name] = np.empty(len(values), dtype=object)
                arrays[name][:] = values
        return arrays

    def _score_each_video(self, batch: dict[str, np.ndarray], frames: np.ndarray):
        """After a failed batch: score video by video, report the ones that fail, keep the rest."""
        from vad.results.ledger import error_row, report_errors

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
        merged = {"score": np.zeros(n, np.float32), "frame_scores": np.zeros((n, clip_len), np.float32)}
        if self.loaded.model.meta.localises:  # the masks columns exist even when every video failed
            merged |= {"mask": np.zeros((n, clip_len, 1, 1), bool), "pixel_scores": np.zeros((n, clip_len, 1, 1), np.float32)}
        position = np.cumsum(keep) - 1
        for rows, outputs in parts:
            for name, value in outputs.items():
                if name not in merged or merged[name].shape[1:] != value.shape[1:]:
                    merged[name] = np.zeros((n, *value.shape[1:]), dtype=value.dtype)
                merged[name][position[rows]] = value
        kept = {name: np.asarray(column)[keep] for name, column in batch.items()}
        return kept, merged

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.score_batch(batch)

    def score_batch(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Each clip scored by its route's model (batches mixing routes are split and joined again)."""
        index = batch.pop("model_index", None)
        if index is None:
            return self._score_routed(0, batch)
        index = np.asarray(index)
        groups = list(dict.fromkeys(index.tolist()))
        if len(groups) == 1:
            return self._score_routed(int(groups[0]), batch)
        return concatenate_batches([self._score_routed(int(g), {k: np.asarray(v)[index == g] for k, v in batch.items()}) for g in groups])

    def _score_routed(self, route: int, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            self._use(route)
        except Exception as exc:
            return self._model_failed(route, batch, exc)
        frames = batch.pop("frames")
        try:
            outputs = self._score(frames)
        except Exception:
            batch, outputs = self._score_each_video(batch, frames)
        score = outputs["score"]
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
        batch["frame_scores"] = outputs["frame_scores"]
        batch["threshold"] = np.full(n, threshold, dtype=np.float32)
        batch["is_anomaly"] = score > threshold
        batch["model_name"] = np.array([self.route["name"]] * n, dtype=object)
        batch["model_version"] = np.array([self.route["version"]] * n, dtype=object)
        batch["model_fallback"] = np.full(n, bool(self.route["fallback"]))
        batch["run_id"] = np.array([self.run_id] * n, dtype=object)
        batch["frame_step"] = np.full(n, self.decode.frame_step, dtype=np.int16)
        if "mask" in outputs:
            batch |= mask_columns(outputs["mask"], outputs.get("pixel_scores"))
        if "reason" in outputs:
            batch["reason"] = outputs["reason"]
        if "objects" in outputs:
            batch["objects"] = outputs["objects"]
            batch["frame_height"] = np.full(n, frames.shape[2], dtype=np.int32)
            batch["frame_width"] = np.full(n, frames.shape[3], dtype=np.int32)
        return batch


class DecodeAndScoreClips(ScoreClips):
    """Decoding and scoring in one actor, for clusters without GPUs: each call takes one decode
    task row (a video or a share of one), decodes it and yields its clips scored in batches of
    `batch_size`.

    Spelled out rather than left to Ray Data's operator fusion, which bundles as many task rows
    into one call as the scoring batch has clips (so one actor took a whole small archive while
    the others were shut down idle), and which, when decode and scoring ask for different CPUs,
    leaves separate decode tasks waiting forever for CPUs the actors hold."""

    def __init__(self, *, batch_size: int, **kwargs):
        super().__init__(**kwargs)
        self.batch_size = batch_size

    def __call__(self, batch: dict[str, np.ndarray]) -> Iterator[dict[str, np.ndarray]]:
        for clips in decode_in_batches(batch, self.batch_size, decode=self.decode, storage=self.storage, errors=self.errors):
            yield self.score_batch(clips)


class ExtractFeatures:
    """Clip batches in, features out (C3D fc6 4096-d or I3D 1024-d); the frame column is dropped.

    Expects RGB clips (decode.grayscale = false) at the extractor's input size. `weights` is a
    state dict path or uri (c3d.pickle layout, or the output of `vad.models.backbones.i3d_convert`);
    without one the network is randomly initialised and every row says `pretrained = False`."""

    def __init__(
        self, *, extractor: str, weights: str | None = None, storage: StorageConfig | None = None, device: str = "auto",
        precision: str = "auto", memory_format: str = "auto", compile: bool = False,
    ):
        import io

        import torch

        from vad.io.storage import read_bytes
        from vad.models.backbones import backbone_meta, build_backbone
        from vad.models.inference import InferenceOptions, prepare

        state = torch.load(io.BytesIO(read_bytes(weights, storage)), weights_only=True) if weights else None
        self.options = InferenceOptions.resolve(device, precision, memory_format, compile, prefers=backbone_meta(extractor).precision)
        self.device = self.options.device
        self.model, self.extract = prepare(build_backbone(extractor, state_dict=state), self.options)
        self.name = extractor
        self.meta = backbone_meta(extractor)  # its input_range: C3D takes 0-255, I3D [0, 1]

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        from vad.models.inputs import model_input

        frames = batch.pop("frames")
        if frames.ndim != 5:
            raise ValueError(f"{self.name} needs RGB clips (B, T, H, W, 3); set decode.grayscale: false")
        with torch.inference_mode(), self.options.autocast():
            features = self.extract(model_input(self.meta, frames, self.device)).float().cpu().numpy()
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
