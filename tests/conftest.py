"""Test fixtures: a real Azurite (started here unless AZURITE_CONNECTION_STRING points at one),
settings in the environment as the Functions host gives them, and the registered functions."""

from __future__ import annotations

import itertools
import os
import uuid

import pytest

from localdev import azurite as azurite_process
from tablebackup.core.clients import Storage
from tablebackup.core.settings import get_settings

_counter = itertools.count()


@pytest.fixture(scope="session")
def azurite_connection_string():
    given = os.environ.get("AZURITE_CONNECTION_STRING")
    if given:
        yield given
        return
    server = azurite_process.start(in_memory=True)
    try:
        yield server.connection_string
    finally:
        server.stop()


@pytest.fixture(scope="session")
def other_account():
    """A second Azurite: another storage account (the one in a healthy region, a clean one after an
    incident, or the only one left after the data account is lost). Started on first use."""
    server = azurite_process.start(in_memory=True)
    try:
        yield server.connection_string
    finally:
        server.stop()


@pytest.fixture
def unique_name():
    """A fresh valid table name per call, so tests never share state."""

    def make(prefix: str = "t") -> str:
        return f"{prefix}{uuid.uuid4().hex[:10]}{next(_counter)}"

    return make


@pytest.fixture
def env(monkeypatch, azurite_connection_string, unique_name):
    """Settings for one test: both accounts on Azurite, a private backup container, fast retries."""
    for name in list(os.environ):
        if name.startswith(("BACKUP", "TABLE", "STORAGE", "AZURE_STORAGE", "BACKUPS__", "TABLES__")):
            monkeypatch.delenv(name)
    values = {
        "AZURE_STORAGE_CONNECTION_STRING": azurite_connection_string,
        "BACKUP_BLOB_CONNECTION_STRING": azurite_connection_string,
        "BACKUP_CONTAINER": f"backups-{uuid.uuid4().hex[:12]}",
        "TABLE_NAME": unique_name("default"),
        "STORAGE_RETRIES": "2",
        "STORAGE_RETRY_BACKOFF_SECONDS": "0.05",
        "STORAGE_TIMEOUT_SECONDS": "10",
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    yield values
    get_settings.cache_clear()


@pytest.fixture
def storage(env) -> Storage:
    return Storage.from_settings()


@pytest.fixture
def audit_storage(env, monkeypatch, unique_name) -> Storage:
    """Storage whose audit table, rejected table and payload container belong to this test alone."""
    monkeypatch.setenv("AUDIT_TABLE", unique_name("audit"))
    monkeypatch.setenv("AUDIT_REJECTED_TABLE", unique_name("rejected"))
    monkeypatch.setenv("AUDIT_PAYLOAD_CONTAINER", f"audit-{uuid.uuid4().hex[:12]}")
    monkeypatch.delenv("AUDIT_QUERY_DAYS", raising=False)
    get_settings.cache_clear()
    return Storage.from_settings()


@pytest.fixture(scope="session")
def functions():
    """The app's registered functions by name (get_functions may be called once per app)."""
    from function_app import app

    return {function.get_function_name(): function for function in app.get_functions()}
