"""A fleet's inputs: JSON lines, each checked before anything runs.

One input a line: ``{"id": ..., "console": "text to type", "seconds": n}``. ``id`` (a
string or an integer) names the input in the results and must be unique; ``console`` is
typed to the guest (UTF-8); ``seconds`` bounds the guest's run (the fleet's ``timeout``
when absent). Blank lines are skipped. Anything else (a line that is not JSON, an unknown
key, a missing or repeated id) is a :class:`FleetInputError` naming the file and line, and
nothing runs: a fleet of ten thousand inputs must not fail at the 9,000th.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

from ..errors import ConfigError

MAX_LINE = 1 << 20            # one input's line (its console text is most of it)
MAX_SECONDS = 7 * 24 * 3600   # a week: far beyond any input, and bounded
KEYS = ("id", "console", "seconds")


class FleetInputError(ConfigError, ValueError):
    """Bad input for a fleet (inputs, results, options): one line for the user."""


@dataclass(frozen=True)
class Input:
    """One input, checked."""

    id: str | int
    console: str = ""
    seconds: float | None = None
    where: str = ""

    @property
    def key(self) -> str:
        """The id as JSON: ``1`` and ``"1"`` are different inputs."""
        return id_key(self.id)

    def task(self, timeout: float) -> dict:
        """What a worker gets: the id, the bytes to type and the time the guest has."""
        return {"id": self.id, "console": self.console.encode("utf-8", "surrogatepass"),
                "seconds": self.seconds if self.seconds is not None else timeout}


def id_key(value: str | int) -> str:
    return json.dumps(value)


def check_id(value: Any, where: str) -> str | int:
    if type(value) is str or type(value) is int:      # (not a bool, a float or a list)
        return value
    raise FleetInputError(f"{where}: \"id\" must be a string or an integer, not {type(value).__name__}")


def check_seconds(value: Any, where: str, name: str = "\"seconds\"") -> float:
    """A positive, finite number of seconds, at most a week."""
    if type(value) not in (int, float) or not math.isfinite(value) or not 0 < value <= MAX_SECONDS:
        raise FleetInputError(f"{where}: {name} must be a number of seconds above 0 and at most "
                              f"{MAX_SECONDS} (a week), not {json.dumps(value)}")
    return float(value)


def parse_input(doc: Any, where: str) -> Input:
    """One input from a decoded JSON value (a line of INPUTS, or a dict from Python)."""
    if isinstance(doc, Input):
        return doc
    if not isinstance(doc, dict):
        raise FleetInputError(f"{where}: an input must be a JSON object with an \"id\", "
                              f"not {type(doc).__name__}")
    unknown = sorted(k for k in doc if k not in KEYS)
    if unknown:
        raise FleetInputError(f"{where}: unknown key {json.dumps(unknown[0])} (an input has "
                              f"{', '.join(KEYS)})")
    if "id" not in doc:
        raise FleetInputError(f"{where}: the input has no \"id\"")
    ident = check_id(doc["id"], where)
    console = doc.get("console", "")
    if type(console) is not str:
        raise FleetInputError(f"{where}: \"console\" must be a string (the text to type)")
    seconds = doc.get("seconds")
    return Input(ident, console, None if seconds is None else check_seconds(seconds, where), where)


def parse_inputs(items: Iterable[Any], name: str = "inputs") -> list[Input]:
    """Every input checked, ids unique; ``items`` are dicts (or Inputs)."""
    inputs: list[Input] = []
    seen: dict[str, str] = {}
    for n, item in enumerate(items, 1):
        where = item.where if isinstance(item, Input) and item.where else f"{name}[{n - 1}]"
        inp = parse_input(item, where)
        _unique(inp, seen, where)
        inputs.append(inp)
    return inputs


def _unique(inp: Input, seen: dict[str, str], where: str) -> None:
    first = seen.get(inp.key)
    if first is not None:
        raise FleetInputError(f"{where}: id {inp.key} is used twice (first at {first})")
    seen[inp.key] = where


def read_inputs(path: str) -> list[Input]:
    """The inputs of a JSON-lines file, every line checked (FleetInputError: FILE:LINE: why)."""
    return parse_inputs(_read_lines(path))


def _read_lines(path: str) -> Iterator[Input]:
    from ..files import HostFileError, open_existing

    try:
        fd = open_existing(path, what="inputs file")
    except HostFileError as e:
        raise FleetInputError(str(e)) from None
    with os.fdopen(fd, "rb") as f:
        n = 0
        while True:
            raw = f.readline(MAX_LINE + 1)
            if not raw:
                return
            n += 1
            where = f"{path}:{n}"
            if len(raw) > MAX_LINE:
                raise FleetInputError(f"{where}: the line is longer than {MAX_LINE} bytes")
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise FleetInputError(f"{where}: not UTF-8 (byte {e.start + 1})") from None
            if not text.strip():
                continue
            try:
                doc = json.loads(text)
            except (ValueError, RecursionError) as e:
                raise FleetInputError(f"{where}: not a JSON line ({_json_reason(e)})") from None
            yield parse_input(doc, where)


def _json_reason(e: BaseException) -> str:
    if isinstance(e, json.JSONDecodeError):
        return f"{e.msg} at column {e.colno}"
    return "nested too deeply" if isinstance(e, RecursionError) else str(e)
