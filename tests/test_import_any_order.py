"""An import of input out of key order is grouped by partition first (tablebackup.transfer.keyorder):
it writes exactly what the same input sorted writes, in as many $batch requests, through temporary
runs that are gone afterwards however the import ends; input in order streams straight through."""

from __future__ import annotations

import os
import random
import tempfile

import pytest

from localdev.sample import candidates
from tablebackup.core import wirejson
from tablebackup.core.clients import Storage
from tablebackup.core.entities import service_order
from tablebackup.core.errors import BackupError
from tablebackup.transfer import keyorder
from tablebackup.transfer.importer import ImportRequest, import_entities
from tablebackup.transfer.sources import FileSource
from tests.faultproxy import tables_through_proxy
from tests.wire import table_state, wire_entities

RUN = 40  # entities per sorted run here, so a few hundred entities spill several runs


def _entities() -> list[dict]:
    """Backup-line entities in several partitions: every EDM type (the sample's edge cases), U+2028,
    U+2029 and astral characters in keys and values, lone surrogates in values (Azurite answers 500 to
    one in a key; the sort's own test has them there), and a ~1 MiB entity."""
    entities = list(candidates(300))
    awkward = ["sep\u2028", "para\u2029", "rocket \U0001f680", "", "ü 分区"]
    for index, text in enumerate(awkward):
        entities.append({"PartitionKey": f"odd {text}", "RowKey": text, "value": text, "lone": "a\ud800b", "n": index})
        entities.append({"PartitionKey": "odd", "RowKey": f"{index} {text}", "lone": "\udc00", "para": text})
    big = {f"s{n:02d}": chr(ord("a") + n) * 32_000 for n in range(15)}  # ~960 KiB
    entities.append({"PartitionKey": "big", "RowKey": "1 MiB", **big, "lone": "x\udbff"})
    return entities


def _write(path, entities: list[dict]):
    path.write_bytes(b"".join(wirejson.dumps(entity) + b"\n" for entity in entities))
    return path


def _shuffled(entities: list[dict]) -> list[dict]:
    shuffled = list(entities)
    random.Random(24).shuffle(shuffled)
    return shuffled


def _batches(proxy) -> int:
    return sum(1 for method, path, _ in proxy.seen if method == "POST" and path.endswith("$batch"))


