"""The audit trail: one create-only entry per change to an audited table, written from queue messages
the audited application sends (and directly for this app's own operations), queried by table, entity,
operation, user and time range."""
