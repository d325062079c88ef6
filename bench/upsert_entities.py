"""Baseline: copy a table the naive way, one TableClient.upsert_entity() call per entity.

Usage: python -m bench.upsert_entities SOURCE_TABLE TARGET_TABLE (AZURE_STORAGE_CONNECTION_STRING in the
environment). Creates the target table, then prints the number of entities written on stdout.
"""

import os
import sys

from azure.data.tables import TableServiceClient


def main() -> int:
    if len(sys.argv) != 3:
        sys.stderr.write("usage: python -m bench.upsert_entities SOURCE_TABLE TARGET_TABLE\n")
        return 2
    connection_string = os.environ["AZURE_STORAGE_CONNECTION_STRING"]
    with TableServiceClient.from_connection_string(connection_string) as service:
        source = service.get_table_client(sys.argv[1])
        target = service.create_table(sys.argv[2])  # fails if it exists: every run must write into an empty table
        count = 0
        for entity in source.list_entities():
            target.upsert_entity(entity)
            count += 1
    print(count)
    return 0


if __name__ == "__main__":
    sys.exit(main())
