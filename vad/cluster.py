"""Reaching Ray: join the cluster a job names, or start a private local Ray on this machine.

A job joins a cluster only when its config names one (`"auto"` or an address). Otherwise it starts
its own local Ray, even when other Ray instances run on the same host (another user's, another
virtualenv's): attaching to a stranger's cluster would run the job with foreign code and resources.
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


_ADVICE = (
    "check the address, that the head is running and runs the same Ray and Python versions, "
    "or set it to null to start a local Ray"
)


class ClusterError(RuntimeError):
    """Ray could not be reached or used as configured; the message says what to change."""


def ensure_ray(address: str | None, num_cpus: int | None = None, *, dashboard: bool = False, verbose: bool = False) -> None:
    """Connect once per process: to `address` when given, else a new local Ray (with `num_cpus`).

    `dashboard`: start the local Ray with its dashboard (Ray Train's controller is watched
    through the state API it serves); the scoring job does without. `verbose` (-v): Ray's workers' output
    and Ray Data's per-operator progress bars on the console (the jobs draw one bar of their own)."""
    import ray
    import ray.data

    if ray.is_initialized():
        return
    ray.data.DataContext.get_current().enable_progress_bars = verbose
    # Workers' output reaches the console only with -v; it is in Ray's session logs either way.
    kwargs: dict = {"log_to_driver": verbose, "logging_level": logging.INFO if verbose else logging.WARNING}
    if not dashboard:
        kwargs["include_dashboard"] = False
    if address:
        if num_cpus:
            log.warning("num_cpus %d is for a local Ray; the cluster at %r has its own CPUs", num_cpus, address)
        unreachable = _unreachable(address)
        if unreachable:
            raise ClusterError(f"cannot join the Ray cluster at {address!r} ({unreachable}); {_ADVICE}")
        try:
            ray.init(address=address, **kwargs)
        except Exception as exc:  # noqa: BLE001 - Ray raises ConnectionError, RuntimeError, ValueError...
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ClusterError(f"cannot join the Ray cluster at {address!r} ({reason}); {_ADVICE}") from None
        return
    ray.init(address="local", **({"num_cpus": num_cpus} if num_cpus else {}), **kwargs)
    node = getattr(ray._private.worker, "_global_node", None)
    log.info("started a local Ray (%s); its logs: %s", ray.cluster_resources(), node.get_logs_dir_path() if node else "?")


def _unreachable(address: str, timeout_s: float = 5.0) -> str | None:
    """Why a `host:port` (or `ray://host:port`) address cannot be reached, in seconds rather than after
    Ray's own minutes of retries; None when it answers or is not of that form (e.g. "auto")."""
    import socket

    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        return None
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            return None
    except OSError as exc:
        return f"{host}:{port}: {exc.strerror or exc}"
