"""Reading a table as the service's own JSON, for comparing tables and backups exactly."""

from __future__ import annotations

import math

from azure.core.rest import HttpRequest

from tablebackup.core import wirejson
from tablebackup.core.entities import TYPE_SUFFIX, edm_type

WIRE_HEADERS = {"Accept": "application/json;odata=minimalmetadata", "DataServiceVersion": "3.0"}


def wire_entities(client) -> list[dict]:
    """The table as the service sends it, page by page, with no SDK entity model in between."""
    entities, params = [], {}
    while True:
        request = HttpRequest("GET", f"/{client.table_name}()", params=params, headers=WIRE_HEADERS)
        response = client._client.send_request(request)
        assert response.status_code == 200, response.text()
        entities += wirejson.loads(response.content)["value"]
        next_pk = response.headers.get("x-ms-continuation-NextPartitionKey")
        if next_pk is None:
            return entities
        params = {"NextPartitionKey": next_pk, "NextRowKey": response.headers.get("x-ms-continuation-NextRowKey")}


def typed(entity: dict, *, with_timestamp: bool = True) -> dict:
    """name -> (EDM type, value), NaN made comparable; service metadata left out."""
    result = {}
    for name, value in entity.items():
        if name.endswith(TYPE_SUFFIX) or name.startswith("odata."):
            continue
        if name == "Timestamp" and not with_timestamp:
            continue
        if isinstance(value, float) and math.isnan(value):
            value = "NaN"
        result[name] = (edm_type(entity, name), value)
    return result


def keyed(entities: list[dict]) -> dict:
    return {(e["PartitionKey"], e["RowKey"]): e for e in entities}


def table_state(client) -> dict:
    """Every entity's typed properties by key, without Timestamp: what a restore must reproduce."""
    return {key: typed(entity, with_timestamp=False) for key, entity in keyed(wire_entities(client)).items()}
