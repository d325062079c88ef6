"""How commands print. Human text by default, exactly one JSON document on stdout with --json
(a failure's included: tablebackup.cli.app.main writes {"error": ..., "exit_code": N} when the
command printed nothing), errors as one line on stderr, and on stderr while long work runs: a live
counter on a terminal, a plain `progress:` line every PROGRESS_SECONDS elsewhere, and a `warning:
retrying ...` line for each retried storage request. --quiet leaves out progress and retries."""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TextIO

import orjson

# How often a plain progress line is written where no one watches a live counter (a pipe, a log).
PROGRESS_SECONDS = 10.0
# Not documented for users: the tests shorten the interval of the installed command with it.
PROGRESS_SECONDS_VARIABLE = "TABLEBACKUP_PROGRESS_SECONDS"
# tablebackup.core.retrysettings.RETRY_LOG, named here so that --help imports no SDK.
RETRY_LOGGER = "tablebackup.retries"


@dataclass
class Session:
    """What this command line asked for, and whether a document is on stdout yet."""

    as_json: bool = False
    quiet: bool = False
    verbose: bool = False
    document_written: bool = False
    # The closing of a JSON document written piece by piece that has not been closed yet.
    open_document: str | None = None


_session = Session()


def start_session() -> Session:
    """A fresh session for one run of the command line (main may run several in one process)."""
    global _session
    _session = Session()
    return _session


def session() -> Session:
    return _session


def record_json(ctx, param, value: bool) -> bool:
    """The --json option's callback: it is eager, so a usage error in the other options is
    reported as a JSON document too."""
    if value:
        _session.as_json = True
    return value


def emit(data: dict, as_json: bool, human: Callable[[dict], str]) -> None:
    if as_json:
        sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        sys.stdout.write(human(data).rstrip("\n") + "\n")
    _session.document_written = True


@contextmanager
def json_stream(closing: str) -> Iterator[None]:
    """A JSON document written piece by piece: inside, `closing` is what ends what has been written
    so far but the final `}`. If the block fails, main closes the document with the error fields, so
    stdout still holds one document."""
    _session.open_document = closing
    yield
    _session.open_document = None
    _session.document_written = True


# Secrets an error's text may quote: a connection string's key or SAS, a SAS in a URL's query.
_SECRET_FIELD = re.compile(r"(?i)\b(AccountKey|SharedAccessKey|SharedAccessSignature|sig)=[^;&\s'\"]+")
_URL_QUERY = re.compile(r"(https?://[^\s?'\"]+)\?[^\s'\"]*")


def redact(text: str) -> str:
    """The text with keys and SAS tokens masked and URLs' query strings cut off."""
    return _SECRET_FIELD.sub(r"\1=***", _URL_QUERY.sub(r"\1?…", text))


def fail(message: str) -> None:
    """The failure's one line on stderr."""
    sys.stderr.write(f"error: {redact(message)}\n")


def fail_json(message: str, exit_code: int) -> None:
    """With --json: the failure as the one document on stdout; a streamed document gets the error
    fields as its last ones, and a command that printed its own document (say, a backup run with a
    failed table) already told the outcome."""
    if not _session.as_json:
        return
    fields = {"error": redact(message), "exit_code": exit_code}
    if _session.open_document is not None:
        tail = "".join(f",\n  {orjson.dumps(k).decode()}: {orjson.dumps(v).decode()}" for k, v in fields.items())
        text = f"{_session.open_document}{tail}\n}}\n"
    elif not _session.document_written:
        text = orjson.dumps(fields, option=orjson.OPT_INDENT_2).decode() + "\n"
    else:
        return
    _session.open_document, _session.document_written = None, True
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except OSError:
        pass  # stdout is gone (a closed pipe): stderr has the error line


