"""What a launch shows: the harness's own lines on the terminal; everything Ray, Tune, Optuna and
MLflow print (token notices, database migrations, Tune's boxed summary, hints that do not apply)
in the study's ``launch.log``, and on the terminal too with ``--verbose``.

The libraries print from Python, from C++ and from processes they start, so the capture is at
the file-descriptor level: fds 1 and 2 point at a pipe for the block, and a thread copies what
comes through into the log (and, verbose, onto the terminal). The harness's lines (``say``) and
the warnings that concern the user (``warn``: ours, one line each) go to the terminal directly,
and into the log too.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from study.tracking import redact

# the packages whose warnings are ours (the terminal shows them): study/ and vcrnet/, found from
# this file's place in the repository (study/launch/console.py)
ROOT = Path(__file__).parents[2]
OURS = (str(ROOT / "study"), str(ROOT / "vcrnet"))


@dataclass
class Console:
    say: Callable[[str], None]  # a harness line: terminal and log
    log: Path
    err: IO[str]  # the terminal's stderr (a progress bar)


@contextlib.contextmanager
def captured(log: Path, verbose: bool = False) -> Iterator[Console]:
    """Route fds 1 and 2 into ``log`` (appended) for the block; yields the ``Console``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        log_file = stack.enter_context(log.open("a", buffering=1))
        command = " ".join(redact(arg) for arg in sys.argv)  # no password of a URI
        log_file.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} {command}\n")
        out, err = (
            stack.enter_context(_terminal(sys.stdout, 1)),
            stack.enter_context(_terminal(sys.stderr, 2)),
        )
        lock = threading.Lock()

        def write(stream: IO[str], text: str) -> None:
            with lock:
                stream.write(text)
                stream.flush()
                log_file.write(text)

        def warn(line: str) -> None:
            write(err, f"vcr-study: warning: {line}\n")

        stack.enter_context(
            _fds_into(lambda chunk: _copy(chunk, log_file, err if verbose else None, lock))
        )
        stack.enter_context(_warnings_to(warn))
        stack.enter_context(_tune_warnings_to(warn))
        yield Console(lambda line: write(out, line + "\n"), log, err)


def _copy(chunk: str, log_file: IO[str], terminal: IO[str] | None, lock) -> None:
    with lock:
        log_file.write(chunk)
        if terminal is not None:
            terminal.write(chunk)
            terminal.flush()


@contextlib.contextmanager
def _terminal(stream: IO[str], fd: int) -> Iterator[IO[str]]:
    """A writer to what ``stream`` is now: a duplicate of fd ``fd`` if the stream writes there
    (the redirection moves fd ``fd``), else the stream itself (a test's capture)."""
    try:
        real = stream.fileno() == fd
    except (AttributeError, OSError, ValueError):
        real = False
    if not real:
        yield stream
        return
    stream.flush()
    with os.fdopen(os.dup(fd), "w", buffering=1) as terminal:
        yield terminal


@contextlib.contextmanager
def _fds_into(sink: Callable[[str], None]) -> Iterator[None]:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    read, write = os.pipe()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    for fd in (1, 2):
        os.dup2(write, fd)
    os.close(write)
    stop = threading.Event()
    thread = threading.Thread(
        target=_pump, args=(read, sink, stop), daemon=True, name="vcr-study-log"
    )
    thread.start()
    try:
        yield
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        for fd, copy in saved.items():
            os.dup2(copy, fd)
            os.close(copy)
        stop.set()
        thread.join(timeout=5)


def _pump(read: int, sink: Callable[[str], None], stop: threading.Event) -> None:
    """Copy the pipe into ``sink`` until ``stop`` and the pipe has nothing more to give (processes
    the libraries started may hold its other end for ever: no end of file to wait for)."""
    try:
        while True:
            ready, _, _ = select.select([read], [], [], 0.2)
            if not ready:
                if stop.is_set():
                    return
                continue
            chunk = os.read(read, 65536)
            if not chunk:
                return
            sink(chunk.decode(errors="replace"))
    finally:
        os.close(read)


@contextlib.contextmanager
def _warnings_to(warn: Callable[[str], None]) -> Iterator[None]:
    """Warnings raised by vcr-study's own code: one line on the terminal (and in the log); the
    libraries' (deprecations and the like): the log only."""
    shown = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        if str(filename).startswith(OURS):
            warn(str(message))
        else:
            print(
                warnings.formatwarning(message, category, filename, lineno, line).rstrip(),
                file=sys.stderr,
            )

    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = shown


# Ray Tune warnings that are the harness's own choice, not the user's concern: keeping one
# checkpoint a trial (num_to_keep=1, retention.py) forces a snapshot of the experiment's state at
# each checkpoint, which Tune warns about; the snapshot is a small JSON file a trial-epoch.
EXPECTED = ("Experiment state snapshotting has been triggered",)


class _OnceHandler(logging.Handler):
    """Ray Tune's warnings (a trial that cannot be placed on the resources there are, a slow
    callback): the first line of each, once, on the terminal (``EXPECTED`` ones only in the
    log)."""

    def __init__(self, warn: Callable[[str], None]):
        super().__init__(logging.WARNING)
        self.warn, self.seen = warn, set()

    def emit(self, record: logging.LogRecord) -> None:
        line = record.getMessage().strip().splitlines()[0] if record.getMessage().strip() else ""
        if line and line not in self.seen and not line.startswith(EXPECTED):
            self.seen.add(line)
            self.warn(f"Ray Tune: {line}")


@contextlib.contextmanager
def _tune_warnings_to(warn: Callable[[str], None]) -> Iterator[None]:
    handler, logger = _OnceHandler(warn), logging.getLogger("ray.tune")
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