@pytest.fixture
def spill(monkeypatch, tmp_path):
    """A TMPDIR of this test's own, and small sorted runs."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setenv("TMPDIR", str(folder))
    monkeypatch.setattr(tempfile, "tempdir", None)  # read TMPDIR again
    monkeypatch.setattr(keyorder, "RUN_ENTITIES", RUN)
    return folder


def test_shuffled_input_imports_exactly_as_sorted_input_in_as_many_batches(
    monkeypatch, azurite_connection_string, env, unique_name, tmp_path, spill
):
    shuffled = _shuffled(_entities())
    # The same key twice, far apart, as the input's order has them; a stable sort keeps that order.
    twice = {"PartitionKey": "odd", "RowKey": "0 sep\u2028", "lone": "second", "para": ""}
    shuffled.append(twice)
    in_order = sorted(shuffled, key=service_order)
    assert in_order.index(twice) == in_order.index(twice | {"lone": "\udc00", "para": "sep\u2028"}) + 1
    sorted_file, shuffled_file = _write(tmp_path / "sorted.ndjson", in_order), _write(tmp_path / "x.ndjson", shuffled)
    during = []

    def look(phase: str, count: int) -> None:
        if phase.startswith("import"):
            during.append(sorted(name for folder in spill.iterdir() for name in os.listdir(folder)))

    with tables_through_proxy(monkeypatch, azurite_connection_string) as proxy:
        storage = Storage.from_settings()
        reference, target = unique_name("sorted"), unique_name("shuffled")
        straight = import_entities(storage, ImportRequest(table=reference), FileSource(sorted_file), on_progress=look)
        sorted_batches = _batches(proxy)
        assert during and not any(during)  # in order: no temporary run
        during.clear()
        grouped = import_entities(storage, ImportRequest(table=target), FileSource(shuffled_file), on_progress=look)
        shuffled_batches = _batches(proxy) - sorted_batches

    runs = -(-(len(shuffled)) // RUN)
    assert during and len(during[0]) == runs  # the runs were on disk, in TMPDIR, while it wrote
    assert list(spill.iterdir()) == []  # and are gone
    assert shuffled_batches == sorted_batches < len(shuffled) / 10
    assert (grouped.imported, grouped.failed, grouped.skipped) == (straight.imported, 1, 0) == (len(shuffled) - 1, 1, 0)
    # As in sorted input: the service refuses the second of one key in a batch, and it is named.
    assert "PartitionKey='odd' RowKey=" + repr("0 sep\u2028") in grouped.errors[0]
    assert [error.replace(target, reference) for error in grouped.errors] == straight.errors
    client = storage.tables.get_table_client(target)
    assert table_state(client) == table_state(storage.tables.get_table_client(reference))
    served = {(e["PartitionKey"], e["RowKey"]): e for e in wire_entities(client)}
    assert len(served) == len(shuffled) - 1
    assert served[("odd", "0 sep\u2028")]["lone"] == "\udc00"  # the first of the two, as sorted input
    assert served[("big", "1 MiB")]["s14"] == "o" * 32_000
    assert served[("odd sep\u2028", "sep\u2028")]["value"] == "sep\u2028"
    assert straight.warnings == []
    [said] = grouped.warnings
    assert said.startswith("the input is not in key order (the key on line ")
    assert said.endswith(
        f"sorts before the one above it): {len(shuffled):,} entities grouped by partition through {runs} "
        f"temporary sorted runs of at most {RUN} entities or 16 MiB each, removed afterwards, so batches form"
    )


def test_a_dry_run_counts_without_sorting_and_says_the_import_would(storage, unique_name, tmp_path, spill):
    entities = _entities()
    path = _write(tmp_path / "shuffled.ndjson", _shuffled(entities))

    result = import_entities(storage, ImportRequest(table=unique_name("dry"), dry_run=True), FileSource(path))

    assert (result.imported, result.failed) == (len(entities), 0)
    assert list(spill.iterdir()) == []
    assert result.warnings[0].endswith("the import will group it by partition before writing, so batches form")


@pytest.mark.parametrize("ending", ["failure", "ctrl-c"])
def test_the_temporary_runs_are_removed_when_the_import_fails_or_is_interrupted(
    monkeypatch, azurite_connection_string, env, unique_name, tmp_path, spill, ending
):
    path = _write(tmp_path / "shuffled.ndjson", _shuffled(_entities()))
    request = ImportRequest(table=unique_name("ends"))
    seen = []

    def runs_on_disk() -> None:
        seen.append(os.listdir(next(spill.iterdir())))

    def fail_from_now(method: str, path: str) -> None:
        if path.endswith("$batch") and not seen:
            runs_on_disk()
            # Every later batch answered 500 until the retries run out.
            proxy.fail_matching, proxy.fail_matching_status = "$batch", 500

    def interrupt(phase: str, count: int) -> None:
        if phase.startswith("import"):
            runs_on_disk()
            raise KeyboardInterrupt

    with tables_through_proxy(monkeypatch, azurite_connection_string) as proxy:
        storage = Storage.from_settings()
        if ending == "failure":
            proxy.before_forward = fail_from_now
            with pytest.raises(BackupError, match="HTTP 500"):
                import_entities(storage, request, FileSource(path))
        else:
            with pytest.raises(KeyboardInterrupt):
                import_entities(storage, request, FileSource(path), on_progress=interrupt)

    assert seen and seen[0]  # it ended while the runs were on disk
    assert list(spill.iterdir()) == []


def test_the_sort_holds_at_most_its_run_size():
    """A run ends at its entities or its bytes, whichever comes first; more runs than merge at once
    merge in passes; the sort is stable (each key is here four times) and exact."""
    entities = _shuffled([
        {"PartitionKey": f"p{i % 7}\ud800", "RowKey": f"{i % 50:04d}\U0001f680", "n": f"{i:03d}", "s": "\u2028"}
        for i in range(200)
    ])  # fmt: skip
    expected = sorted(entities, key=service_order)
    line = len(wirejson.dumps(entities[0])) + 1  # each entity's line is as long, its newline included

    with keyorder.KeyOrder("line 2", run_entities=RUN, fan_in=2) as by_count:
        assert list(by_count.ordered(iter(entities))) == expected
    with keyorder.KeyOrder("line 2", run_bytes=20 * line) as by_bytes:
        assert list(by_bytes.ordered(iter(entities))) == expected
    with keyorder.KeyOrder("line 2") as in_memory:
        assert list(in_memory.ordered(iter(entities))) == expected

    assert (by_count.runs, by_count.passes) == (200 // RUN, 2)  # 5 runs, merged 2 at a time: 3, 2, then 1
    assert by_bytes.runs == 10
    assert in_memory.runs == 0
