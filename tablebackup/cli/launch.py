"""The installed `tablebackup` command and `python -m tablebackup`: loads the CLI, so that even an
installation too broken to load it (a missing module) exits with the internal-error code, 3, in one
line, never with Python's traceback and exit 1, which a cron gate would read as "not protected"."""

from __future__ import annotations

import sys

EXIT_INTERNAL = 3  # tablebackup.cli.app.EXIT_INTERNAL, which may be what failed to load


def entry() -> int:
    try:
        from tablebackup.cli.app import main
    except Exception as error:  # the CLI itself could not load
        lines = str(error).strip().splitlines()
        message = f"internal error: {type(error).__name__}" + (f": {lines[0]}" if lines else "")
        sys.stderr.write(f"error: {message}\n")
        if "--json" in sys.argv[1:]:
            import json

            sys.stdout.write(json.dumps({"error": message, "exit_code": EXIT_INTERNAL}, indent=2) + "\n")
        return EXIT_INTERNAL
    return main()
