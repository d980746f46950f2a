"""The accuracy protocol every benchmark follows: designs recorded before a test run, what was measured
stored as JSON under bench/results/, and a ledger of test runs.

- A *design* is a scorer with every setting that decides its figures (hyper-parameters as built,
  input, training schedule, how clips become frame scores). Its digest names it.
- Ped2's test videos are split once (`vad.datasets.ped2.SPLITS`): `dev` 01-06 may be read as often as
  needed; a run that reads `test` 07-12 (splits `test` and `all`) is refused unless its design is in
  `designs.json` and that file is committed unchanged in git, so the settings were written down first.
- Every test run is appended to `test_runs.jsonl` (design, digest, date, commit) before anything is
  read, and again with its figures when it ends; a second test run of one design is refused without `again` (a reason), and the
  README tables say how often a design was tested.
- One JSON record per (design, split): `ResultRecord`, schema `SCHEMA`. `bench/readme_tables.py` makes
  the README's accuracy tables from these files.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import os
import platform
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path

RESULTS_DIR = Path(__file__).resolve().parent / "results"
DESIGNS_FILE = RESULTS_DIR / "designs.json"
LEDGER_FILE = RESULTS_DIR / "test_runs.jsonl"
SCHEMA = 1
SPLITS = ("dev", "test", "all", "val")  # val: pseudo-anomalies in held-out *training* videos (no labels read)
TEST_SPLITS = ("test", "all")  # the splits that read 07-12's labels
METRICS = ("auc_micro", "auc_macro", "eer")


class ProtocolError(RuntimeError):
    """A run the protocol does not allow (a test run of an unrecorded design, a second test run, ...)."""


def digest(settings: dict) -> str:
    """12 hex digits naming a design: a hash of its settings as canonical JSON."""
    text = json.dumps(settings, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Design:
    benchmark: str  # "ped2" (frame-level, trained on normal videos) or "ped2_mil" (weakly supervised)
    scorer: str
    variant: str  # "full" (the benchmark's settings) or "fast" (the CI variant)
    settings: dict

    @property
    def key(self) -> str:
        return f"{self.benchmark}/{self.scorer}/{self.variant}"

    @property
    def digest(self) -> str:
        return digest({"benchmark": self.benchmark, "scorer": self.scorer, "variant": self.variant, **self.settings})


# ---------------------------------------------------------------------------------------- designs


def load_designs(path: Path = DESIGNS_FILE) -> dict[str, list[dict]]:
    """design key -> its recorded designs, oldest first ({digest, settings, recorded})."""
    if not Path(path).is_file():
        return {}
    return json.loads(Path(path).read_text())["designs"]


def record_design(design: Design, path: Path = DESIGNS_FILE, note: str = "") -> bool:
    """Write `design` into the designs file (kept beside the earlier designs of its key); False when it
    is there already. Commit the file before a test run: `check_recorded` asks git."""
    designs = load_designs(path)
    entries = designs.setdefault(design.key, [])
    if any(e["digest"] == design.digest for e in entries):
        return False
    entries.append({"digest": design.digest, "recorded": today(), "note": note, "settings": design.settings})
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps({"designs": dict(sorted(designs.items()))}, indent=1, sort_keys=False, default=str) + "\n")
    return True


def recorded_digests(key: str, path: Path = DESIGNS_FILE) -> list[str]:
    return [e["digest"] for e in load_designs(path).get(key, [])]


def current_digest(key: str, path: Path = DESIGNS_FILE) -> str | None:
    """The newest recorded design of `key` (the one the README tables show), or None."""
    digests = recorded_digests(key, path)
    return digests[-1] if digests else None


def committed(path: Path) -> tuple[bool, str]:
    """(True, commit) when `path` is tracked by git and has no uncommitted change; (False, why) otherwise."""
    path = Path(path).resolve()
    cwd = path.parent

    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)

    if git("ls-files", "--error-unmatch", path.name).returncode != 0:
        return False, f"{path} is not committed to git"
    if git("diff", "--quiet", "HEAD", "--", path.name).returncode != 0:
        return False, f"{path} has changes that are not committed"
    return True, git("rev-parse", "HEAD").stdout.strip()


def check_recorded(design: Design, path: Path = DESIGNS_FILE, require_committed: bool = True) -> str:
    """Before any 07-12 label is read: the design must be recorded (and the record committed). Returns
    the commit (or '' when `require_committed` is off); raises ProtocolError otherwise."""
    if design.digest not in recorded_digests(design.key, path):
        raise ProtocolError(
            f"{design.key}: settings {design.digest} are not recorded in {path}; a run that reads the test "
            f"videos 07-12 needs its settings written down first. Choose them on --split dev, record them "
            f"(--record), commit {Path(path).name}, then run the test split once."
        )
    if not require_committed:
        return ""
    ok, commit_or_why = committed(path)
    if not ok:
        raise ProtocolError(f"{design.key}: {commit_or_why}; commit it before a test run")
    return commit_or_why


# ----------------------------------------------------------------------------------------- ledger


def ledger_rows(ledger: Path = LEDGER_FILE) -> list[dict]:
    if not Path(ledger).is_file():
        return []
    return [json.loads(line) for line in Path(ledger).read_text().splitlines() if line.strip()]


def begun_runs(ledger: Path = LEDGER_FILE) -> list[dict]:
    """One row per test run in the ledger, oldest first: the row written when it began (`status`
    "started"; a run that died after reading 07-12 counts too), or the one row of a run logged before
    rows carried a status."""
    return [r for r in ledger_rows(ledger) if r.get("status", "started") == "started"]


def previous_test_runs(design: Design, ledger: Path = LEDGER_FILE) -> list[dict]:
    """Every test run of this design (same key and digest), oldest first."""
    return [r for r in begun_runs(ledger) if r["design"] == design.key and r["digest"] == design.digest]


def begin_test_run(design: Design, split: str, *, again: str | None = None, designs: Path = DESIGNS_FILE,
                   ledger: Path = LEDGER_FILE, require_committed: bool = True) -> dict:
    """The gate in front of a run that reads 07-12: checks the design is recorded and committed and that
    it was not tested before (unless `again` says why), then appends the run to the ledger before
    anything is read, and returns its row, to be finished by `end_test_run`. Nothing is read or
    written when it refuses."""
    if split not in TEST_SPLITS:
        raise ValueError(f"split {split!r} does not read the test videos")
    commit = check_recorded(design, designs, require_committed)
    before = previous_test_runs(design, ledger)
    if before and not again:
        dates = ", ".join(r["date"] for r in before)
        raise ProtocolError(
            f"{design.key} ({design.digest}) was tested already ({dates}); a second test run of one design "
            "is made only with a reason (--again 'why'), and is then shown as such"
        )
    row = {"design": design.key, "digest": design.digest, "split": split, "date": today(), "commit": commit,
           "run": len(before) + 1, "again": again or ""}
    _append(ledger, {**row, "status": "started"})
    return row


def end_test_run(row: dict, figures: dict, ledger: Path = LEDGER_FILE) -> dict:
    """Append what the test run measured (`figures`: {metric: value}) to the ledger."""
    row = {**row, "status": "finished", "figures": figures}
    _append(ledger, row)
    return row


def _append(ledger: Path, row: dict) -> None:
    Path(ledger).parent.mkdir(parents=True, exist_ok=True)
    with open(ledger, "a") as fh:
        fh.write(json.dumps(row, sort_keys=True) + "\n")


# ---------------------------------------------------------------------------------------- records


def today() -> str:
    return _dt.date.today().isoformat()


def machine() -> dict:
    """What ran the benchmark: CPU model and cores, GPU if any, library versions."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"cpu": cpu, "cores": os.cpu_count(), "gpu": None, "python": platform.python_version()}
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:  # pragma: no cover - the benchmarks need torch
        pass
    return info


