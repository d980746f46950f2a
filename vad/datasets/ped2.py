"""UCSD Ped2 (Mahadevan et al. 2010) from the shared data folder, for tests and benchmarks.

The archive is never part of the project: it is read from `$VAD_DATA` or from
`../shared/data/` beside the checkout, and extracted once into a cache folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vad.datasets import cache_dir, data_dir, extract_once

ARCHIVE = "ucsd_ped2.tar.gz"
__all__ = ["ARCHIVE", "Ped2", "cache_dir", "data_dir", "load_ped2"]


@dataclass(frozen=True)
class Ped2:
    root: Path  # folder holding training/ and testing/

    @property
    def train_dir(self) -> Path:
        return self.root / "training" / "frames"

    @property
    def test_dir(self) -> Path:
        return self.root / "testing" / "frames"

    def test_videos(self) -> list[str]:
        return sorted(p.name for p in self.test_dir.iterdir() if p.is_dir())

    def test_labels(self) -> dict[str, np.ndarray]:
        """Test video name ('01'..'12') -> per-frame 0/1 labels (frame 000.jpg first)."""
        flat = np.load(self.root / "frame_labels_ped2.npy", allow_pickle=False).reshape(-1)
        labels, offset = {}, 0
        for name in self.test_videos():
            n = sum(1 for f in (self.test_dir / name).iterdir() if f.suffix.lower() in (".jpg", ".tif", ".png"))
            labels[name] = flat[offset : offset + n].astype(np.int8)
            offset += n
        if offset != len(flat):
            raise ValueError(f"Ped2 labels cover {len(flat)} frames, the test folders hold {offset}")
        return labels


def load_ped2() -> Ped2:
    """Extract (once) and return UCSD Ped2; raises FileNotFoundError when the archive is not here."""
    return Ped2(extract_once(ARCHIVE, "ucsd_ped2", "ucsd_ped2/frame_labels_ped2.npy") / "ucsd_ped2")
