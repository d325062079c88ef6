"""Backup and disaster recovery for Azure Table Storage: the domain, shared by the function app's
doors (the top-level function folders) and the `tablebackup` command line.

Layers, each importing only the ones below it: `cli` and the capabilities (`backup`, `restore`,
`verify`, `audit`, `transfer`, `status`) over `repository` (where and how backups are stored) and
`storage` (the table side), all over `core` (settings, clients, errors, names, entities)."""
