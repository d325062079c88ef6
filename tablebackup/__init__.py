"""Backup and disaster recovery for Azure Table Storage: the domain, shared by the function app's
doors (the top-level function folders) and the `tablebackup` command line.

Layers, each importing only the ones below it: `cli` and the capabilities (`backup`, `restore`,
`verify`, `audit`, `transfer`, `status`) over `repository` (where and how backups are stored) and
`storage` (the table side), all over `core` (settings, clients, errors, names, entities)."""

from __future__ import annotations

import functools
from pathlib import Path

DISTRIBUTION = "azure-table-backup"  # pyproject.toml's [project] name


@functools.cache
def _version() -> str:
    """The installed distribution's version when this code is the installed copy (a wheel, or an
    editable install of this source tree); else the version in the source tree's pyproject.toml,
    marked `+source` (PEP 440 local label: not a released build); else `0+unknown`."""
    from importlib import metadata

    package = Path(__file__).resolve().parent
    try:
        distribution = metadata.distribution(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        distribution = None
    if distribution is not None and _is_this_copy(distribution, package):
        return distribution.version
    pyproject = package.parent / "pyproject.toml"
    try:
        import tomllib

        project = tomllib.loads(pyproject.read_text(encoding="utf-8")).get("project", {})
    except (OSError, ValueError):
        project = {}
    if project.get("name") == DISTRIBUTION and project.get("version"):
        return f"{project['version']}+source"
    return "0+unknown"


def _is_this_copy(distribution, package: Path) -> bool:
    """Whether the distribution's files are the ones running (not another copy on sys.path)."""
    for file in distribution.files or ():
        if file.as_posix() == f"{package.name}/__init__.py":
            return Path(distribution.locate_file(file)).resolve().parent == package
    # An editable install lists no package files; its direct_url.json names the source tree.
    import json
    from urllib.parse import unquote, urlsplit

    try:
        origin = json.loads(distribution.read_text("direct_url.json") or "{}")
    except ValueError:
        return False
    url = urlsplit(origin.get("url", ""))
    return (
        origin.get("dir_info", {}).get("editable", False)
        and url.scheme == "file"
        and Path(unquote(url.path)).resolve() == package.parent
    )


def __getattr__(name: str) -> str:
    # Read on first use: the function app's cold start does not pay for the metadata lookup.
    if name == "__version__":
        return _version()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
