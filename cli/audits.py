"""`audit`."""

from __future__ import annotations

import click

from cli.common import IsoInstant, json_option, open_storage
from cli.output import emit

# As audit.messages.OPERATIONS; repeated so --help works without importing the domain.
OPERATIONS = ("INSERT", "UPDATE", "DELETE", "RESTORE", "IMPORT", "EXPORT", "PRUNE", "ERASE")


def _audit_text(data: dict) -> str:
    if not data["entries"]:
        return "no audit entries"
    return "\n".join(
        f"{e['timestamp']}  {e['operation']:<7}  {e['tableName']}  {e['entityKey'] or '-'}  by {e['userId']}"
        for e in data["entries"]
    )


@click.command()
@click.option("--table", "-t", help="Only changes to this audited table.")
@click.option("--partition-key", "partition_key", help="Only changes to entities with this PartitionKey.")
@click.option("--row-key", "row_key", help="Only changes to entities with this RowKey.")
@click.option("--operation", type=click.Choice(OPERATIONS, case_sensitive=False), help="Only this operation.")
@click.option("--user", help="Only changes made by this user.")
@click.option("--since", type=IsoInstant(), help="From this instant (default: AUDIT_QUERY_DAYS days before --until).")
@click.option("--until", type=IsoInstant(), help="Up to this instant (default: now).")
@json_option
def audit(table, partition_key, row_key, operation, user, since, until, as_json) -> None:
    """List audit entries in time order: who changed what, when, with the before and after images."""
    from audit.queries import find_entries

    if since and until and since > until:
        raise click.UsageError("--since must not be after --until")
    entries = find_entries(
        open_storage(),
        table=table,
        partition_key=partition_key,
        row_key=row_key,
        operation=operation.upper() if operation else None,
        user=user,
        since=since,
        until=until,
    )
    emit({"entries": entries}, as_json, _audit_text)
