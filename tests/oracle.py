"""Ground truth for end-to-end tests: what a correct load of some source files must contain.

It deliberately shares no code with ``protheon`` (stdlib ``json`` and ``zstandard`` only, a
plain dict walk instead of typed decoding), so a bug in the worker's decoder or transform cannot
hide by also being in the expectation. It is slow and simple on purpose; use it on test-sized
inputs.

The validity contract (the worker implements the same rules on its own):

- lines are numbered from 1 in their file, physically (as an editor shows them); a line that
  is empty or JSON whitespace only is skipped: it is neither valid nor rejected;
- the line must parse as strict JSON (UTF-8, no control characters inside strings, no
  ``NaN``/``Infinity``) into an object that has an ``activityDetails`` object;
- the instance id is ``_id`` if present (and not null), else ``activityDetails.instanceId``; it
  must be a string of ASCII decimal digits or a JSON integer;
- ``period`` must be an RFC 3339 string with a time zone;
- ``entries``, if present and not null, is a list of objects, each with a decimal-digit string
  ``characterId`` and ``player.destinyUserInfo.membershipId`` (``player`` and
  ``destinyUserInfo`` objects);
- every field of the format, when present and not null, has its JSON type: numbers are ints or
  finite floats (never bools or strings), lists of numbers, bools, strings, objects as listed
  below; ``extended.weapons`` is a list of objects whose ``referenceId`` is a number;
- anything else is a reject. Unknown fields are ignored.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeGuard

import zstandard

_WHITESPACE = b" \t\r\n"  # JSON's whitespace, nothing more
_READ_SIZE = 1 << 20

# Field name -> expected JSON type, per object of the format.
_NUM, _NUMS, _BOOL, _STR, _OBJ, _LIST, _ID = "num", "nums", "bool", "str", "obj", "list", "id"
_TOP = {
    "_id": _ID,
    "period": _STR,
    "startingPhaseIndex": _NUM,
    "activityWasStartedFromBeginning": _BOOL,
    "activityDetails": _OBJ,
    "entries": _LIST,
    "teams": _LIST,
}
_ACTIVITY = {
    "referenceId": _NUM,
    "directorActivityHash": _NUM,
    "instanceId": _ID,
    "mode": _NUM,
    "modes": _NUMS,
    "isPrivate": _BOOL,
    "membershipType": _NUM,
}
_ENTRY = {
    "standing": _NUM,
    "score": _NUM,
    "characterId": _STR,
    "player": _OBJ,
    "values": _OBJ,
    "extended": _OBJ,
}
_PLAYER = {
    "destinyUserInfo": _OBJ,
    "characterClass": _STR,
    "classHash": _NUM,
    "raceHash": _NUM,
    "genderHash": _NUM,
    "characterLevel": _NUM,
    "lightLevel": _NUM,
    "emblemHash": _NUM,
}
_USER_INFO = {
    "iconPath": _STR,
    "crossSaveOverride": _NUM,
    "applicableMembershipTypes": _NUMS,
    "isPublic": _BOOL,
    "membershipType": _NUM,
    "membershipId": _STR,
    "displayName": _STR,
    "bungieGlobalDisplayName": _STR,
    "bungieGlobalDisplayNameCode": _NUM,
}
_ENTRY_VALUES = dict.fromkeys(
    (
        "assists",
        "completed",
        "deaths",
        "kills",
        "opponentsDefeated",
        "efficiency",
        "killsDeathsRatio",
        "killsDeathsAssists",
        "score",
        "activityDurationSeconds",
        "completionReason",
        "fireteamId",
        "startSeconds",
        "timePlayedSeconds",
        "playerCount",
        "teamScore",
    ),
    _NUM,
)
_EXTENDED = {"weapons": _LIST, "values": _OBJ}
_EXTENDED_VALUES = dict.fromkeys(
    (
        "precisionKills",
        "weaponKillsGrenade",
        "weaponKillsMelee",
        "weaponKillsSuper",
        "weaponKillsAbility",
    ),
    _NUM,
)
_WEAPON = {"referenceId": _NUM, "values": _OBJ}
_WEAPON_VALUES = dict.fromkeys(
    ("uniqueWeaponKills", "uniqueWeaponPrecisionKills", "uniqueWeaponKillsPrecisionKills"), _NUM
)


class _Reject(Exception):
    """The line breaks the contract."""


@dataclass
class Expected:
    """What the database must hold after loading the files, and what must be rejected."""

    instances: set[int] = field(default_factory=set)  # distinct instance ids of valid lines
    entries: set[tuple[int, int]] = field(default_factory=set)  # (instance_id, character_id)
    weapons: set[tuple[int, int, int]] = field(default_factory=set)  # (+ weapon referenceId)
    players: set[int] = field(default_factory=set)  # membershipIds
    rejects: set[tuple[str, int]] = field(default_factory=set)  # (file name, 1-based line no.)
    lines: int = 0  # physical lines read (valid, rejected, blank; duplicates included)


def read_lines(path: Path) -> Iterator[bytes]:
    """Decompressed lines of a ``.zst`` file (every frame), without their ``\\n``.

    Streams, so memory is bounded by the longest line; a last line without ``\\n`` is kept.
    """
    dctx = zstandard.ZstdDecompressor()
    with open(path, "rb") as fh, dctx.stream_reader(fh, read_across_frames=True) as reader:
        pending = b""
        while chunk := reader.read(_READ_SIZE):
            parts = (pending + chunk).split(b"\n")
            pending = parts.pop()
            yield from parts
        if pending:
            yield pending


def _is_number(value: object) -> bool:
    if type(value) is int:
        return True
    return type(value) is float and math.isfinite(value)


def _is_digits(value: object) -> TypeGuard[str]:
    return isinstance(value, str) and value.isascii() and value.isdigit()


def _check(obj: dict[str, Any], spec: dict[str, str]) -> None:
    """Type-check the fields of ``spec`` that are present and not null."""
    for name, kind in spec.items():
        value = obj.get(name)
        if value is None:
            continue
        if kind == _NUM:
            ok = _is_number(value)
        elif kind == _NUMS:
            ok = isinstance(value, list) and all(_is_number(v) for v in value)
        elif kind == _BOOL:
            ok = isinstance(value, bool)
        elif kind == _STR:
            ok = isinstance(value, str)
        elif kind == _OBJ:
            ok = isinstance(value, dict)
        elif kind == _LIST:
            ok = isinstance(value, list)
        else:  # _ID
            ok = isinstance(value, str) or (type(value) is int)
        if not ok:
            raise _Reject(name)


def _instance_id(pgcr: dict[str, Any], activity: dict[str, Any]) -> int:
    raw = pgcr.get("_id")
    if raw is None:
        raw = activity.get("instanceId")
    if type(raw) is int:
        return raw
    if _is_digits(raw):
        return int(raw)
    raise _Reject("instance id")


def _no_constants(name: str) -> Any:
    raise ValueError(f"non-standard JSON constant {name}")


def _parse(line: bytes) -> tuple[int, list[tuple[int, int, list[int]]]]:
    """Validate one line: (instance id, [(membershipId, characterId, weapon ids)])."""
    try:
        # Strict UTF-8 first: json.loads(bytes) would accept a BOM and lone surrogates.
        pgcr = json.loads(line.decode("utf-8"), parse_constant=_no_constants)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise _Reject("json") from exc
    if not isinstance(pgcr, dict):
        raise _Reject("not an object")
    activity = pgcr.get("activityDetails")
    if not isinstance(activity, dict):
        raise _Reject("activityDetails")
    _check(pgcr, _TOP)
    _check(activity, _ACTIVITY)
    instance_id = _instance_id(pgcr, activity)
    period = pgcr.get("period")
    if not isinstance(period, str):
        raise _Reject("period")
    try:
        if datetime.fromisoformat(period).tzinfo is None:
            raise _Reject("period without time zone")
    except ValueError:
        raise _Reject("period") from None
    rows: list[tuple[int, int, list[int]]] = []
    for entry in pgcr.get("entries") or ():
        if not isinstance(entry, dict):
            raise _Reject("entry")
        _check(entry, _ENTRY)
        player = entry.get("player")
        user = player.get("destinyUserInfo") if isinstance(player, dict) else None
        if not isinstance(player, dict) or not isinstance(user, dict):
            raise _Reject("player")
        _check(player, _PLAYER)
        _check(user, _USER_INFO)
        character_id, membership_id = entry.get("characterId"), user.get("membershipId")
        if not _is_digits(character_id) or not _is_digits(membership_id):
            raise _Reject("ids")
        if entry.get("values") is not None:
            _check(entry["values"], _ENTRY_VALUES)
        weapon_ids: list[int] = []
        extended = entry.get("extended")
        if extended is not None:
            _check(extended, _EXTENDED)
            if extended.get("values") is not None:
                _check(extended["values"], _EXTENDED_VALUES)
            for weapon in extended.get("weapons") or ():
                if not isinstance(weapon, dict) or not _is_number(weapon.get("referenceId")):
                    raise _Reject("weapon")
                _check(weapon, _WEAPON)
                if weapon.get("values") is not None:
                    _check(weapon["values"], _WEAPON_VALUES)
                weapon_ids.append(int(weapon["referenceId"]))
        rows.append((int(membership_id), int(character_id), weapon_ids))
    return instance_id, rows


def is_valid(line: bytes) -> bool:
    """Whether one non-empty line (without its ``\\n``) meets the contract."""
    try:
        _parse(line)
    except _Reject:
        return False
    return True


def read_expected(paths: Iterable[Path]) -> Expected:
    """Read every line of ``paths`` and collect what a correct load must produce.

    Sets make duplicates (within or across files) count once, as the database's keys do.
    """
    expected = Expected()
    for path in paths:
        number = 0
        for line in read_lines(path):
            number += 1
            if not line.strip(_WHITESPACE):
                continue
            try:
                instance_id, rows = _parse(line)
            except _Reject:
                expected.rejects.add((path.name, number))
                continue
            expected.instances.add(instance_id)
            for membership_id, character_id, weapon_ids in rows:
                expected.players.add(membership_id)
                expected.entries.add((instance_id, character_id))
                for weapon_id in weapon_ids:
                    expected.weapons.add((instance_id, character_id, weapon_id))
        expected.lines += number
    return expected
