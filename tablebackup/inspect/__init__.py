"""Looking into backups without restoring them: what one backup is (show), how two states of a
table differ (diff), and what became of one entity across the backups (history)."""
