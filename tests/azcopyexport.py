"""What `AzCopy /Source:https://<account>.table.core.windows.net/<table>/ /Dest:<folder>` (AzCopy 7.3)
writes, built from AzCopy's documentation, since AzCopy 7.3 is a closed-source Windows program:

- the data: the table read from the service as "the payload format for minimal metadata" (AzCopy's
  docs), so each data file is a query response, `{"odata.metadata": ..., "value": [...]}`, of the
  service's own entity JSON (fetched here from Azurite with odata=minimalmetadata);
- data file names `<account>_<table>_<yyyyMMddTHHmmss.fffffffZ>_<range>_<split>_<CRC>.json`: a range
  per /PKRS partition-key range (0 without it), a split each time a file reaches /SplitSize (here a
  number of entities, as a test cannot afford AzCopy's 32 MB minimum);
- the manifest `<account>_<table>_<timestamp>.manifest`, with the fields and order of the one an
  AzCopy user posted (azure-storage-net-data-movement issue 129);
- /PayloadFormat:CSV: each data file `.csv` with a `.schema.csv` (AzCopy's docs); neither layout is
  documented, so the files take the forms tablebackup.transfer.azcopy_csv reads: a header of the columns, the
  values' text (Boolean as .NET prints it, True/False), and the schema as a row of names over a row
  of types, or a name,type row per column.

The CRC64 is not documented; the fixtures use this project's reading (tablebackup.transfer.azcopy): the Azure
Storage CRC-64 of the file's bytes, and the XOR of the files' CRCs in the manifest. It is computed
here by a plain table-driven implementation, independent of the extension the product uses.
"""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime
from pathlib import Path

from azure.core.rest import HttpRequest

from tablebackup.core import wirejson
from tablebackup.core.entities import TYPE_SUFFIX, edm_type

ACCOUNT = "devstoreaccount1"
_POLY = 0x9A6C9329AC4BC9B5  # Azure Storage CRC-64, reflected
_MASK = 2**64 - 1
_TABLE = []
for _byte in range(256):
    _crc = _byte
    for _ in range(8):
        _crc = (_crc >> 1) ^ _POLY if _crc & 1 else _crc >> 1
    _TABLE.append(_crc)


def reference_crc64(data: bytes) -> int:
    crc = _MASK
    for byte in data:
        crc = _TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ _MASK


def _pages(client):
    headers = {"Accept": "application/json;odata=minimalmetadata", "DataServiceVersion": "3.0"}
    params: dict = {}
    while True:
        request = HttpRequest("GET", f"/{client.table_name}()", params=params, headers=headers)
        response = client._client.send_request(request)
        assert response.status_code == 200, response.text()
        page = wirejson.loads(response.content)
        yield page["odata.metadata"], page["value"]
        next_pk = response.headers.get("x-ms-continuation-NextPartitionKey")
        if next_pk is None:
            return
        params = {"NextPartitionKey": next_pk, "NextRowKey": response.headers.get("x-ms-continuation-NextRowKey")}


def _csv_text(edm: str, value) -> str:
    if edm == "Edm.Boolean":
        return "True" if value else "False"  # .NET's Boolean.ToString()
    if edm == "Edm.Double" and not isinstance(value, str):
        return repr(float(value))
    return str(value)


def _csv_files(entities: list[dict], schema_layout: str) -> tuple[bytes, bytes]:
    """(data, schema): a header of the file's columns, a row per entity; the columns' types."""
    columns: dict[str, str] = {"PartitionKey": "Edm.String", "RowKey": "Edm.String", "Timestamp": "Edm.DateTime"}
    for entity in entities:
        for name in entity:
            if not name.endswith(TYPE_SUFFIX) and not name.startswith("odata.") and name not in columns:
                columns[name] = edm_type(entity, name)
    data = io.StringIO()
    writer = csv.writer(data, lineterminator="\r\n")
    writer.writerow(columns)
    for entity in entities:
        writer.writerow([_csv_text(edm, entity[name]) if name in entity else "" for name, edm in columns.items()])
    schema = io.StringIO()
    writer = csv.writer(schema, lineterminator="\r\n")
    if schema_layout == "rows":
        writer.writerows([list(columns), list(columns.values())])
    else:
        writer.writerows(columns.items())
    return data.getvalue().encode(), schema.getvalue().encode()


def _range_of(partition_key: str, bounds: list[str]) -> int:
    return sum(1 for bound in bounds if partition_key >= bound)


def azcopy_export(
    client,
    folder: Path,
    at: datetime,
    *,
    split_every: int | None = None,
    pk_ranges: list[str] | None = None,
    manifest_name: str | None = None,
    payload: str = "json",
    schema_layout: str = "rows",
) -> Path:
    """Export the table as AzCopy does into `folder`; returns the manifest's path."""
    folder.mkdir(parents=True, exist_ok=True)
    bounds = pk_ranges or []
    groups: dict[int, list[list[dict]]] = {}
    metadata = ""
    for page_metadata, entities in _pages(client):
        metadata = page_metadata
        for entity in entities:
            files = groups.setdefault(_range_of(entity["PartitionKey"], bounds), [[]])
            if split_every and len(files[-1]) == split_every:
                files.append([])
            files[-1].append(entity)
    stamp = at.strftime("%Y%m%dT%H%M%S.") + f"{at.microsecond:06d}0Z"
    prefix = f"{ACCOUNT}_{client.table_name}_{stamp}"
    crcs = []
    for range_index, files in sorted(groups.items()):
        for split_index, entities in enumerate(files):
            if payload == "csv":
                body, schema = _csv_files(entities, schema_layout)
            else:
                body, schema = wirejson.dumps({"odata.metadata": metadata, "value": entities}), None
            crc = reference_crc64(body)
            crcs.append(crc)
            name = f"{prefix}_{range_index}_{split_index}_{crc:016X}"
            (folder / f"{name}.{payload}").write_bytes(body)
            if schema is not None:
                (folder / f"{name}.schema.csv").write_bytes(schema)
    checksum = 0
    for crc in crcs:
        checksum ^= crc
    manifest = {
        "Version": 2,
        "PayloadFormat": "Csv" if payload == "csv" else "Json",
        "Checksum": checksum,
        "AccountName": ACCOUNT,
        "TableName": client.table_name,
        "Timestamp": at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond:06d}0Z",
        "SplitSize": 200000,
        "TotalDataFiles": len(crcs),
    }
    path = folder / (manifest_name or f"{prefix.rsplit('.', 1)[0]}.manifest")
    path.write_text(json.dumps(manifest, separators=(",", ":")))
    return path
