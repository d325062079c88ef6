"""`erase`."""

from __future__ import annotations

import click

from tablebackup.cli.common import current_user, json_option, not_blank, open_storage, table_option
from tablebackup.cli.output import emit


def _erase_text(data: dict) -> str:
    done = "deleted and registered" if data["deleted"] else "was not in the table; registered"
    return f"erased from {data['table']}: the entity {done} (key SHA-256 {data['key_sha256'][:16]}…)"


@click.command()
@table_option("The table the entity is in.")
@click.option("--partition-key", required=True, help="The entity's PartitionKey (may be empty: '').")
@click.option("--row-key", required=True, help="The entity's RowKey.")
@click.option(
    "--reason",
    required=True,
    callback=not_blank("the reason"),
    help="Why: for example the erasure request's reference.",
)
@json_option
def erase(table, partition_key, row_key, reason, as_json) -> None:
    """Erase an entity for good (GDPR): delete it and register its key, so that restore, import and
    export never bring it back from an old backup."""
    from tablebackup.core.errors import InvalidInput
    from tablebackup.repository.erasures import erase as erase_entity

    try:
        result = erase_entity(open_storage(), table, partition_key, row_key, reason=reason, actor=current_user())
    except InvalidInput as error:
        # Refused before anything was written: a wrong table name or keys of no entity are bad usage.
        raise click.UsageError(str(error)) from None
    emit(result, as_json, _erase_text)
