"""The Bicep sets exactly the settings the code reads, so the two can't drift apart."""

from __future__ import annotations

import re
from pathlib import Path

from tablebackup.core.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
# Only ever given locally: in Azure the identity-based endpoints replace them.
_LOCAL_ONLY = {"AZURE_STORAGE_CONNECTION_STRING", "BACKUP_BLOB_CONNECTION_STRING"}
# Read by the platform, not by our settings object.
_PLATFORM = re.compile(r"^(AzureWebJobsStorage__\w+|APPLICATIONINSIGHTS_\w+)$")


def _bicep_app_settings() -> set[str]:
    text = (ROOT / "infra" / "main.bicep").read_text()
    block = text[text.index("appSettings: [") : text.index("]", text.index("appSettings: ["))]
    return set(re.findall(r"name: '([^']+)'", block))


def _binding_settings(functions) -> set[str]:
    names = set()
    for function in functions.values():
        for binding in function.get_bindings():
            for value in binding.get_dict_repr().values():
                if isinstance(value, str):
                    names |= set(re.findall(r"%(\w+)%", value))
    return names


def test_bicep_sets_every_setting_the_code_reads(functions):
    code = {field.alias for field in Settings.model_fields.values()} - _LOCAL_ONLY
    code |= _binding_settings(functions)
    bicep = _bicep_app_settings()

    assert code - bicep == set(), "settings the code reads that the Bicep does not set"
    assert {name for name in bicep - code if not _PLATFORM.match(name)} == set(), "settings nobody reads"


def test_production_accounts_have_the_readable_secondary_the_runbook_reads():
    """The regional-outage runbook reads both accounts' secondaries (READ_FROM_SECONDARY,
    BACKUP_READ_FROM_SECONDARY): only the RA- SKUs have one."""
    prod = (ROOT / "infra" / "main.prod.bicepparam").read_text()
    bicep = (ROOT / "infra" / "main.bicep").read_text()
    for parameter in ("dataStorageSku", "backupStorageSku"):
        given = re.search(rf"^param {parameter} = '(\w+)'", prod, re.M)[1]
        default = re.search(rf"^param {parameter} string = environmentType == 'prod' \? '(\w+)'", bicep, re.M)[1]
        assert given.startswith("Standard_RA") and default == given, parameter


def test_the_lifecycle_never_deletes_the_erasure_register():
    """With backupTables ['*'] the rules match every table's backups (a table name starts with a
    letter) in groups of at most 10 prefixes, the service's limit per rule, and never `_erasures/`."""
    bicep = (ROOT / "infra" / "main.bicep").read_text()
    block = bicep[bicep.index("var everyTablePrefixes = [") : bicep.index("var tablePrefixes")]
    groups = [re.findall(r"'\$\{backupContainerName\}/([^']*)'", line) for line in block.splitlines()[1:-1]]
    letters = sorted(prefix for group in groups for prefix in group)

    assert all(1 <= len(group) <= 10 for group in groups)
    assert letters == sorted("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
    assert "'${backupContainerName}/'" not in bicep
