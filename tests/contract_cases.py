"""Hand-written lines on both sides of the validity contract.

Shared by the oracle's tests and the worker's transform tests, so the two independent
implementations of the contract are held to the same cases.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

GOOD: dict[str, Any] = {
    "_id": "42",
    "period": "2021-03-14T18:22:05Z",
    "activityDetails": {"instanceId": "42", "mode": 5, "modes": [5, 10], "isPrivate": False},
    "entries": [
        {
            "characterId": "7",
            "player": {"destinyUserInfo": {"membershipId": "9"}, "characterClass": "Hunter"},
            "values": {"kills": 3, "efficiency": 1.5, "fireteamId": 5.3e18},
            "extended": {"weapons": [{"referenceId": 11, "values": {"uniqueWeaponKills": 2}}]},
        }
    ],
    "teams": [],
}


DELETE = object()


def with_field(path: str, value: Any) -> dict[str, Any]:
    """A deep copy of GOOD with one field (dotted path, ints index lists) replaced."""
    pgcr: dict[str, Any] = json.loads(json.dumps(GOOD))
    *parents, last = path.split(".")
    node: Any = pgcr
    for part in parents:
        node = node[int(part)] if part.isdigit() else node[part]
    key: int | str = int(last) if last.isdigit() else last
    if value is DELETE:
        del node[key]
    else:
        node[key] = value
    return pgcr


CONTRACT_VIOLATIONS = [
    pytest.param(with_field("activityDetails", DELETE), id="no-activityDetails"),
    pytest.param(with_field("activityDetails", []), id="activityDetails-list"),
    pytest.param(with_field("_id", "4x2"), id="id-not-digits"),
    pytest.param(with_field("period", 1615745725), id="period-int"),
    pytest.param(with_field("entries", "none"), id="entries-string"),
    pytest.param(with_field("entries.0", 3), id="entry-not-object"),
    pytest.param(with_field("entries.0.characterId", 7), id="characterId-int"),
    pytest.param(with_field("entries.0.characterId", {"id": "7"}), id="characterId-object"),
    pytest.param(with_field("entries.0.player.destinyUserInfo", DELETE), id="no-userinfo"),
    pytest.param(with_field("entries.0.values.kills", "many"), id="kills-string"),
    pytest.param(with_field("entries.0.values.kills", True), id="kills-bool"),
    pytest.param(with_field("entries.0.player.characterClass", 1), id="class-int"),
    pytest.param(with_field("activityDetails.mode", "5"), id="mode-string"),
    pytest.param(with_field("activityDetails.modes", [5, "10"]), id="modes-item-string"),
    pytest.param(with_field("activityDetails.isPrivate", 0), id="isPrivate-int"),
    pytest.param(with_field("entries.0.extended.weapons", {}), id="weapons-object"),
    pytest.param(with_field("entries.0.extended.weapons.0.referenceId", DELETE), id="no-ref"),
    pytest.param(with_field("teams", {}), id="teams-object"),
    pytest.param([1, 2], id="not-an-object"),
]

BROKEN_JSON = [
    pytest.param(
        b'{"_id": "1", "period": "x", "activityDetails": {}, "startingPhaseIndex": NaN}\n', id="nan"
    ),
    pytest.param(b'{"_id": "1", "period": "x\x00", "activityDetails": {}}\n', id="control-char"),
    pytest.param(b'{"_id": "1", "period": "\xff", "activityDetails": {}}\n', id="bad-utf8"),
    pytest.param(b'\xef\xbb\xbf{"_id": "1", "period": "x", "activityDetails": {}}\n', id="bom"),
    pytest.param(b'{"_id": "1", "period": "x", "activityDetails": {}\n', id="truncated"),
]
