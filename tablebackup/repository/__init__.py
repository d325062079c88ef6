"""Where backups live: the backup format and manifests, the catalog (which backup), chains, integrity,
attempts in progress, the old daily backups and the erasure register."""
