"""What every CLI command shares: the --json option, opening storage, and argument types."""

from __future__ import annotations

from datetime import UTC, datetime

import click

from tablebackup.cli.output import record_json
from tablebackup.core.instants import parse_instant

# Eager, so that --json is known before the other options are checked: their usage errors are then
# a JSON document too (tablebackup.cli.app.main).
json_option = click.option(
    "--json",
    "as_json",
    is_flag=True,
    is_eager=True,
    callback=record_json,
    help='Print exactly one JSON document on stdout, a failure\'s too: {"error": ..., "exit_code": N}.',
)


def not_blank(what: str):
    """A callback refusing a given but empty or blank value (an unset shell variable) of an option that
    names or narrows what the command touches: a usage error, never the option's default. Keys
    (--partition-key, --row-key) do not use it: an empty key is a key."""

    def check(ctx, param, value):
        values = value if isinstance(value, tuple) else (value,)  # a repeatable option's values
        if any(isinstance(v, str) and not v.strip() for v in values):
            leave = "" if param.required else ", or leave the option out"
            raise click.BadParameter(f"is empty: give {what}{leave}", ctx, param)
        return value

    return check


def target_option(help_text: str):
    return click.option("--target", callback=not_blank("a table name"), help=help_text)


def table_option(help_text: str):
    return click.option("--table", "-t", required=True, callback=not_blank("a table name"), help=help_text)


allow_app_table_option = click.option(
    "--allow-app-table",
    is_flag=True,
    help="Allow one of the app's own tables (AUDIT_TABLE, ERASURES_TABLE, ...) as the target, e.g. to "
    "restore it from its own backup; only in a mode that deletes nothing (never mirror).",
)


def typing_options(command):
    """--types and --infer-types: how to type what an input does not (tablebackup.transfer.typerules)."""
    command = click.option(
        "--infer-types",
        is_flag=True,
        help="Type what the input leaves untyped as it looks (DateTime-looking strings as Edm.DateTime, "
        "Guid-looking ones as Edm.Guid, whole numbers of a JS backup as Edm.Int32); reports each property typed.",
    )(command)
    return click.option(
        "--types",
        "types_text",
        metavar="NAME=Edm.TYPE,...",
        callback=not_blank("NAME=Edm.TYPE pairs"),
        help="The EDM type of properties the input leaves untyped, e.g. when=Edm.DateTime,score=Edm.Double.",
    )(command)


def parse_types_option(text: str | None) -> dict[str, str]:
    from tablebackup.core.errors import InvalidInput
    from tablebackup.transfer.typerules import parse_types

    try:
        return parse_types(text)
    except InvalidInput as error:
        raise click.BadParameter(str(error), param_hint="--types") from None


def typed_lines(data: dict) -> list[str]:
    """What --infer-types typed, one line per property, and any warning about the input."""
    lines = [
        f"typed {name} as " + ", ".join(f"{edm} ({count:,} entities)" for edm, count in counts.items())
        for name, counts in data.get("typed", {}).items()
    ]
    return lines + [f"warning: {warning}" for warning in data.get("warnings", [])]


class CommandFailed(Exception):
    """The command ran but its outcome is a failure (exit 1); its output was already printed."""


def open_storage():
    """Storage from the settings, read on first use so --help works without any."""
    from tablebackup.core.clients import Storage

    return Storage.from_settings()


def current_user() -> str:
    """Who runs the CLI, for the audit trail."""
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def human_size(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return str(size)


class IsoInstant(click.ParamType):
    name = "ISO-8601"

    def convert(self, value, param, ctx):
        if isinstance(value, datetime):
            return value
        if not value.strip():
            self.fail(
                "is empty: give an ISO-8601 instant such as 2026-11-25T02:00:00Z, or leave the option out", param, ctx
            )
        try:
            instant = parse_instant(value)  # keeps a 7th fractional digit
        except ValueError:
            self.fail(f"{value!r} is not an ISO-8601 instant such as 2026-11-25T02:00:00Z", param, ctx)
        try:
            # An offset can carry an instant past year 1 or 9999 in UTC, where no arithmetic works.
            instant.astimezone(UTC)
        except OverflowError:
            self.fail(f"{value!r} is outside the years 0001 to 9999 in UTC", param, ctx)
        return instant


class GivenPath(click.Path):
    """A click.Path that refuses an empty or blank one, which click would take for the current folder."""

    def convert(self, value, param, ctx):
        if isinstance(value, str) and not value.strip():
            leave = "" if param is not None and param.required else ", or leave the option out"
            what = "a file or folder name" if self.dir_okay else "a file name"
            self.fail(f"is empty: give {what}{leave}", param, ctx)
        return super().convert(value, param, ctx)
