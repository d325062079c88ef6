"""The function app's status doors (functions.py): parse, call tablebackup.status, shape the answer."""
