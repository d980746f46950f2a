"""What a person sees while a job runs: one progress bar, the warnings that matter, the summary.

Everything else (library logs at DEBUG, Ray's and its libraries' own output, C++ messages of the
Ray core, Python warnings) goes to one log file per command under `<work_dir>/logs/`, whose path is
printed at the end. `vad -v` shows it all on the console instead.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import sys
import time
from pathlib import Path

_console = None  # the terminal's stream while `stderr_to_file` sends fd 2 to a log file


def stream():
    """Where progress and warnings for people go: the terminal, even while stderr is redirected."""
    return _console or sys.stderr


def setup_logging(verbose: bool) -> None:
    """Console logging for a command: INFO and up with -v, WARNING and up otherwise."""
    logging.getLogger("mlflow").setLevel(logging.INFO if verbose else logging.WARNING)
    root = logging.getLogger()
    root.setLevel(logging.DEBUG)
    handler = logging.StreamHandler(stream())
    handler.setLevel(logging.INFO if verbose else logging.WARNING)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s" if verbose else "%(levelname)s: %(message)s"))
    handler.addFilter(lambda record: verbose or record.name.startswith("vad"))  # others' warnings: log file only
    handler.set_name("vad-console")
    root.handlers = [h for h in root.handlers if h.get_name() != "vad-console"] + [handler]
    logging.captureWarnings(True)


class _Kept(logging.Handler):
    def __init__(self, into: list[str]):
        super().__init__(logging.WARNING)
        self.into = into

    def emit(self, record: logging.LogRecord) -> None:
        self.into.append(record.getMessage())


@contextlib.contextmanager
def kept_warnings(logger: str = "vad"):
    """The warnings `logger` and its children log inside the block, as a list of messages: work run in a Ray task
    logs on its worker, out of the person's sight, so the task hands them back for the driver to say again."""
    kept: list[str] = []
    handler = _Kept(kept)
    target = logging.getLogger(logger)
    target.addHandler(handler)
    try:
        yield kept
    finally:
        target.removeHandler(handler)


def _console_handlers(to) -> None:
    for handler in logging.getLogger().handlers:
        if handler.get_name() == "vad-console":
            handler.setStream(to)


@contextlib.contextmanager
def stderr_to_file(path: Path):
    """Send this process's file descriptor 2 (and so its child processes' stderr: Ray's, C++ messages) to `path`
    while it lasts; the console handler and `stream()` keep writing to the terminal. Nested: nothing more."""
    global _console
    if _console is not None:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    _console = os.fdopen(os.dup(saved), "w", buffering=1)
    _console_handlers(_console)
    with open(path, "ab", buffering=0) as log:
        os.dup2(log.fileno(), 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        _console_handlers(sys.stderr)
        _console.close()
        _console = None


@contextlib.contextmanager
def job_output(work_dir: str, command: str, *, verbose: bool = False):
    """A job's log file under `work_dir/logs/`: everything the library logs, and (without `verbose`, -v) this
    process's stderr and its child processes' (`stderr_to_file`), the terminal kept for progress and warnings;
    yields the file's path and names it on the console at the end, also when the job fails."""
    folder = Path(work_dir).expanduser().resolve() / "logs"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{command}-{dt.datetime.now():%Y%m%d-%H%M%S}-{os.getpid()}.log"
    file_handler = logging.FileHandler(path)
    file_handler.setLevel(logging.DEBUG)
    file_handler.addFilter(lambda record: record.levelno >= logging.INFO or record.name.startswith("vad"))  # not botocore's DEBUG
    file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(file_handler)
    try:
        with contextlib.nullcontext() if verbose else stderr_to_file(path):
            yield path
    finally:
        logging.getLogger().removeHandler(file_handler)
        file_handler.close()
        print(f"vad {command}: log in {path}", file=sys.stderr)


class Progress:
    """One progress line: done/total, extra figures, rate and time left. Redrawn in place on a
    terminal; elsewhere (a log, CI) printed every `every_s` seconds and once at the end."""

    def __init__(self, what: str, total: int, unit: str, every_s: float = 15.0):
        self.what, self.total, self.unit, self.every_s = what, total, unit, every_s
        self.done, self.notes = 0, ()
        self.started = self._last = time.monotonic()
        self._tty = hasattr(stream(), "isatty") and stream().isatty()
        self._drawn = False

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def update(self, done: int, *notes: str) -> None:
        self.done, self.notes = done, notes
        now = time.monotonic()
        if self._tty or now - self._last >= self.every_s:
            self._draw()
            self._last = now

    def _line(self) -> str:
        elapsed = time.monotonic() - self.started
        rate = self.done / elapsed if elapsed > 0 else 0.0
        left = (self.total - self.done) / rate if rate > 0 and self.total > self.done else 0.0
        width = 24
        filled = int(width * self.done / self.total) if self.total else width
        extra = "".join(f", {note}" for note in self.notes)
        return (
            f"{self.what} [{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} {self.unit}{extra}, "
            f"{elapsed:.0f} s" + (f", about {left:.0f} s left" if left else "")
        )

    def _draw(self) -> None:
        out = stream()
        out.write(("\r\x1b[2K" if self._tty else "") + self._line() + ("" if self._tty else "\n"))
        out.flush()
        self._drawn = True

    def close(self) -> None:
        self._draw()
        if self._tty:
            stream().write("\n")
            stream().flush()
