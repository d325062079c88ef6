"""What readers yield: each entity with the line it starts on, or a problem found on a line."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, replace

from tablebackup.core.entities import KEYS, check_entity
from tablebackup.core.errors import InvalidInput

# Listed in full up to this many; beyond it they are only counted.
MAX_PROBLEMS = 100
# A reason quotes the offending value; a value can be 1 MiB, a reason stays one short line.
_MAX_REASON = 300
# Characters the Table service refuses in PartitionKey and RowKey.
_FORBIDDEN_IN_KEYS = re.compile(r"[/\\#?\x00-\x1f\x7f-\x9f]")


@dataclass(frozen=True)
class Problem:
    line: int
    reason: str
    file: str | None = None  # which file of an input of several (an AzCopy export's data files)

    def __str__(self) -> str:
        where = f"{self.file} line {self.line}" if self.file else f"line {self.line}"
        return f"{where}: {self.reason}"

    def in_file(self, file: str | None) -> Problem:
        return replace(self, file=file) if file else self

    def as_json(self) -> dict:
        return {"line": self.line, "reason": self.reason, **({"file": self.file} if self.file else {})}


# (line, entity in backup-line form) or (line, Problem).
Record = tuple[int, dict | Problem]
Records = Iterator[Record]


def problem(line: int, reason: str) -> Record:
    text = " ".join(reason.split())
    return line, Problem(line, text if len(text) <= _MAX_REASON else text[:_MAX_REASON] + "…")


def checked(line: int, entity: object) -> Record:
    """The entity if the service could store it as it is, else the reason it could not."""
    try:
        check_entity(entity)
        for key in KEYS:
            found = _FORBIDDEN_IN_KEYS.search(entity[key])
            if found:
                raise InvalidInput(f"{key} contains {found.group()!r}, which Azure Tables does not allow in keys")
    except InvalidInput as error:
        return problem(line, str(error))
    return line, entity


class MalformedInput(InvalidInput):
    """An input that failed validation: nothing was written. Lists up to MAX_PROBLEMS problems."""

    def __init__(self, name: str, problems: list[Problem], total: int):
        self.name, self.problems, self.total = name, problems, total
        noun = "problem" if total == 1 else "problems"
        super().__init__(f"{name} is malformed: {total} {noun}; {problems[0]}")

    def as_json(self) -> dict:
        return {"error": str(self), "problem_count": self.total, "problems": [p.as_json() for p in self.problems]}
