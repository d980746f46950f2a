"""The epoch bar of a Ray Train run: the workers' epoch callbacks leave their epochs on a small actor the
driver reads. Kept free of torch, so that the actor's process does not import it (~2.5 s of CPU on a small machine)."""

from __future__ import annotations


class EpochBoard:
    """Where the workers' epoch callbacks leave the last finished epoch, for the driver's progress bar."""

    def __init__(self):
        self.epochs, self.loss = 0, float("nan")

    def report(self, metrics: dict) -> None:
        if int(metrics["epoch"]) + 1 >= self.epochs:
            self.epochs, self.loss = int(metrics["epoch"]) + 1, float(metrics.get("train/loss", float("nan")))

    def state(self) -> tuple[int, float]:
        return self.epochs, self.loss


def report_epoch(board, metrics: dict) -> None:
    import ray

    ray.get(board.report.remote(metrics))


def fit_showing_epochs(trainer, board, epochs: int):
    """`trainer.fit()` in a thread while this one draws the epochs the workers report to `board`."""
    import concurrent.futures

    import ray

    from vad.console import Progress

    progress = Progress("training", epochs, "epochs")
    try:
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            fitting = pool.submit(trainer.fit)
            while not fitting.done():
                done, loss = ray.get(board.state.remote())
                progress.update(done, *([f"train/loss {loss:.5g}"] if loss == loss else []))
                concurrent.futures.wait([fitting], timeout=1.0)
            result = fitting.result()
        progress.update(ray.get(board.state.remote())[0])
        return result
    finally:
        progress.close()
        ray.kill(board)
