"""vad: cluster-scale anomaly scoring of archived surveillance video."""

__version__ = "0.1.0"
