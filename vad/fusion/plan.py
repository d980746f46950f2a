"""`vad fuse`'s plan, made on the driver from the manifest alone (no video, no scores file read): each
camera's members resolved to their exact model and calibration, the fused model's version per camera, and
per video what to do (`vad.fusion.job` runs it)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import re
import uuid
from dataclasses import dataclass, field

from vad.config import FuseJobConfig, FusionMemberConfig
from vad.fusion.rules import Member, fused_threshold
from vad.io.storage import require_credentials
from vad.results.ledger import ManifestKey, error_row, is_up_to_date, read_manifest

log = logging.getLogger(__name__)

DECODE = "fusion"  # the manifest's decode of fused rows: they are cut as their first member's clips
_PARTITION = re.compile(r"/date=(\d{4}-\d{2}-\d{2})/camera=([^/]+)/[^/]+$")


class MemberProblem(LookupError):
    """A member cannot take part for a camera (no model, unreadable checkpoint, no calibration)."""


@dataclass
class CameraFusion:
    """The fused model of one camera: its members as resolved, version and threshold; or why it has none."""

    camera: str
    members: list[Member] = field(default_factory=list)
    version: str = ""
    threshold: float = float("nan")
    problem: str | None = None


@dataclass
class VideoTask:
    uri: str
    date: str
    camera: str
    size: int
    mtime: float
    paths: list[str]  # each member's scores file, in member order


@dataclass
class FusePlan:
    run_id: str
    run_date: str
    started_at: dt.datetime
    name: str
    cameras: dict[str, CameraFusion]
    videos: int = 0  # videos a member has scored, in scope
    todo: list[VideoTask] = field(default_factory=list)
    up_to_date: int = 0
    errors: list[dict] = field(default_factory=list)


def fused_name(cfg: FuseJobConfig, labels: list[str]) -> str:
    return cfg.fusion.name or f"fusion({','.join(labels)})"


def fused_version(members: list[Member], rule: str, level: float) -> str:
    """The fused model's version for a camera: changes when any member's model or calibration, the weights or the rule do."""
    spec = {"rule": rule, "level": level,
            "members": [[m.label, m.name, m.version, m.weight, m.calibration.to_dict()] for m in members]}
    return "f" + hashlib.sha1(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]


def resolve_member(spec: FusionMemberConfig, camera: str, tracking_uri: str, cfg: FuseJobConfig) -> Member:
    """A member's exact model for `camera` and its calibration (the registry's tag first, then the checkpoint's)."""
    from vad.models.checkpoint import read_checkpoint_record
    from vad.tracking.registry import registered_calibration, resolve_model

    uri = spec.model.replace("{camera}", camera)
    try:
        location, registered, version = resolve_model(uri, tracking_uri, cfg.work_dir)
        record = read_checkpoint_record(location, cfg.storage)
    except (LookupError, FileNotFoundError, ValueError) as exc:
        raise MemberProblem(f"no usable model at {uri}: {str(exc).strip().splitlines()[0]}") from None
    name = registered or record.model_name or record.scorer
    version = version or record.identity_version  # as the scoring job's routes record it (`vad.scoring.routing`)
    calibration = (registered_calibration(registered, version, tracking_uri) if registered else None) or record.calibration
    if calibration is None:
        raise MemberProblem(
            f"{name} version {version} ({uri}) records no calibration (trained before vad recorded one): "
            "train it again (`vad train` records one from its held-out videos); it cannot be fused without one"
        )
    return Member(spec.label or record.scorer, name, version, calibration, spec.weight)


