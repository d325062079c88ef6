"""AzCopy 7.3 table exports: a folder holding `<account>_<table>_<timestamp>.manifest` (or the name
given with /Manifest:) and the data files `<account>_<table>_<timestamp>_<range>_<split>_<CRC>.json`
(or `.csv`, each with a `.schema.csv`), read and checked before anything is written.

What the public sources say, and what this reader takes from each:
- The manifest (AzCopy's docs; its JSON as an AzCopy user posted it, azure-storage-net-data-movement
  issue 129): `{"Version":2,"PayloadFormat":"Json","Checksum":<UInt64>,"AccountName":...,
  "TableName":...,"Timestamp":"2018-05-28T03:06:11.6482709Z","SplitSize":200000,"TotalDataFiles":1}`.
- Data file names (AzCopy's docs): the timestamp as `yyyyMMddTHHmmss.fffffffZ`, a zero-based
  partition-key-range index (0 without /PKRS), a zero-based split index, and the CRC64 in hex.
- Data file content (AzCopy's docs): "the payload format for minimal metadata", the Table
  service's own JSON, so the entities are read as the service's wire JSON (`odata.*` and
  `Timestamp` are metadata, never properties).
- The checksums (an AzCopy answer on Stack Overflow): the name's suffix is "the CRC64 calculated by
  the entities content in this JSON file, and the manifest file stores the total CRC64 aggregated
  by all the JSON files", so the file list is known complete and no file corrupted.

AzCopy 7.3 is closed source and no public source gives the CRC-64 polynomial, the bytes it covers or
how the manifest combines them. This reader checks each name's CRC against the Azure Storage CRC-64
(polynomial 0x9A6C9329AC4BC9B5, the storage team's published CRC-64, computed by Microsoft's
azure-storage-extensions) of the file's bytes, and the manifest's Checksum against the XOR of the
names' CRCs. A file that fails only these checks is refused, naming the file, unless the user
passes `skip_checksums` (`--skip-azcopy-checksums`); every other check still applies.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from tablebackup.core.errors import InvalidInput

MANIFEST_SUFFIX = ".manifest"
SCHEMA_SUFFIX = ".schema.csv"
_UINT64 = 2**64 - 1
_CHUNK = 1024 * 1024
# The only manifest version any public source shows (AzCopy 6 and 7 wrote it).
KNOWN_VERSION = 2
_DATA_NAME = (
    r"_(?P<stamp>\d{8}T\d{6}(?:\.\d{1,7})?Z?)_(?P<range>\d{1,9})_(?P<split>\d{1,9})_(?P<crc>[0-9A-Fa-f]{1,16})"
    r"\.(?P<ext>json|csv)"
)


class AzCopyManifest(BaseModel):
    """The fields this reader uses; others a later AzCopy may add are ignored."""

    model_config = ConfigDict(strict=True, extra="ignore")

    Version: int
    PayloadFormat: str
    Checksum: int = Field(ge=0, le=_UINT64)
    AccountName: str = Field(min_length=1)
    TableName: str = Field(min_length=1)
    Timestamp: str
    SplitSize: int = Field(ge=0)
    TotalDataFiles: int = Field(ge=0)

    @field_validator("Timestamp")
    @classmethod
    def _iso(cls, value: str) -> str:
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,7})?Z", value):
            raise ValueError("Timestamp must be an ISO 8601 UTC time such as 2018-05-28T03:06:11.6482709Z")
        return value

    @property
    def payload(self) -> Literal["json", "csv"]:
        return "csv" if self.PayloadFormat.lower() == "csv" else "json"

    def stamp_digits(self) -> str:
        """The Timestamp as the digits of a data file's name: yyyyMMddHHmmss plus the fraction."""
        return re.sub(r"\D", "", self.Timestamp)