class _RetryLines(logging.StreamHandler):
    """Retried storage requests as `warning: ...` lines on the current stderr."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)
        self.setFormatter(logging.Formatter("warning: %(message)s"))


def configure_logging(verbose: bool, quiet: bool) -> None:
    """--verbose logs what happens; otherwise only retries are shown, each as one line (not with
    --quiet); failures are reported once, as the command's last line."""
    _session.verbose, _session.quiet = verbose, quiet
    logging.basicConfig(
        level=logging.INFO if verbose else logging.CRITICAL,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("azure").setLevel(logging.WARNING)
    retries = logging.getLogger(RETRY_LOGGER)
    for handler in [h for h in retries.handlers if isinstance(h, _RetryLines)]:
        retries.removeHandler(handler)
    if verbose:
        retries.setLevel(logging.NOTSET)
        retries.propagate = True
    else:
        retries.setLevel(logging.ERROR if quiet else logging.WARNING)
        retries.propagate = False
        if not quiet:
            retries.addHandler(_RetryLines())


def progress_seconds() -> float:
    """PROGRESS_SECONDS, or what TABLEBACKUP_PROGRESS_SECONDS says (a positive number of seconds)."""
    try:
        seconds = float(os.environ.get(PROGRESS_SECONDS_VARIABLE) or PROGRESS_SECONDS)
    except ValueError:
        return PROGRESS_SECONDS
    return seconds if seconds > 0 else PROGRESS_SECONDS


class ProgressLines:
    """Progress for a reader who sees no live counter (a pipe, a log file, CI): on each `write()`,
    one line for each label whose count moved since its last line, with the rate between the
    label's first and latest reports (left out until there are two)."""

    def __init__(self, stream: TextIO, clock: Callable[[], float] = time.monotonic) -> None:
        self._stream = stream
        self._clock = clock
        self._lock = threading.Lock()  # parallel backups report from several threads
        self._first: dict[str, tuple[int, float]] = {}
        self._latest: dict[str, tuple[int, float]] = {}
        self._written: dict[str, int] = {}

    def report(self, label: str, count: int) -> None:
        now = self._clock()
        with self._lock:
            self._first.setdefault(label, (count, now))
            self._latest[label] = (count, now)

    def _line(self, label: str, count: int, at: float) -> str:
        first_count, first_at = self._first[label]
        line = f"progress: {label}: {count:,} entities"
        if at > first_at:
            line += f" ({(count - first_count) / (at - first_at):,.0f}/s)"
        return line + "\n"

    def write(self) -> None:
        with self._lock:
            lines = []
            for label, (count, at) in self._latest.items():
                if count != self._written.get(label):
                    self._written[label] = count
                    lines.append(self._line(label, count, at))
        if lines:
            self._stream.write("".join(lines))
            self._stream.flush()


@contextmanager
def progress(interval: float | None = None, stream: TextIO | None = None) -> Iterator[Callable[[str, int], None]]:
    """A callback (label, count) that shows how long work goes on, on stderr: a live counter with
    rate on a terminal, else a plain line every `interval` seconds (default progress_seconds()),
    nothing with --quiet."""
    stream = stream or sys.stderr
    if _session.quiet:
        yield lambda label, count: None
        return
    if not stream.isatty():
        lines = ProgressLines(stream)
        stop = threading.Event()
        seconds = interval or progress_seconds()

        def tick() -> None:
            while not stop.wait(seconds):
                try:
                    lines.write()
                except (OSError, ValueError):
                    return  # stderr was closed: keep the work going

        ticker = threading.Thread(target=tick, name="progress-lines", daemon=True)
        ticker.start()
        try:
            yield lines.report
        finally:
            stop.set()
            ticker.join()
        return
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    tasks: dict[str, tuple[int, float]] = {}
    lock = threading.Lock()  # parallel backups report from several threads
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TextColumn("{task.completed:,} entities"),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        console=Console(file=stream),
        transient=False,
    ) as bar:

        def report(label: str, count: int) -> None:
            with lock:
                if label not in tasks:
                    tasks[label] = (bar.add_task(label, total=None, rate=""), time.monotonic())
                task, started = tasks[label]
            rate = count / max(time.monotonic() - started, 1e-6)
            bar.update(task, completed=count, rate=f"{rate:,.0f}/s")

        yield report
