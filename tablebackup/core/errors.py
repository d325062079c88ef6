"""Errors the app reports to people: each message is one line that names what is wrong."""


class BackupError(Exception):
    """A failure the user can act on; the message is shown as it is."""


class SettingsError(BackupError):
    """A setting is missing or malformed."""


class InvalidInput(BackupError):
    """A request or argument was refused before anything was read or written."""


class NotFound(BackupError):
    """A table or backup that was asked for does not exist."""


class StorageUnavailable(BackupError):
    """Storage could not be reached or kept failing after retries."""


class DamagedBackup(BackupError):
    """A backup whose manifest or blobs do not hold together; it is refused before anything is written."""