@dataclass
class DataFile:
    """One data file, and where its name puts it in the export."""

    path: Path
    range_index: int
    split_index: int
    crc: int
    schema: Path | None = None  # a CSV data file's .schema.csv
    # CSV: the empty String cells of the last reading, by column (read as absent properties).
    empty_strings: dict[str, int] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.path.name

    def open(self) -> BinaryIO:
        return self.path.open("rb")

    def records(self, rules):
        """("json" or "csv", the file's records); None for a JSON file, which the importer reads
        like any other JSON input."""
        if self.schema is None:
            return None
        from tablebackup.transfer.azcopy_csv import read_azcopy_csv, read_schema

        columns = read_schema(self.schema)
        self.empty_strings = {}

        def records():
            with self.open() as stream:
                yield from read_azcopy_csv(stream, columns, self.empty_strings)

        return "csv", records()


def crc64(stream: BinaryIO) -> int:
    """The Azure Storage CRC-64 of everything left in the stream."""
    from azure.storage.extensions.checksums import crc64 as storage_crc64

    crc = 0
    while chunk := stream.read(_CHUNK):
        crc = storage_crc64.compute(chunk, crc)
    return crc


def list_checksum(crcs: list[int]) -> int:
    """What the manifest's Checksum is checked against: the XOR of the data files' CRCs."""
    total = 0
    for crc in crcs:
        total ^= crc
    return total


def find_manifest(path: Path) -> Path:
    """The manifest `path` names: the file itself, or the only manifest in the folder."""
    if path.is_file():
        if path.suffix.lower() != MANIFEST_SUFFIX:
            raise InvalidInput(f"{path} is not an AzCopy manifest (*{MANIFEST_SUFFIX})")
        return path
    manifests = sorted(child for child in path.iterdir() if child.suffix.lower() == MANIFEST_SUFFIX)
    if not manifests:
        raise InvalidInput(f"{path} holds no AzCopy manifest (*{MANIFEST_SUFFIX})")
    if len(manifests) > 1:
        names = ", ".join(manifest.name for manifest in manifests[:5])
        raise InvalidInput(
            f"{path} holds {len(manifests)} AzCopy manifests ({names}); give the one to import as --input"
        )
    return manifests[0]


def is_azcopy_export(path: Path) -> bool:
    """A .manifest file, or a folder holding one (and no backup manifest.json)."""
    if path.is_file():
        return path.suffix.lower() == MANIFEST_SUFFIX
    return path.is_dir() and any(child.suffix.lower() == MANIFEST_SUFFIX for child in path.iterdir())


def read_manifest(path: Path) -> AzCopyManifest:
    try:
        manifest = AzCopyManifest.model_validate_json(path.read_bytes())
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        field_name = f"{where}: " if where else ""
        raise InvalidInput(f"{path.name} is not an AzCopy manifest: {field_name}{first['msg']}") from None
    if manifest.Version != KNOWN_VERSION:
        raise InvalidInput(
            f"{path.name} is an AzCopy manifest of version {manifest.Version}; this reader knows version "
            f"{KNOWN_VERSION}, the one AzCopy 6 and 7 write"
        )
    if manifest.PayloadFormat.lower() not in ("json", "csv"):
        raise InvalidInput(f"{path.name}: PayloadFormat {manifest.PayloadFormat!r} is neither Json nor Csv")
    return manifest


def _data_files(folder: Path, manifest: AzCopyManifest) -> list[DataFile]:
    pattern = re.compile(re.escape(manifest.AccountName) + "_" + re.escape(manifest.TableName) + _DATA_NAME, re.I)
    stamp = manifest.stamp_digits()
    found: dict[tuple[int, int], DataFile] = {}
    for child in sorted(folder.iterdir()):
        if child.name.lower().endswith(SCHEMA_SUFFIX):
            continue
        match = pattern.fullmatch(child.name)
        # Another export of the same table in the same folder has another timestamp.
        digits = re.sub(r"\D", "", match["stamp"]) if match else ""
        if not match or len(digits) < 14 or not stamp.startswith(digits):
            continue
        if match["ext"].lower() != manifest.payload:
            raise InvalidInput(
                f"{child.name} is {match['ext']}, but the manifest says PayloadFormat {manifest.PayloadFormat}"
            )
        position = int(match["range"]), int(match["split"])
        if position in found:
            raise InvalidInput(
                f"{found[position].name} and {child.name} are both range {position[0]} split {position[1]}"
            )
        schema = None
        if manifest.payload == "csv":
            schema = child.with_name(child.name[: -len(".csv")] + SCHEMA_SUFFIX)
            if not schema.is_file():
                raise InvalidInput(f"{child.name} has no {schema.name} beside it (AzCopy writes one per CSV data file)")
        found[position] = DataFile(child, position[0], position[1], int(match["crc"], 16), schema)
    return [found[position] for position in sorted(found)]


