"""The synthetic dump generator and the independent oracle that end-to-end tests trust.

End-to-end tests compare the database against ``oracle.read_expected``; these tests make sure
both sides of that comparison are sound: the generator writes what it claims (names, counts,
realistic shape, duplicates, every kind of bad line) and the oracle classifies it exactly.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import zstandard

from protheon.pgcr.generator import GeneratedFile, GeneratorOptions, generate
from tests.contract_cases import BROKEN_JSON, CONTRACT_VIOLATIONS, DELETE, GOOD, with_field
from tests.oracle import is_valid, read_expected, read_lines

_PERIOD = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")
_ICON = re.compile(r"/common/destiny2_content/icons/[0-9a-f]{32}\.jpg")


def _gen(out: Path, **kwargs: Any) -> list[GeneratedFile]:
    return generate(GeneratorOptions(out=out, **kwargs))


def _raw(path: Path) -> bytes:
    return b"".join(line + b"\n" for line in read_lines(path))


def _frames(data: bytes, sized: bool) -> list[bytes]:
    """Decompress frame by frame: the content of each independent zstd frame.

    ``sized``: frames must record their content size (a streamed single frame cannot).
    """
    frames = []
    while data:
        params = zstandard.get_frame_parameters(data)
        assert params.has_checksum
        dobj = zstandard.ZstdDecompressor().decompressobj()
        content = dobj.decompress(data)
        assert dobj.eof
        if sized:
            assert params.content_size == len(content)
        frames.append(content)
        data = dobj.unused_data
    return frames


@pytest.fixture(scope="module")
def dirty(tmp_path_factory: pytest.TempPathFactory) -> list[GeneratedFile]:
    """A small run with duplicates and bad lines, shared by the tests that only read it."""
    out = tmp_path_factory.mktemp("dirty")
    return _gen(out, files=3, lines=2000, seed=7, dup_rate=0.1, bad_rate=0.06)


def test_same_seed_same_bytes_other_seed_differs(tmp_path: Path) -> None:
    kwargs: dict[str, Any] = {"files": 2, "lines": 300, "dup_rate": 0.1, "bad_rate": 0.1}
    a = _gen(tmp_path / "a", seed=3, **kwargs)
    b = _gen(tmp_path / "b", seed=3, **kwargs)
    c = _gen(tmp_path / "c", seed=4, **kwargs)
    for fa, fb, fc in zip(a, b, c, strict=True):
        assert fa.path.read_bytes() == fb.path.read_bytes()
        assert fa.path.name == fc.path.name
        assert fa.path.read_bytes() != fc.path.read_bytes()


def test_names_ranges_and_atomic_output(tmp_path: Path) -> None:
    out = tmp_path / "not" / "yet"  # created on demand
    files = _gen(out, files=3, lines=100, start_id=5_000)
    assert [f.path.name for f in files] == [
        "5000-5100.jsonl.zst",
        "5100-5200.jsonl.zst",
        "5200-5300.jsonl.zst",
    ]
    assert sorted(p.name for p in out.iterdir()) == [f.path.name for f in files]  # no .part
    for f in files:
        first, end = (int(x) for x in f.path.name.split(".")[0].split("-"))
        ids = [int(json.loads(line)["_id"]) for line in read_lines(f.path)]
        assert ids == sorted(set(ids))
        assert first <= ids[0] and ids[-1] < end
        assert len(ids) == f.lines == 100


def test_counts_sizes_and_line_format(dirty: list[GeneratedFile]) -> None:
    for f in dirty:
        raw = zstandard.ZstdDecompressor().decompressobj().decompress(f.path.read_bytes())
        assert raw.endswith(b"\n") and raw.count(b"\n") == f.lines == 2000
        assert len(raw) == f.bytes_uncompressed
    average = sum(f.bytes_uncompressed for f in dirty) / sum(f.lines for f in dirty)
    assert 3000 < average < 4300, average


def test_good_lines_look_like_the_dataset(tmp_path: Path) -> None:
    (f,) = _gen(tmp_path, files=1, lines=1500, seed=11)
    entry_counts: Counter[int] = Counter()
    fireteam_types: set[type] = set()
    membership_ids: Counter[str] = Counter()
    characters: dict[str, set[str]] = {}
    doubled = no_extended = no_weapons = 0
    periods = []
    for line in read_lines(f.path):
        pgcr = json.loads(line)
        details = pgcr["activityDetails"]
        assert pgcr["_id"] == details["instanceId"] and pgcr["_id"].isdigit()
        assert _PERIOD.fullmatch(pgcr["period"])
        periods.append(pgcr["period"])
        assert type(pgcr["startingPhaseIndex"]) is int
        assert type(pgcr["activityWasStartedFromBeginning"]) is bool
        assert type(details["isPrivate"]) is bool
        assert all(type(m) is int for m in details["modes"]) and type(details["mode"]) is int
        for key in ("referenceId", "directorActivityHash"):
            assert 0 <= details[key] < 2**32
        assert isinstance(pgcr["teams"], list)
        for team in pgcr["teams"]:
            assert set(team) == {"teamId", "standing", "score", "teamName"}
        entries = pgcr["entries"]
        entry_counts[len(entries)] += 1
        assert len({e["characterId"] for e in entries}) == len(entries)
        members = Counter(e["player"]["destinyUserInfo"]["membershipId"] for e in entries)
        doubled += any(n > 1 for n in members.values())
        for e in entries:
            user = e["player"]["destinyUserInfo"]
            mid, cid = user["membershipId"], e["characterId"]
            assert len(mid) == 19 and mid.isdigit() and len(cid) == 19 and cid.isdigit()
            assert _ICON.fullmatch(user["iconPath"])
            membership_ids[mid] += 1
            characters.setdefault(mid, set()).add(cid)
            values = e["values"]
            assert values["completed"] in (0, 1)
            for ratio in ("efficiency", "killsDeathsRatio", "killsDeathsAssists"):
                assert type(values[ratio]) is float
            assert type(values["kills"]) is int and type(values["deaths"]) is int
            assert 0 < values["fireteamId"] < 9.2e18
            fireteam_types.add(type(values["fireteamId"]))
            if "extended" not in e:
                no_extended += 1
                continue
            assert set(e["extended"]["values"]) >= {"precisionKills", "weaponKillsSuper"}
            weapons = e["extended"].get("weapons")
            if weapons is None:
                no_weapons += 1
                continue
            assert 0 < len(weapons) <= 6
            assert len({w["referenceId"] for w in weapons}) == len(weapons)
    assert min(entry_counts) == 1 and max(entry_counts) == 12
    assert fireteam_types == {int, float}
    assert doubled > 0 and no_extended > 0 and no_weapons > 0
    assert sum(n > 1 for n in membership_ids.values()) > 100  # a finite pool: players recur
    assert all(len(c) <= 3 for c in characters.values())  # stable characterIds per class
    assert periods[0] <= periods[-1]


def test_rates_duplicates_and_bad_lines_match_the_oracle(dirty: list[GeneratedFile]) -> None:
    total = sum(f.lines for f in dirty)
    bad = sum(f.bad_lines for f in dirty)
    dup = sum(f.duplicate_lines for f in dirty)
    assert 0.04 * total < bad < 0.08 * total
    assert 0.07 * total < dup < 0.13 * total
    expected = read_expected(f.path for f in dirty)
    assert expected.lines == total
    assert len(expected.rejects) == bad
    assert len(expected.instances) == total - bad - dup  # duplicates collapse
    for f in dirty:
        rejected = {n for name, n in expected.rejects if name == f.path.name}
        assert len(rejected) == f.bad_lines
    assert expected.entries and expected.weapons and expected.players
    assert {i for i, _ in expected.entries} <= expected.instances
    assert {(i, c) for i, c, _ in expected.weapons} <= expected.entries


def test_duplicates_are_exact_copies_some_across_files(dirty: list[GeneratedFile]) -> None:
    seen: dict[bytes, bytes] = {}
    cross_file = 0
    for f in dirty:
        first = int(f.path.name.split("-")[0])
        repeats = 0
        for line in read_lines(f.path):
            try:
                pgcr = json.loads(line)
            except ValueError:
                continue
            if not isinstance(pgcr.get("activityDetails"), dict):
                continue
            key = pgcr["_id"].encode()
            if key in seen:
                assert seen[key] == line  # byte-identical repeat
                repeats += 1
                cross_file += int(pgcr["_id"]) < first
            else:
                seen[key] = line
        # Bad lines with a parsable id never share it with a good line, so every repeat is a dup.
        assert repeats == f.duplicate_lines
    assert cross_file > 0


def test_all_three_kinds_of_bad_lines_occur(dirty: list[GeneratedFile]) -> None:
    kinds: Counter[str] = Counter()
    for f in dirty:
        for line in read_lines(f.path):
            try:
                pgcr = json.loads(line.decode("utf-8"))
            except ValueError:
                kinds["broken json"] += 1
                continue
            if "activityDetails" not in pgcr:
                kinds["no activityDetails"] += 1
            elif not is_valid(line):
                kinds["wrong type"] += 1
    assert set(kinds) == {"broken json", "no activityDetails", "wrong type"}
    assert sum(kinds.values()) == sum(f.bad_lines for f in dirty)


def test_multi_frame_files_decode_to_the_single_frame_lines(tmp_path: Path) -> None:
    kwargs: dict[str, Any] = {"files": 2, "lines": 450, "seed": 5, "dup_rate": 0.05}
    single = _gen(tmp_path / "single", **kwargs)
    multi = _gen(tmp_path / "multi", multi_frame=True, frame_lines=100, level=1, **kwargs)
    for s, m in zip(single, multi, strict=True):
        assert len(_frames(s.path.read_bytes(), sized=False)) == 1
        frames = _frames(m.path.read_bytes(), sized=True)
        assert [f.count(b"\n") for f in frames] == [100, 100, 100, 100, 50]
        assert all(f.endswith(b"\n") for f in frames)
        assert b"".join(frames) == _raw(s.path) == _raw(m.path)
        assert (s.lines, s.bad_lines, s.duplicate_lines, s.bytes_uncompressed) == (
            m.lines,
            m.bad_lines,
            m.duplicate_lines,
            m.bytes_uncompressed,
        )


@pytest.mark.parametrize(
    "bad",
    [
        {"lines": 0},
        {"files": -1},
        {"dup_rate": 1.5},
        {"bad_rate": -0.1},
        {"dup_rate": 0.6, "bad_rate": 0.6},
        {"frame_lines": 0},
    ],
)
def test_rejects_invalid_options(tmp_path: Path, bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        _gen(tmp_path, **bad)


# --- the oracle on hand-written lines -------------------------------------------------------


def _write(tmp_path: Path, lines: list[bytes], frames: int = 1) -> Path:
    path = tmp_path / "1-100.jsonl.zst"
    data = b"".join(lines)
    cctx = zstandard.ZstdCompressor()
    step = max(1, len(data) // frames)
    path.write_bytes(b"".join(cctx.compress(data[i : i + step]) for i in range(0, len(data), step)))
    return path


def _enc(obj: Any) -> bytes:
    return json.dumps(obj).encode() + b"\n"


def test_oracle_valid_lines_and_sets(tmp_path: Path) -> None:
    second = with_field("_id", "43")
    second["entries"].append(with_field("entries.0.characterId", "8")["entries"][0])
    int_id = with_field("_id", DELETE)
    int_id["activityDetails"]["instanceId"] = 44
    lines = [_enc(GOOD), b"  \r\n", _enc(GOOD), _enc(second), _enc(int_id)]
    lines.append(_enc(with_field("entries", None)).rstrip(b"\n"))  # no final newline
    path = _write(tmp_path, lines, frames=3)  # frames split mid-line
    expected = read_expected([path])
    assert expected.rejects == set()
    assert expected.lines == 6  # physical lines, the whitespace-only one included
    assert expected.instances == {42, 43, 44}
    assert expected.entries == {(42, 7), (43, 7), (43, 8), (44, 7)}
    assert expected.weapons == {(42, 7, 11), (43, 7, 11), (43, 8, 11), (44, 7, 11)}
    assert expected.players == {9}


@pytest.mark.parametrize("pgcr", CONTRACT_VIOLATIONS)
def test_oracle_rejects_contract_violations(tmp_path: Path, pgcr: Any) -> None:
    path = _write(tmp_path, [_enc(GOOD), b"\n", _enc(pgcr)])
    expected = read_expected([path])
    assert expected.rejects == {(path.name, 3)}  # physical numbering: the blank line counts
    assert expected.instances == {42}


@pytest.mark.parametrize("line", BROKEN_JSON)
def test_oracle_rejects_broken_json(tmp_path: Path, line: bytes) -> None:
    expected = read_expected([_write(tmp_path, [line])])
    assert expected.rejects == {("1-100.jsonl.zst", 1)} and not expected.instances
