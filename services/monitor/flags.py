"""Flagged features: parsed from YAML or the API, validated, stored in Redis.

Each dictionary has two hashes in its hash slot: `flags` (feature → the flag as JSON, for
listing) and `flag_min` (feature → min_activation, read by the ingest script to count hits).
Both are written in one MULTI so the ingest script never sees one without the other.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import redis
import yaml

from featurewatch.contracts import KEY_PREFIX, dictionary_key
from featurewatch.errors import FlagError
from featurewatch.services.monitor.dictionaries import DictionaryRegistry

SEVERITIES = ("info", "warning", "critical")
DEFAULT_SEVERITY = "warning"
MAX_NAME = 200
#: Dictionaries that have flags, so any replica can list them.
FLAGGED_DICTIONARIES_KEY = f"{KEY_PREFIX}:flagged_dictionaries"
FIELDS = ("dictionary", "feature", "name", "severity", "min_activation", "runbook_url")


@dataclass(frozen=True)
class Flag:
    """A feature to watch and how to alert on it."""

    dictionary_id: str
    feature: int
    name: str
    severity: str = DEFAULT_SEVERITY
    min_activation: float = 0.0
    runbook_url: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> Flag:
        return cls(**json.loads(text))


def flags_key(dictionary_id: str) -> str:
    return dictionary_key(dictionary_id, "flags")


def flag_min_key(dictionary_id: str) -> str:
    return dictionary_key(dictionary_id, "flag_min")


def check_flag(flag: Flag, where: str = "") -> Flag:
    """Validate the fields that need no Redis; returns the flag with its severity resolved."""
    if not isinstance(flag.dictionary_id, str) or not flag.dictionary_id.strip():
        raise FlagError(f"{where}field 'dictionary' must be a non-empty string",
                        field="dictionary")
    if (not isinstance(flag.feature, int) or isinstance(flag.feature, bool)
            or flag.feature < 0):
        raise FlagError(f"{where}field 'feature'={flag.feature!r} must be an integer >= 0",
                        field="feature", out_of_range=isinstance(flag.feature, int))
    if not isinstance(flag.name, str) or not 1 <= len(flag.name.strip()) <= MAX_NAME:
        raise FlagError(f"{where}field 'name' must be 1..{MAX_NAME} characters", field="name")
    severity = flag.severity or DEFAULT_SEVERITY
    if severity not in SEVERITIES:
        raise FlagError(f"{where}field 'severity'={flag.severity!r} must be one of "
                        f"{list(SEVERITIES)}", field="severity")
    minimum = flag.min_activation
    if (isinstance(minimum, bool) or not isinstance(minimum, int | float)
            or not math.isfinite(minimum) or minimum < 0):
        raise FlagError(f"{where}field 'min_activation'={minimum!r} must be a finite number "
                        ">= 0", field="min_activation", out_of_range=True)
    url = flag.runbook_url or ""
    if not isinstance(url, str) or (url and (not url.startswith(("http://", "https://"))
                                             or any(c.isspace() for c in url) or "{{" in url)):
        raise FlagError(f"{where}field 'runbook_url'={url!r} must be an http(s) URL or empty",
                        field="runbook_url")
    return replace(flag, severity=severity, min_activation=float(minimum), runbook_url=url,
                   name=flag.name.strip())


def check_in_dictionary(flag: Flag, d_sae: int | None, known: Callable[[], list[str]],
                        where: str = "") -> Flag:
    """Raise FlagError unless the dictionary is known (d_sae not None) and feature < d_sae."""
    if d_sae is None:
        raise FlagError(
            f"{where}dictionary {flag.dictionary_id!r} is unknown (known: {sorted(known())}); "
            "pass its bundle with --dictionary DIR or let it publish trace events first",
            field="dictionary")
    if flag.feature >= d_sae:
        raise FlagError(f"{where}feature {flag.feature} is out of range: dictionary "
                        f"{flag.dictionary_id!r} has d_sae={d_sae} (ids 0..{d_sae - 1})",
                        field="feature", out_of_range=True)
    return flag


def parse_flag(raw: Any, where: str = "") -> Flag:
    """A Flag from a YAML/JSON mapping with the keys of FIELDS."""
    if not isinstance(raw, dict):
        raise FlagError(f"{where}each flag must be a mapping with keys {list(FIELDS)}")
    unknown = sorted(set(raw) - set(FIELDS))
    if unknown:
        raise FlagError(f"{where}unknown field(s) {unknown}; known: {list(FIELDS)}",
                        field=str(unknown[0]))
    for key in ("dictionary", "feature", "name"):
        if key not in raw:
            raise FlagError(f"{where}missing field {key!r}", field=key)
    flag = Flag(dictionary_id=raw["dictionary"], feature=raw["feature"], name=raw["name"],
                severity=raw.get("severity") or DEFAULT_SEVERITY,
                min_activation=raw.get("min_activation", 0.0),
                runbook_url=raw.get("runbook_url") or "")
    return check_flag(flag, where)


def read_flags_file(path: str | Path) -> list[Flag]:
    """Parse a YAML file whose `flags:` key lists flags; errors name the file and entry."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FlagError(f"flags file {path} does not exist") from None
    except yaml.YAMLError as exc:
        raise FlagError(f"flags file {path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("flags"), list):
        raise FlagError(f"flags file {path}: needs a top-level 'flags:' list")
    flags = [parse_flag(raw, f"flags file {path}, flags[{i}]: ")
             for i, raw in enumerate(data["flags"])]
    seen: set[tuple[str, int]] = set()
    for i, flag in enumerate(flags):
        key = (flag.dictionary_id, flag.feature)
        if key in seen:
            raise FlagError(f"flags file {path}, flags[{i}]: feature {flag.feature} of "
                            f"{flag.dictionary_id!r} is flagged twice", field="feature")
        seen.add(key)
    return flags


class FlagStore:
    """Flags in Redis, validated against the dictionaries the registry knows."""

    def __init__(self, client: redis.Redis, registry: DictionaryRegistry) -> None:
        self.client = client
        self.registry = registry

    def validate(self, flag: Flag, where: str = "") -> Flag:
        """check_flag plus: the dictionary is known and the feature is below its d_sae."""
        flag = check_flag(flag, where)
        return check_in_dictionary(flag, self.registry.d_sae(flag.dictionary_id),
                                   self.registry.ids, where)

    def upsert(self, flag: Flag) -> tuple[Flag, bool]:
        """Validate and store; returns (stored flag, created)."""
        return self._store(self.validate(flag))

    def _store(self, flag: Flag) -> tuple[Flag, bool]:
        pipe = self.client.pipeline(transaction=True)
        pipe.hset(flags_key(flag.dictionary_id), str(flag.feature), flag.to_json())
        pipe.hset(flag_min_key(flag.dictionary_id), str(flag.feature), repr(flag.min_activation))
        created = pipe.execute()[0] == 1
        self.client.sadd(FLAGGED_DICTIONARIES_KEY, flag.dictionary_id)
        return flag, created

    def delete(self, dictionary_id: str, feature: int) -> bool:
        """Remove a flag; False when there was none."""
        pipe = self.client.pipeline(transaction=True)
        pipe.hdel(flags_key(dictionary_id), str(feature))
        pipe.hdel(flag_min_key(dictionary_id), str(feature))
        return pipe.execute()[0] == 1

    def list(self, dictionary_id: str | None = None) -> list[Flag]:
        """Stored flags sorted by (dictionary, feature)."""
        if dictionary_id:
            ids = [dictionary_id]
        else:
            ids = sorted({m.decode() for m in self.client.smembers(FLAGGED_DICTIONARIES_KEY)})
        flags = [Flag.from_json(raw) for d in ids
                 for raw in self.client.hgetall(flags_key(d)).values()]
        return sorted(flags, key=lambda f: (f.dictionary_id, f.feature))

    def load_file(self, path: str | Path) -> list[Flag]:
        """Validate every flag of a YAML file first, then upsert them all."""
        flags = read_flags_file(path)
        checked = [self.validate(flag, f"flags file {path}, flags[{i}]: ")
                   for i, flag in enumerate(flags)]
        for flag in checked:  # already validated: store without checking again
            self._store(flag)
        return checked
