"""Baseline: count a table's entities with the SDK's own TableClient.list_entities().

Usage: python -m bench.list_entities TABLE (AZURE_STORAGE_CONNECTION_STRING in the environment).
Prints the count on stdout.
"""

import os
import sys

from azure.data.tables import TableClient


def main() -> int:
    if len(sys.argv) != 2:
        sys.stderr.write("usage: python -m bench.list_entities TABLE\n")
        return 2
    connection_string = os.environ["AZURE_STORAGE_CONNECTION_STRING"]
    with TableClient.from_connection_string(connection_string, table_name=sys.argv[1]) as table:
        count = sum(1 for _ in table.list_entities())
    print(count)
    return 0


if __name__ == "__main__":
    sys.exit(main())
