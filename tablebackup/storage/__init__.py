"""The table side: paged queries, batched writes, table lifecycle, filters, targets, reconciling writes."""
