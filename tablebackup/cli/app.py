"""The ops CLI. Each command parses its options, calls one domain function and prints the result."""

from __future__ import annotations

import logging
import sys

import click

from tablebackup.cli import audits, backups, erasures, prunes, restores, status, transfers, verifies
from tablebackup.cli.common import CommandFailed
from tablebackup.cli.output import fail
from tablebackup.core.errors import BackupError


@click.group(no_args_is_help=True, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--verbose", "-v", is_flag=True, help="Log what happens (table, backup, counts) on stderr.")
def app(verbose: bool) -> None:
    """Back up, list, restore and verify Azure Table Storage backups.

    Settings come from the environment (see the README): AZURE_STORAGE_CONNECTION_STRING,
    BACKUP_BLOB_CONNECTION_STRING, TABLE_NAME, BACKUP_CONTAINER, ...
    """
    # Failures are reported once, as the command's last line; logs are opt-in.
    logging.basicConfig(
        level=logging.INFO if verbose else logging.CRITICAL,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("azure").setLevel(logging.WARNING)


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
):
    app.add_command(command)


def main(argv: list[str] | None = None, prog_name: str = "tablebackup") -> int:
    """Run the CLI; returns the exit code: 0 success, 1 failure, 2 bad usage."""
    try:
        app.main(args=argv, prog_name=prog_name, standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as error:
        sys.stderr.write(error.ctx.get_help() + "\n")
        return 2
    except click.UsageError as error:
        fail(error.format_message().replace("\n", " "))
        return 2
    except (click.exceptions.Abort, KeyboardInterrupt):
        fail("interrupted")
        return 130
    except CommandFailed as error:
        fail(str(error))
        return 1
    except BackupError as error:
        fail(str(error))
        return 1
    except click.exceptions.Exit as done:
        return done.exit_code
    return 0


def entry() -> int:
    """The installed `tablebackup` command (pyproject's [project.scripts])."""
    return main()


if __name__ == "__main__":
    sys.exit(main())
