"""Benchmark data sets read from the shared data folder (never part of the project): UCSD Ped2 frames
with frame labels, UCF-Crime C3D features. Archives are found in `$VAD_DATA` or `../shared/data/`
beside the checkout and extracted once into a cache folder (`$VAD_CACHE`, default ~/.cache/vad)."""

from __future__ import annotations

import os
import tarfile
from pathlib import Path


def data_dir(archive: str = "ucsd_ped2.tar.gz") -> Path | None:
    """The folder that holds `archive`, or None."""
    candidates = [os.environ.get("VAD_DATA")] if os.environ.get("VAD_DATA") else []
    repo = Path(__file__).resolve().parents[2]
    candidates += [str(repo.parent / "shared" / "data"), str(repo / "shared" / "data")]
    for candidate in candidates:
        if (Path(candidate) / archive).is_file():
            return Path(candidate)
    return None


def cache_dir() -> Path:
    return Path(os.environ.get("VAD_CACHE", Path.home() / ".cache" / "vad"))


def extract_once(archive: str, name: str, done_marker: str) -> Path:
    """`archive` extracted into the cache folder `name` unless `done_marker` (a path inside it) is
    there already; returns that folder. Raises FileNotFoundError when the archive is not here."""
    source = data_dir(archive)
    if source is None:
        raise FileNotFoundError(f"{archive} not found: set VAD_DATA to the folder that holds it")
    target = cache_dir() / name
    if not (target / done_marker).is_file():
        target.mkdir(parents=True, exist_ok=True)
        with tarfile.open(source / archive) as tar:
            tar.extractall(target, filter="data")  # refuses absolute paths, links out of target, devices
    return target
