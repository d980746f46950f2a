"""The real UCF-Crime C3D feature samples (Sultani et al. 2018) from the shared data folder."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vad.datasets import extract_once

ARCHIVE = "ucf_crime_c3d_samples.tar.gz"


@dataclass
class FeatureVideo:
    name: str
    category: str  # "Normal" or the crime class
    segments: np.ndarray  # (32, 4096) C3D fc6, as released
    anomaly_frames: list[tuple[int, int]]  # annotated [start, end] frame ranges; empty for normal videos

    @property
    def is_anomalous(self) -> bool:
        return self.category != "Normal"


def load_ucf_crime_samples() -> list[FeatureVideo]:
    root = extract_once(ARCHIVE, "ucf_crime", "ucf_crime_sultani/Temporal_Anomaly_Annotation.txt") / "ucf_crime_sultani"
    annotations = {}
    for line in (root / "Temporal_Anomaly_Annotation.txt").read_text().splitlines():
        parts = line.split()
        if len(parts) >= 6:
            spans = [(int(a), int(b)) for a, b in zip(parts[2::2], parts[3::2]) if int(a) >= 0]
            annotations[parts[0].rsplit(".", 1)[0]] = (parts[1], spans)
    videos = []
    for path in sorted((root / "SampleVideos").glob("*.txt")):
        features = np.loadtxt(path, dtype=np.float32)
        if features.shape != (32, 4096):
            raise ValueError(f"{path.name}: expected 32x4096 C3D features, got {features.shape}")
        category, spans = annotations.get(path.stem, ("Normal" if path.stem.startswith("Normal") else "Unknown", []))
        videos.append(FeatureVideo(path.stem, category, features, spans))
    return videos
