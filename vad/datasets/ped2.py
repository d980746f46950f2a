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
__all__ = ["ARCHIVE", "SPLITS", "Ped2", "cache_dir", "data_dir", "load_ped2", "split_videos"]

# The project's fixed split of the 12 test videos: designs and settings are chosen on `dev` (its labels
# may be read as often as needed); `test` is scored once per finished design, with its settings recorded
# first (bench/protocol.py); `all` is the 12 videos papers report on, the development half included.
SPLITS: dict[str, tuple[str, ...]] = {
    "dev": ("01", "02", "03", "04", "05", "06"),
    "test": ("07", "08", "09", "10", "11", "12"),
}
SPLITS["all"] = SPLITS["dev"] + SPLITS["test"]


def split_videos(split: str) -> tuple[str, ...]:
    """The test-folder videos of `split` ('dev', 'test' or 'all')."""
    try:
        return SPLITS[split]
    except KeyError:
        raise ValueError(f"unknown Ped2 split {split!r}; choose from {', '.join(SPLITS)}") from None


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

    def frame_count(self, name: str) -> int:
        return sum(1 for f in (self.test_dir / name).iterdir() if f.suffix.lower() in (".jpg", ".tif", ".png"))

    def test_labels(self, split: str = "all") -> dict[str, np.ndarray]:
        """Test video name ('01'..'12') -> per-frame 0/1 labels (frame 000.jpg first), for the videos
        of `split` only: the labels of the other videos are never returned (a `dev` run cannot read
        07-12's). The flat label file is cut by the frame counts of the videos before each one."""
        wanted = split_videos(split)
        flat = np.load(self.root / "frame_labels_ped2.npy", allow_pickle=False).reshape(-1)
        videos = self.test_videos()
        missing = sorted(set(wanted) - set(videos))
        if missing:
            raise ValueError(f"Ped2 test videos {missing} of split {split!r} are not in {self.test_dir}")
        labels, offset = {}, 0
        for name in videos[: videos.index(wanted[-1]) + 1]:  # a video's offset needs only the ones before it
            n = self.frame_count(name)
            if name in wanted:
                labels[name] = flat[offset : offset + n].astype(np.int8)
            offset += n
        if offset > len(flat) or (split == "all" and offset != len(flat)):
            raise ValueError(f"Ped2 labels cover {len(flat)} frames, the test folders hold {offset}")
        return labels


def load_ped2() -> Ped2:
    """Extract (once) and return UCSD Ped2; raises FileNotFoundError when the archive is not here."""
    return Ped2(extract_once(ARCHIVE, "ucsd_ped2", "ucsd_ped2/frame_labels_ped2.npy") / "ucsd_ped2")
