"""mil: deep MIL ranking head over backbone clip features (Sultani et al. 2018)."""

from vad.models.registry import LearningType, ModelMeta, Tiny
from vad.models.scorers.catalog import register
from vad.models.scorers.mil.model import mil

register(
    ModelMeta(
        name="mil", builder=mil, paper="Sultani, Chen & Shah, Real-world Anomaly Detection in Surveillance Videos, CVPR 2018",
        clip_len=16, grayscale=False, normalisation="the backbone's (see its record)", evaluation_normalisation="none",
        learning_type=LearningType.WEAKLY_SUPERVISED, tiny=Tiny({"extractor": "i3d"}, (2, 16, 32, 32, 3)),
    )
)