@dataclass
class ResultRecord:
    """One design's figures on one split. `figures[normalisation][metric]` holds one value per seed
    (`seeds`); `normalisation` names the headline one ('none': scores as the scorer gives them) and
    `paper_normalisation` the one its paper uses (reported beside it where it differs)."""

    benchmark: str
    scorer: str
    variant: str
    split: str
    design_digest: str
    settings: dict
    videos: list[str]
    seeds: list[int]
    figures: dict[str, dict[str, list[float]]]
    normalisation: str = "none"
    paper_normalisation: str = "none"
    fit_s: list[float] = field(default_factory=list)  # training or fitting seconds, per seed
    clips_per_s: list[float] = field(default_factory=list)  # scoring speed, per seed
    train_clips: int = 0
    scored_clips: int = 0  # clips the run scored (an `all` run's dev, test and all records share its count and speed)
    frames: int = 0  # labelled frames of the split
    test_run: int = 0  # 1 for the first test run of this design, 2 for a second...; 0 when 07-12 were not read
    date: str = ""
    machine: dict = field(default_factory=dict)
    command: str = ""
    note: str = ""
    schema: int = SCHEMA

    def __post_init__(self):
        problems = []
        if self.schema != SCHEMA:
            problems.append(f"schema {self.schema}, this code reads {SCHEMA}")
        if self.split not in SPLITS:
            problems.append(f"split {self.split!r} not one of {SPLITS}")
        if self.normalisation not in self.figures:
            problems.append(f"no figures for the headline normalisation {self.normalisation!r}")
        for norm, metrics in self.figures.items():
            for metric in METRICS:
                values = metrics.get(metric)
                if values is None or len(values) != len(self.seeds):
                    problems.append(f"figures[{norm!r}][{metric!r}] must hold one value per seed ({len(self.seeds)})")
        if (self.split in TEST_SPLITS) != (self.test_run > 0):
            problems.append(f"split {self.split!r} with test_run {self.test_run}: a run that reads 07-12 is numbered, others are 0")
        if problems:
            raise ValueError(f"result record {self.benchmark}/{self.scorer}/{self.variant}/{self.split}: " + "; ".join(problems))

    @property
    def key(self) -> str:
        return f"{self.benchmark}/{self.scorer}/{self.variant}"

    def mean(self, metric: str, normalisation: str | None = None) -> float:
        values = [v for v in self.figures[normalisation or self.normalisation][metric] if v is not None and not math.isnan(v)]
        return sum(values) / len(values) if values else math.nan

    def to_json(self) -> str:
        """The record as JSON; a NaN figure (e.g. macro AUC with no video holding both classes) is null."""
        data = asdict(self)
        data["figures"] = {n: {m: [None if isinstance(v, float) and math.isnan(v) else v for v in vs] for m, vs in ms.items()}
                           for n, ms in data["figures"].items()}
        return json.dumps(data, indent=1, allow_nan=False) + "\n"

    @classmethod
    def from_json(cls, text: str) -> ResultRecord:
        data = json.loads(text)
        if data.get("schema") != SCHEMA:
            raise ValueError(f"result record schema {data.get('schema')}, this code reads {SCHEMA}")
        data["figures"] = {n: {m: [math.nan if v is None else v for v in vs] for m, vs in ms.items()} for n, ms in data["figures"].items()}
        return cls(**data)

    def filename(self) -> str:
        return f"{self.benchmark}/{self.scorer}-{self.variant}-{self.split}-{self.design_digest}.json"


