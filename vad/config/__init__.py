"""Job configuration: one YAML file per job, validated on load, one module per job's sections
(`common`, `score`, `train`, `fuse`) and how a file is read (`loading`).

Every section rejects unknown keys, so a typo fails loudly with the path of the bad key and, where one is
close, the key that was probably meant.
"""

from vad.config.common import (
    DEFAULT_KEY_PATTERN, AlertsConfig, ConfigError, DecodeConfig, MlflowConfig, RayConfig, SourceConfig, StorageConfig,
)
from vad.config.fuse import FuseJobConfig, FusionConfig, FusionMemberConfig
from vad.config.loading import load_config, load_storage, parse_config, parse_override, set_dotted
from vad.config.score import OutputConfig, ReportConfig, RunPolicyConfig, ScoreJobConfig, ScorerConfig
from vad.config.train import (
    DistributedConfig, RegistryConfig, TrainAlertsConfig, TrainJobConfig, TrainLoopConfig, TrainModelConfig, TrainOutputConfig,
)

__all__ = [
    "DEFAULT_KEY_PATTERN", "AlertsConfig", "ConfigError", "DecodeConfig", "DistributedConfig", "FuseJobConfig", "FusionConfig",
    "FusionMemberConfig", "MlflowConfig", "OutputConfig", "RayConfig", "RegistryConfig", "ReportConfig", "RunPolicyConfig",
    "ScoreJobConfig", "ScorerConfig", "SourceConfig", "StorageConfig", "TrainAlertsConfig", "TrainJobConfig", "TrainLoopConfig",
    "TrainModelConfig", "TrainOutputConfig", "load_config", "load_storage", "parse_config", "parse_override", "set_dotted",
]
