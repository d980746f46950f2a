"""The pyfunc wrapper of a vad checkpoint in the MLflow model registry (an MLflow "model from code":
this file is logged as the model, so nothing is pickled). Loading it reads the checkpoint with
`vad.models.checkpoint.load_checkpoint`, which refuses pickled objects.

Input: clips as float32 (B, T, H, W) or (B, T, H, W, 3) in [0, 1]; output: one score per clip.
"""

import mlflow
import numpy as np
from mlflow.pyfunc import PythonModel


class VadScorerModel(PythonModel):
    def load_context(self, context):
        from vad.models.checkpoint import load_checkpoint

        self.loaded = load_checkpoint(context.artifacts["checkpoint"])

    def predict(self, context, model_input: np.ndarray, params=None):  # the signature logged with the model describes it
        import torch

        if isinstance(model_input, dict):  # a named tensor input arrives as {"clips": array}
            model_input = model_input["clips"]
        clips = torch.from_numpy(np.asarray(model_input, dtype=np.float32))
        with torch.inference_mode():
            return self.loaded.model.score(clips).score.float().numpy()


mlflow.models.set_model(VadScorerModel())