def write_record(record: ResultRecord, results_dir: Path = RESULTS_DIR) -> Path:
    """Write the record (replacing the same design's earlier record of that split: the ledger keeps
    every test run's figures)."""
    path = Path(results_dir) / record.filename()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(record.to_json())
    return path


def load_records(results_dir: Path = RESULTS_DIR) -> list[ResultRecord]:
    """The frame-level records (Ped2 and its weak MIL splits)."""
    return [ResultRecord.from_json(p.read_text()) for p in sorted(Path(results_dir).glob("ped2*/*.json"))]


PIXEL_METRICS = ("pixel_precision", "pixel_recall", "pixel_f1", "pixel_f1_all_ones", "pixel_f1_random", "pixel_auc", "pixel_area")


@dataclass
class PixelRecord:
    """Pixel-level figures of one scorer's masks in one mask mode on the synthetic scene
    (`bench/pixel_masks.py`; the renderer knows every anomalous pixel, so there is no split):
    `figures[metric]` holds one value per seed."""

    scorer: str
    mode: str
    settings: dict
    seeds: list[int]
    figures: dict[str, list[float]]
    fit_s: list[float] = field(default_factory=list)
    date: str = ""
    machine: dict = field(default_factory=dict)
    command: str = ""
    benchmark: str = "pixel_masks"
    schema: int = SCHEMA

    def __post_init__(self):
        missing = [m for m in PIXEL_METRICS if len(self.figures.get(m, [])) != len(self.seeds)]
        if missing or self.schema != SCHEMA:
            raise ValueError(f"pixel record {self.scorer}/{self.mode}: schema {self.schema}, one value per seed needed for {missing}")

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, allow_nan=False) + "\n"

    def filename(self) -> str:
        return f"{self.benchmark}/{self.scorer}-{self.mode}.json"


def write_pixel_record(record: PixelRecord, results_dir: Path = RESULTS_DIR) -> Path:
    path = Path(results_dir) / record.filename()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(record.to_json())
    return path


def load_pixel_records(results_dir: Path = RESULTS_DIR) -> list[PixelRecord]:
    return [PixelRecord(**json.loads(p.read_text())) for p in sorted(Path(results_dir).glob("pixel_masks/*.json"))]