def plan_fusion(cfg: FuseJobConfig, run_date: str | None = None) -> FusePlan:
    """Resolve every camera's members and decide each video's fate, from the manifest; no video is read."""
    from vad.tracking.runs import tracking_uri

    started_at = dt.datetime.now(dt.timezone.utc)
    require_credentials(cfg.output.uri, cfg.storage)
    manifest = read_manifest(cfg.output.uri, cfg.storage)
    scored: dict[tuple[str, str, str], tuple] = {}  # (uri, model, version) -> (entry, date, camera)
    cameras: set[str] = set()
    for key, entry in manifest.items():
        where = _PARTITION.search(entry.scores_path or "") if entry.status == "scored" else None
        if where is None:
            continue
        date, camera = where.groups()
        if (cfg.fusion.cameras and camera not in cfg.fusion.cameras) or (cfg.fusion.dates and date not in cfg.fusion.dates):
            continue
        scored[(key.uri, key.model_name, key.model_version)] = (entry, date, camera)
        cameras.add(camera)
    tracking = tracking_uri(cfg.mlflow, cfg.work_dir)
    resolved: dict[tuple[int, str], Member | MemberProblem] = {}

    def member(i: int, spec: FusionMemberConfig, camera: str):
        uri = spec.model.replace("{camera}", camera)
        if (i, uri) not in resolved:
            try:
                resolved[(i, uri)] = resolve_member(spec, camera, tracking, cfg)
            except MemberProblem as exc:
                resolved[(i, uri)] = exc
        return resolved[(i, uri)]

    fusions: dict[str, CameraFusion] = {}
    labels: list[str] | None = None
    for camera in sorted(cameras):
        found = [member(i, spec, camera) for i, spec in enumerate(cfg.fusion.members)]
        problems = [str(m) for m in found if isinstance(m, MemberProblem)]
        members = [m for m in found if isinstance(m, Member)]
        if problems:
            fusions[camera] = CameraFusion(camera, members, problem="; ".join(problems))
            log.warning("camera %s is not fused: %s", camera, fusions[camera].problem)
            continue
        labels = labels or [m.label for m in members]
        fusions[camera] = CameraFusion(
            camera, members, fused_version(members, cfg.fusion.rule, cfg.fusion.threshold_quantile),
            fused_threshold(members, cfg.fusion.rule, cfg.fusion.threshold_quantile),
        )
    labels = labels or [spec.label or f"member{i + 1}" for i, spec in enumerate(cfg.fusion.members)]
    if len(set(labels)) < len(labels):
        raise ValueError(f"fusion members share a label ({', '.join(labels)}): give each a fusion.members[].label")
    plan = FusePlan(uuid.uuid4().hex[:16], run_date or started_at.date().isoformat(), started_at, fused_name(cfg, labels), fusions)
    for camera, fusion in sorted(fusions.items()):
        uris = sorted({uri for (uri, name, version), (_, _, cam) in scored.items()
                       if cam == camera and any((name, version) == (m.name, m.version) for m in fusion.members)})
        for uri in uris:
            plan.videos += 1
            _decide(plan, fusion, uri, scored, manifest, cfg.run.incremental)
    log.info(
        "fusion %s: %d cameras, %d videos scored by a member, %d to fuse, %d up to date, %d not fusable (errors)",
        plan.name, len(fusions), plan.videos, len(plan.todo), plan.up_to_date, len(plan.errors),
    )
    return plan


def _decide(plan: FusePlan, fusion: CameraFusion, uri: str, scored: dict, manifest: dict, incremental: bool) -> None:
    if fusion.problem:
        plan.errors.append(error_row(uri, "member", error_class="MemberUnavailable", message=fusion.problem))
        return
    found = [scored.get((uri, m.name, m.version)) for m in fusion.members]
    missing = [m for m, f in zip(fusion.members, found) if f is None]
    if missing:
        names = ", ".join(f"{m.label} ({m.name} version {m.version})" for m in missing)
        plan.errors.append(error_row(uri, "member", error_class="MemberMissing",
                                     message=f"not scored by {names}: score it with that model, then fuse again"))
        return
    entries = [f[0] for f in found]
    if len({(e.size, round(e.mtime, 3)) for e in entries}) > 1:
        plan.errors.append(error_row(uri, "member", error_class="MemberStale", message=(
            "the members scored different copies of the video (size, mtime: "
            + "; ".join(f"{m.label} {e.size}, {e.mtime:.3f}" for m, e in zip(fusion.members, entries)) + "): score it again with each")))
        return
    size, mtime = entries[0].size, entries[0].mtime
    if incremental and is_up_to_date(manifest.get(ManifestKey(uri, plan.name, fusion.version, DECODE)), size, mtime):
        plan.up_to_date += 1
        return
    plan.todo.append(VideoTask(uri, found[0][1], fusion.camera, size, mtime, [e.scores_path for e in entries]))
