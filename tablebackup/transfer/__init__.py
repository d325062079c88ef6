"""Export a table (or what a filter selects) to NDJSON, JSON or CSV, and import such files, or a
downloaded backup data blob, into a table. Both stream: memory does not grow with table size."""
