"""The worker's decode + transform against the validity contract and the source oracle."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from protheon.pgcr.generator import GeneratorOptions, generate
from protheon.pgcr.transform import (
    ENTRY_COLUMNS,
    INSTANCE_COLUMNS,
    PLAYER_COLUMNS,
    REJECT_KEEP_CHARS,
    Batch,
    batches,
)
from tests.contract_cases import BROKEN_JSON, CONTRACT_VIOLATIONS, GOOD, with_field
from tests.oracle import read_expected, read_lines


def _line(pgcr: Any) -> bytes:
    return json.dumps(pgcr).encode()


def _one(pgcr: Any) -> Batch:
    batch = Batch(job_id=5)
    batch.add_line(17, _line(pgcr))
    return batch


def test_good_line_becomes_typed_rows() -> None:
    batch = _one(GOOD)
    assert not batch.rejects
    (instance,) = batch.instances
    row = dict(zip(INSTANCE_COLUMNS, instance, strict=True))
    assert row["instance_id"] == 42 and row["job_id"] == 5
    assert row["mode"] == 5 and row["modes"] == [5, 10] and row["player_count"] == 1
    assert row["period"].isoformat() == "2021-03-14T18:22:05+00:00"
    (entry,) = batch.entries
    values = dict(zip(ENTRY_COLUMNS, entry, strict=True))
    assert (values["character_id"], values["membership_id"], values["kills"]) == (7, 9, 3)
    assert values["fireteam_id"] == int(5.3e18) and values["efficiency"] == 1.5
    assert batch.weapons == [(42, 7, 11, 2, None, None)]
    player = dict(zip(PLAYER_COLUMNS, batch.players[9], strict=True))
    assert player["last_instance_id"] == 42


@pytest.mark.parametrize("pgcr", CONTRACT_VIOLATIONS)
def test_contract_violations_become_rejects(pgcr: Any) -> None:
    batch = _one(pgcr)
    assert [reject[0] for reject in batch.rejects] == [17]
    assert not batch.instances and not batch.entries and not batch.weapons and not batch.players


@pytest.mark.parametrize("line", BROKEN_JSON)
def test_broken_json_becomes_a_reject(line: bytes) -> None:
    batch = Batch(job_id=1)
    batch.add_line(3, line.rstrip(b"\n"))
    assert len(batch.rejects) == 1 and batch.rejects[0][0] == 3
    assert not batch.instances


def test_reject_keeps_a_readable_prefix_and_the_true_length() -> None:
    line = b'{"_id": "1", "junk": "' + b"\x00" * 10 + b"x" * 100_000
    batch = Batch(job_id=1)
    batch.add_line(9, line)
    (number, error, length, raw) = batch.rejects[0]
    assert number == 9 and length == len(line) and "invalid JSON" in error
    assert len(raw) == REJECT_KEEP_CHARS and "\x00" not in raw


def test_values_out_of_column_range_are_rejects_not_copy_failures() -> None:
    batch = _one(with_field("entries.0.values.kills", 1e12))
    assert "out of range" in batch.rejects[0][1]
    batch = _one(with_field("_id", "99999999999999999999"))
    assert "out of range" in batch.rejects[0][1]
    batch = _one(with_field("period", "yesterday"))
    assert "period" in batch.rejects[0][1]


def test_api_shape_gives_the_same_rows() -> None:
    def wrap(values: dict[str, Any]) -> dict[str, Any]:
        return {key: {"statId": key, "basic": {"value": value, "displayValue": str(value)}}
                for key, value in values.items()}  # fmt: skip

    api = json.loads(json.dumps(GOOD))
    entry = api["entries"][0]
    entry["values"] = wrap(entry["values"])
    for weapon in entry["extended"]["weapons"]:
        weapon["values"] = wrap(weapon["values"])
    plain, wrapped = _one(GOOD), _one({"Response": api})
    assert not wrapped.rejects
    assert wrapped.entries == plain.entries and wrapped.weapons == plain.weapons


def test_integer_ids_and_duplicates_across_batches_of_one_job() -> None:
    int_id = with_field("_id", 44)
    lines = [_line(GOOD), b"", _line(int_id), _line(GOOD), _line(int_id)]
    result = list(batches(lines, job_id=1, batch_lines=2))
    assert len(result) == 3
    assert [batch.lines for batch in result] == [2, 2, 1]
    assert [row[0] for batch in result for row in batch.instances] == [42, 44]
    assert sum(batch.duplicate_lines for batch in result) == 2
    assert sum(batch.blank_lines for batch in result) == 1


def test_players_keep_the_latest_instance() -> None:
    later = with_field("_id", "50")
    later["entries"][0]["player"]["destinyUserInfo"]["displayName"] = "renamed"
    batch = Batch(job_id=1)
    batch.add_line(1, _line(later))
    batch.add_line(2, _line(GOOD))
    player = dict(zip(PLAYER_COLUMNS, batch.players[9], strict=True))
    assert (player["display_name"], player["last_instance_id"]) == ("renamed", 50)


def test_generated_files_agree_with_the_oracle(tmp_path: Path) -> None:
    made = generate(
        GeneratorOptions(out=tmp_path, files=2, lines=1500, seed=3, dup_rate=0.05, bad_rate=0.03)
    )
    paths = [file.path for file in made]
    expected = read_expected(paths)
    instances: set[int] = set()
    entries: set[tuple[object, ...]] = set()
    weapons: set[tuple[object, ...]] = set()
    rejects: set[tuple[str, object]] = set()
    for path in paths:
        for batch in batches(read_lines(path), job_id=1, batch_lines=400):
            instances.update(int(row[0]) for row in batch.instances)  # type: ignore[call-overload]
            entries.update(row[:2] for row in batch.entries)
            weapons.update(row[:3] for row in batch.weapons)
            rejects.update((path.name, reject[0]) for reject in batch.rejects)
    assert instances == expected.instances
    assert entries == expected.entries
    assert weapons == expected.weapons
    assert rejects == expected.rejects and len(rejects) == sum(f.bad_lines for f in made)


def test_values_postgresql_would_refuse_become_rejects_not_copy_failures() -> None:
    """Found in review: each of these used to fail the whole chunk's COPY or transaction."""
    cases = {
        "NUL in text": with_field("entries.0.player.characterClass", "Hun\u0000ter"),
        "real overflow": with_field("entries.0.values.efficiency", 1e39),
        "period overflow": with_field("period", "9999-12-31T23:59:59Z"),
    }
    cases["period overflow"]["entries"][0]["values"]["activityDurationSeconds"] = 3600
    for name, pgcr in cases.items():
        batch = _one(pgcr)
        assert len(batch.rejects) == 1, name
        assert not batch.instances and not batch.entries, name
