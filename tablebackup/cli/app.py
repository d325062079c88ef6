"""The ops CLI. Each command parses its options, calls one domain function and prints the result."""

from __future__ import annotations

import os
import sys
import traceback

import click

from tablebackup.cli import audits, backups, erasures, inspects, output, prunes, restores, status, transfers, verifies
from tablebackup.cli.common import CommandFailed
from tablebackup.core.errors import BackupError

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERNAL = 3
EXIT_INTERRUPTED = 130

EXIT_CODES_HELP = """\b
Exit codes:
  0    success
  1    failure: the command ran and failed or refused (storage unreachable, a table or
       backup not found, a backup that fails verification; status: a table not protected)
  2    bad usage: an unknown option, a missing or conflicting argument
  3    internal error: a bug or a broken installation (--verbose shows the traceback)
  130  interrupted
Every failure ends with one `error: ...` line on stderr. With --json, stdout holds exactly
one JSON document even then: the command's own, or {"error": "...", "exit_code": N}.
"""


def _show_version(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    from tablebackup import __version__

    click.echo(f"tablebackup {__version__}")
    ctx.exit()


@click.group(no_args_is_help=True, epilog=EXIT_CODES_HELP, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--verbose", "-v", is_flag=True, help="Log what happens (table, backup, counts) on stderr.")
@click.option(
    "--quiet",
    "-q",
    is_flag=True,
    help="No progress lines and no lines about retried storage requests; errors and results still print.",
)
@click.option(
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_show_version,
    help="Print `tablebackup <version>` and exit.",
)
def app(verbose: bool, quiet: bool) -> None:
    """Back up, list, restore and verify Azure Table Storage backups.

    Settings come from the environment (see the README): AZURE_STORAGE_CONNECTION_STRING,
    BACKUP_BLOB_CONNECTION_STRING, TABLE_NAME, BACKUP_CONTAINER, ...

    Long work reports on stderr: a live counter on a terminal, else a `progress:` line every
    10 seconds; each retried storage request prints a `warning: retrying ...` line.
    """
    if verbose and quiet:
        raise click.UsageError("give --verbose or --quiet, not both")
    output.configure_logging(verbose, quiet)


for command in (
    backups.backup,
    backups.list_backups,
    restores.restore,
    restores.undelete,
    verifies.verify,
    verifies.drill,
    audits.audit,
    prunes.prune,
    transfers.export,
    transfers.import_,
    erasures.erase,
    status.status,
    inspects.show,
    inspects.diff,
    inspects.history,
):
    app.add_command(command)


def _json_asked(error: click.UsageError, args: list[str]) -> bool:
    """Whether a command whose options did not parse was given --json: its usage error is then a
    JSON document too. The group's own errors come before any command's --json."""
    command = error.ctx.command if error.ctx is not None else None
    if command is None or command is app or not any(param.name == "as_json" for param in command.params):
        return False
    given = args[: args.index("--")] if "--" in args else args
    return "--json" in given


def _failed(message: str, exit_code: int) -> int:
    output.fail(message)
    output.fail_json(message, exit_code)
    return exit_code


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else ""


def _storage_error(error: Exception) -> bool:
    """An Azure SDK error that no domain function turned into a BackupError: a failure of storage,
    not of this program (azure.core is only looked at if something imported it)."""
    exceptions = sys.modules.get("azure.core.exceptions")
    return exceptions is not None and isinstance(error, exceptions.AzureError)


def _environment_failure(error: Exception) -> str:
    """The one line for storage or the operating system failing (exit 1), without a URL's query."""
    if isinstance(error, BrokenPipeError):
        # The reader stopped early (e.g. `| head`); keep Python's exit flush from failing too.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return "stdout was closed before the output was written"
    if isinstance(error, OSError) and error.filename is not None and error.strerror:
        return f"{error.strerror}: {error.filename}"
    from tablebackup.core.retrysettings import failure_reason

    what = "storage request failed" if _storage_error(error) else "the operating system refused"
    return f"{what}: {type(error).__name__}: {failure_reason(error)}"


def _internal_error(error: Exception) -> int:
    """A bug or a broken installation: one line, the traceback only with --verbose."""
    if output.session().verbose:
        sys.stderr.write(output.redact("".join(traceback.format_exception(error))))
    first = _first_line(error)
    return _failed(f"internal error: {type(error).__name__}" + (f": {first}" if first else ""), EXIT_INTERNAL)


def main(argv: list[str] | None = None, prog_name: str = "tablebackup") -> int:
    """Run the CLI; returns the exit code:

    0    success
    1    failure: the command ran and failed or refused (a BackupError such as storage
         unreachable, a missing table or backup, a damaged backup; a failed verification, drill,
         import or backup of a table; status: a table not protected; storage or the operating
         system failing where no domain function said more)
    2    bad usage (click's usage errors: an unknown option, a missing or conflicting argument, a
         blank option that names or narrows what the command touches, a refusal of bad input
         that the domain makes before writing, as erase's)
    3    internal error: any other exception (a bug, a broken installation such as an
         ImportError); one line `error: internal error: <type>: <first line>`, the traceback
         only with --verbose
    130  interrupted (Ctrl-C)

    Every failure ends with one `error: ...` line on stderr, secrets masked. With --json (as soon
    as the command's options were read far enough to know it) stdout holds exactly one JSON
    document: the command's own if it printed one (a backup run with a failed table, a failed
    verification), else {"error": "<the error line's message>", "exit_code": N}; a document
    streamed part way (audit) is closed with those two fields.
    """
    output.start_session()
    args = sys.argv[1:] if argv is None else list(argv)
    try:
        # Without standalone mode click returns a ctx.exit(N)'s code instead of raising it (diff's 1).
        code = app.main(args=args, prog_name=prog_name, standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as error:
        sys.stderr.write(error.ctx.get_help() + "\n")
        return EXIT_USAGE
    except click.UsageError as error:
        if _json_asked(error, args):
            output.session().as_json = True
        return _failed(error.format_message().replace("\n", " "), EXIT_USAGE)
    except click.ClickException as error:
        return _failed(error.format_message().replace("\n", " "), error.exit_code)
    except (click.exceptions.Abort, KeyboardInterrupt):
        return _failed("interrupted", EXIT_INTERRUPTED)
    except click.exceptions.Exit as done:
        return done.exit_code
    except (CommandFailed, BackupError) as error:
        return _failed(str(error), EXIT_FAILED)
    except Exception as error:
        if _storage_error(error) or isinstance(error, OSError):
            return _failed(_environment_failure(error), EXIT_FAILED)
        return _internal_error(error)
    return code if type(code) is int else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
