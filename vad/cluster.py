"""Reaching Ray: join the cluster a job names, or start a local Ray on this machine."""

from __future__ import annotations


def ensure_ray(address: str | None, num_cpus: int | None = None, *, dashboard: bool = False) -> None:
    """Connect once per process: to `address` when given, else a local Ray (with `num_cpus`).

    `dashboard`: start the local Ray with its dashboard (Ray Train's controller is watched
    through the state API it serves); the scoring job does without."""
    import ray

    if ray.is_initialized():
        return
    kwargs: dict = {} if dashboard else {"include_dashboard": False, "log_to_driver": True}
    if address:
        kwargs["address"] = address
    elif num_cpus:
        kwargs["num_cpus"] = num_cpus
    ray.init(**kwargs)
