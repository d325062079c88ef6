"""How commands print: human text by default, exactly one JSON document with --json, errors as
one line on stderr, and progress on stderr only when it is a terminal."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import orjson


def emit(data: dict, as_json: bool, human: Callable[[dict], str]) -> None:
    if as_json:
        sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        sys.stdout.write(human(data).rstrip("\n") + "\n")


def fail(message: str) -> None:
    sys.stderr.write(f"error: {message}\n")


@contextmanager
def progress() -> Iterator[Callable[[str, int], None]]:
    """A callback (label, count) that shows a live counter with rate on a terminal's stderr."""
    if not sys.stderr.isatty():
        yield lambda label, count: None
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
        console=Console(stderr=True),
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
