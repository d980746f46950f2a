"""MLflow: the run a job logs into (`runs`), the model registry (`registry`), and the pyfunc model it serves."""
