"""Which model scores which camera's videos, decided once per run on the driver.

One checkpoint (a path, s3:// uri or `models:/name@alias`) scores every camera. A fleet names a
checkpoint per camera: a template with `{camera}` (`models:/vad-conv-ae.{camera}@champion`,
`s3://models/conv_ae/{camera}.pt`), an explicit `scorer.cameras` map, or both (the map wins), with an
optional `scorer.fallback` for cameras that have none. Each distinct model becomes one `ModelRoute`;
task rows carry its index, and every score row records the route's exact model name and version.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

from vad.config import ScoreJobConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelRoute:
    checkpoint: str  # resolved location (a `models:/` uri becomes its checkpoint's path or s3:// uri)
    name: str  # what rows record: the registered model's name, else the checkpoint's model name or scorer
    version: str  # the registered version, else the checkpoint's version
    threshold: float
    scorer: str  # the architecture (conv_ae, ...)
    fallback: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Routing:
    routes: list[ModelRoute]
    by_camera: dict[str, int]  # fleets: camera -> index into routes
    missing: dict[str, str]  # fleets: camera -> why it has no model (its videos become `model` errors)
    fleet: bool = True  # False: routes[0] scores every camera

    def index(self, camera: str) -> int | None:
        """The route of a camera's videos; None when the camera has no model."""
        return 0 if not self.fleet else self.by_camera.get(camera)


def load_route(cfg: ScoreJobConfig, uri: str, tracking_uri: str, fallback: bool = False) -> ModelRoute:
    """Resolve and load one checkpoint, checking it against the job (scorer name, decoding)."""
    from vad.models.checkpoint import check_decode_matches, load_checkpoint
    from vad.tracking.registry import resolve_model

    location, registered, version = resolve_model(uri, tracking_uri, cfg.work_dir)
    loaded = load_checkpoint(location, cfg.storage)
    if cfg.scorer.name is not None and cfg.scorer.name != loaded.name:
        raise ValueError(f"scorer.name is {cfg.scorer.name!r} but checkpoint {uri} holds a {loaded.name!r} model")
    check_decode_matches(loaded, cfg.decode)
    name = registered or loaded.model_name or loaded.name
    # a registered version is immutable; a checkpoint known by its location is known by its weights too
    return ModelRoute(location, name, version or loaded.identity_version, float(loaded.threshold), loaded.name, fallback)


def camera_uri(cfg: ScoreJobConfig, camera: str) -> str:
    return cfg.scorer.cameras.get(camera) or cfg.scorer.checkpoint.replace("{camera}", camera)


def plan_routes(cfg: ScoreJobConfig, cameras: list[str], tracking_uri: str) -> Routing:
    """The routing of a run over `cameras`. With one checkpoint a problem with it fails the run here;
    in a fleet a camera whose model is missing or unusable falls back or is reported, and the others
    are scored."""
    if not cfg.scorer.per_camera:
        return Routing([load_route(cfg, cfg.scorer.checkpoint, tracking_uri)], {}, {}, fleet=False)
    routes: list[ModelRoute] = []
    index: dict[tuple, int] = {}
    by_camera: dict[str, int] = {}
    problems: dict[str, str] = {}

    def route_of(uri: str, fallback: bool) -> int:
        route = load_route(cfg, uri, tracking_uri, fallback)
        if routes and route.scorer != routes[0].scorer:
            raise ValueError(f"holds a {route.scorer!r} model, the fleet's others are {routes[0].scorer!r} (one scorer per job)")
        key = (route.checkpoint, route.name, route.version, fallback)
        if key not in index:
            index[key] = len(routes)
            routes.append(route)
        return index[key]

    for camera in sorted(set(cameras)):
        uri = camera_uri(cfg, camera)
        try:
            by_camera[camera] = route_of(uri, False)
        except (LookupError, FileNotFoundError, ValueError) as exc:
            problems[camera] = f"no usable model for camera {camera} at {uri}: {str(exc).strip().splitlines()[0]}"
    fallback = None
    if problems and cfg.scorer.fallback:
        fallback = route_of(cfg.scorer.fallback, True)  # a broken fallback fails the run: it is the safety net
    for camera, why in problems.items():
        if fallback is not None:
            log.warning("%s; scored by the fallback %s", why, cfg.scorer.fallback)
            by_camera[camera] = fallback
        else:
            log.warning("%s; its videos are recorded as errors (stage 'model')", why)
    missing = {c: why for c, why in problems.items() if fallback is None}
    if not routes and missing:
        log.warning("no camera of the run has a model")
    return Routing(routes, by_camera, missing)