@dataclass
class AzCopyCheck:
    """What was checked, for the import's report."""

    manifest: str
    account: str
    table: str
    exported_at: str
    payload: str
    data_files: int
    checksums: Literal["verified", "skipped"]

    def as_json(self) -> dict:
        return dict(self.__dict__)


@dataclass
class AzCopyExport:
    """An AzCopy table export: its manifest and data files in order, every check passed."""

    manifest_path: Path
    manifest: AzCopyManifest
    files: list[DataFile] = field(default_factory=list)
    check: AzCopyCheck | None = None
    shape: str = "azcopy"

    @property
    def name(self) -> str:
        return str(self.manifest_path)

    def part_sources(self) -> list[DataFile]:
        return self.files

    def warnings(self) -> list[str]:
        """What the last reading could not tell apart: empty CSV cells, read as absent properties."""
        counts: dict[str, int] = {}
        for data_file in self.files:
            for name, count in data_file.empty_strings.items():
                counts[name] = counts.get(name, 0) + count
        if not counts:
            return []
        listed = ", ".join(f"{name} ({count:,})" for name, count in sorted(counts.items()))
        return [
            "empty String cells were read as absent properties, as AzCopy's CSV cannot tell them from empty "
            f"strings: {listed}"
        ]


def _check_file_list(manifest_path: Path, manifest: AzCopyManifest, files: list[DataFile]) -> None:
    if len(files) != manifest.TotalDataFiles:
        listed = ", ".join(f"{f.range_index}_{f.split_index}" for f in files) or "none"
        raise InvalidInput(
            f"{manifest_path.name} lists {manifest.TotalDataFiles} data files, but {manifest_path.parent} holds "
            f"{len(files)} of this export (range_split: {listed}); download the whole export"
        )
    splits: dict[int, list[int]] = {}
    for data_file in files:
        splits.setdefault(data_file.range_index, []).append(data_file.split_index)
    for range_index, indexes in splits.items():
        gap = next((number for number, index in enumerate(indexes) if number != index), None)
        if gap is not None:
            raise InvalidInput(f"data file range {range_index} split {gap} is missing from {manifest_path.parent}")


def open_export(path: Path, *, skip_checksums: bool = False, on_progress=None) -> AzCopyExport:
    """The export at `path` (a folder or its .manifest), checked as AzCopy checks before it imports:
    the file list against the manifest, then each data file against the CRC in its name."""
    manifest_path = find_manifest(path)
    manifest = read_manifest(manifest_path)
    files = _data_files(manifest_path.parent, manifest)
    _check_file_list(manifest_path, manifest, files)
    if not skip_checksums:
        expected = list_checksum([data_file.crc for data_file in files])
        if expected != manifest.Checksum:
            raise InvalidInput(
                f"{manifest_path.name}: Checksum {manifest.Checksum} does not match its data files' CRCs "
                f"({expected}); a data file is missing or renamed, or the manifest belongs to another export "
                "(--skip-azcopy-checksums imports without this check)"
            )
        for number, data_file in enumerate(files, start=1):
            if on_progress:
                on_progress(f"check {data_file.name}", number)
            with data_file.open() as stream:
                actual = crc64(stream)
            if actual != data_file.crc:
                raise InvalidInput(
                    f"{data_file.name} is damaged: its CRC64 is {actual:016X}, its name says {data_file.crc:016X} "
                    "(--skip-azcopy-checksums imports without this check)"
                )
    check = AzCopyCheck(
        manifest=manifest_path.name,
        account=manifest.AccountName,
        table=manifest.TableName,
        exported_at=manifest.Timestamp,
        payload=manifest.payload,
        data_files=len(files),
        checksums="skipped" if skip_checksums else "verified",
    )
    return AzCopyExport(manifest_path, manifest, files, check)
