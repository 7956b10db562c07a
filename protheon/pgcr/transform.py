"""PGCR lines → rows of the pgcr tables, plus rejects for lines that are not PGCRs.

The column order of each tuple is the order of the ``*_COLUMNS`` lists, which the writer uses
for COPY. Everything that can make PostgreSQL refuse a row (a number out of range, an id that is
not a decimal, a bad timestamp) is caught here and turns the line into a reject, so one bad line
can never fail a whole chunk's COPY.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta

from protheon.pgcr.decode import DecodeError, Entry, Pgcr, decode

INSTANCE_COLUMNS = (
    "instance_id", "period", "ended_at", "reference_id", "director_activity_hash", "mode",
    "modes", "is_private", "membership_type", "starting_phase_index", "started_from_beginning",
    "player_count", "entry_count", "completed", "flawless", "job_id",
)  # fmt: skip
ENTRY_COLUMNS = (
    "instance_id", "character_id", "membership_id", "membership_type", "character_class",
    "class_hash", "race_hash", "gender_hash", "character_level", "light_level", "emblem_hash",
    "standing", "score", "assists", "completed", "deaths", "kills", "opponents_defeated",
    "efficiency", "kills_deaths_ratio", "kills_deaths_assists", "activity_duration_seconds",
    "completion_reason", "fireteam_id", "start_seconds", "time_played_seconds", "player_count",
    "team_score", "precision_kills", "weapon_kills_grenade", "weapon_kills_melee",
    "weapon_kills_super", "weapon_kills_ability",
)  # fmt: skip
WEAPON_COLUMNS = (
    "instance_id", "character_id", "weapon_id", "kills", "precision_kills", "precision_ratio",
)  # fmt: skip
PLAYER_COLUMNS = (
    "membership_id", "membership_type", "display_name", "global_display_name",
    "global_display_name_code", "icon_path", "cross_save_override", "last_instance_id",
    "last_seen",
)  # fmt: skip

REJECT_KEEP_CHARS = 4096

_I16 = 1 << 15
_I32 = 1 << 31
_I64 = 1 << 63

Row = tuple[object, ...]


class RowError(DecodeError):
    """A decoded PGCR holds a value no column can take."""


def _int(value: float | None, limit: int, what: str) -> int | None:
    if value is None:
        return None
    try:
        number = int(value)
    except (OverflowError, ValueError):  # inf, nan
        raise RowError(f"{what}: {value} is not a finite number") from None
    if -limit <= number < limit:
        return number
    raise RowError(f"{what}: {number} is out of range")


def _i32(value: float | None, what: str) -> int | None:
    if value is None:
        return None
    try:
        number = int(value)
    except (OverflowError, ValueError):
        raise RowError(f"{what}: {value} is not a finite number") from None
    if -_I32 <= number < _I32:  # the hot path: most columns are int4
        return number
    raise RowError(f"{what}: {number} is out of range")


_REAL_MAX = 3.4e38  # PostgreSQL real


def _real(value: float | None, what: str) -> float | None:
    if value is None or -_REAL_MAX <= value <= _REAL_MAX:  # NaN fails both comparisons
        return value
    raise RowError(f"{what}: {value} does not fit a real column")


def _text(value: str | None, what: str) -> str | None:
    if value is None or "\x00" not in value:
        return value
    raise RowError(f"{what}: contains a NUL character, which PostgreSQL text cannot hold")


def _i16(value: float | None, what: str) -> int | None:
    return _int(value, _I16, what)


def _i64(value: float | None, what: str) -> int | None:
    return _int(value, _I64, what)


def _id(text: str | int | None, what: str) -> int:
    if isinstance(text, int):
        number = text
    elif text is None or not text.isascii() or not text.isdigit():
        raise RowError(f"{what}: {text!r} is not a decimal id")
    else:
        number = int(text)
    if not 0 <= number < _I64:
        raise RowError(f"{what}: {text} is out of range")
    return number


def _period(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise RowError(f"period: {text!r} is not an RFC 3339 time") from None
    if moment.tzinfo is None:
        raise RowError(f"period: {text!r} has no time zone")
    return moment


@dataclasses.dataclass
class Batch:
    """The rows of one chunk, ready for COPY; duplicate instances within the chunk are dropped."""

    job_id: int
    seen: set[int] = dataclasses.field(default_factory=set)  # shared by the batches of one job
    instances: list[Row] = dataclasses.field(default_factory=list)
    entries: list[Row] = dataclasses.field(default_factory=list)
    weapons: list[Row] = dataclasses.field(default_factory=list)
    players: dict[int, Row] = dataclasses.field(default_factory=dict)
    # (line number within the job, error, bytes, raw): the file's line numbering is the
    # ledger's business, because a passed-through chunk learns its first line only later.
    rejects: list[Row] = dataclasses.field(default_factory=list)
    duplicate_lines: int = 0
    blank_lines: int = 0
    lines: int = 0

    def add_line(self, line_in_job: int, line: bytes) -> None:
        """Decode and transform one line; a bad line becomes a reject, never an exception."""
        self.lines += 1
        if not line.strip():
            self.blank_lines += 1
            return
        try:
            pgcr = decode(line)
            self._add_pgcr(pgcr)
        except DecodeError as exc:
            self.add_reject(line_in_job, str(exc), line)
        except (ValueError, OverflowError) as exc:  # e.g. a period near year 9999 + a duration
            self.add_reject(line_in_job, f"invalid PGCR: {type(exc).__name__}: {exc}", line)

    def add_reject(self, line_in_job: int, error: str, line: bytes) -> None:
        raw = line[: REJECT_KEEP_CHARS * 4].decode("utf-8", "replace")[:REJECT_KEEP_CHARS]
        self.rejects.append((line_in_job, error[:1000], len(line), raw.replace("\x00", "\ufffd")))

    def _add_pgcr(self, pgcr: Pgcr) -> None:
        details = pgcr.activity_details
        instance_id = _id(pgcr.id if pgcr.id is not None else details.instance_id, "instance id")
        if instance_id in self.seen:
            self.duplicate_lines += 1
            return
        period = _period(pgcr.period)
        entries: list[Row] = []
        weapons: list[Row] = []
        players: dict[int, Row] = {}
        characters: set[int] = set()
        longest = 0.0
        completed = False
        flawless = True
        for entry in pgcr.entries or ():
            character_id = _id(entry.character_id, "characterId")
            if character_id in characters:
                continue
            characters.add(character_id)
            row, player = _entry_rows(instance_id, character_id, entry, period)
            entries.append(row)
            players[row[2]] = player  # type: ignore[index]
            weapons.extend(_weapon_rows(instance_id, character_id, entry))
            values = entry.values
            if values is not None:
                longest = max(longest, values.activity_duration_seconds or 0.0)
                completed = completed or values.completed == 1
                flawless = flawless and not (values.deaths or 0) > 0
        self.instances.append(
            (
                instance_id, period, period + timedelta(seconds=longest),
                _i64(details.reference_id, "referenceId"),
                _i64(details.director_activity_hash, "directorActivityHash"),
                _i16(details.mode, "mode"),
                [_i16(mode, "modes") for mode in details.modes or ()],
                details.is_private, _i16(details.membership_type, "membershipType"),
                _i32(pgcr.starting_phase_index, "startingPhaseIndex"),
                pgcr.activity_was_started_from_beginning,
                len(players), len(entries), completed, flawless, self.job_id,
            )
        )  # fmt: skip
        self.seen.add(instance_id)
        self.entries.extend(entries)
        self.weapons.extend(weapons)
        for membership_id, player in players.items():
            known = self.players.get(membership_id)
            if known is None or known[7] < instance_id:  # type: ignore[operator]
                self.players[membership_id] = player


@dataclasses.dataclass(frozen=True)
class LostLines:
    """A stretch of the source that could not be read (a corrupt frame): one reject says so."""

    reason: str


def batches(
    lines: Iterable[bytes | LostLines], job_id: int, batch_lines: int = 5000
) -> Iterator[Batch]:
    """Transform lines into batches of at most ``batch_lines`` lines, so memory stays bounded.
    Rejects are numbered from 1 within the job.

    The batches of one call share the set of instance ids already seen, so a PGCR repeated
    inside the chunk is counted as a duplicate once and never written twice.
    """
    seen: set[int] = set()
    batch = Batch(job_id, seen)
    in_batch = 0
    for line_in_job, line in enumerate(lines, 1):
        if isinstance(line, LostLines):
            batch.lines += 1
            batch.add_reject(line_in_job, line.reason, b"")
        else:
            batch.add_line(line_in_job, line)
        in_batch += 1
        if in_batch == batch_lines:
            yield batch
            batch = Batch(job_id, seen)
            in_batch = 0
    if in_batch:
        yield batch


def _entry_rows(
    instance_id: int, character_id: int, entry: Entry, period: datetime
) -> tuple[Row, Row]:
    player = entry.player
    user = player.destiny_user_info
    membership_id = _id(user.membership_id, "membershipId")
    membership_type = _i16(user.membership_type, "membershipType")
    values = entry.values
    ext = entry.extended.values if entry.extended is not None else None
    row: Row = (
        instance_id, character_id, membership_id, membership_type,
        _text(player.character_class, "characterClass"),
        _i64(player.class_hash, "classHash"), _i64(player.race_hash, "raceHash"),
        _i64(player.gender_hash, "genderHash"), _i32(player.character_level, "characterLevel"),
        _i32(player.light_level, "lightLevel"), _i64(player.emblem_hash, "emblemHash"),
        _i32(entry.standing, "standing"), _i32(entry.score, "score"),
    )  # fmt: skip
    if values is not None:
        row += (
            _i32(values.assists, "assists"),
            None if values.completed is None else values.completed == 1,
            _i32(values.deaths, "deaths"), _i32(values.kills, "kills"),
            _i32(values.opponents_defeated, "opponentsDefeated"),
            _real(values.efficiency, "efficiency"),
            _real(values.kills_deaths_ratio, "killsDeathsRatio"),
            _real(values.kills_deaths_assists, "killsDeathsAssists"),
            _i32(values.activity_duration_seconds, "activityDurationSeconds"),
            _i32(values.completion_reason, "completionReason"),
            _i64(values.fireteam_id, "fireteamId"),
            _i32(values.start_seconds, "startSeconds"),
            _i32(values.time_played_seconds, "timePlayedSeconds"),
            _i32(values.player_count, "playerCount"), _i32(values.team_score, "teamScore"),
        )  # fmt: skip
    else:
        row += (None,) * 15
    if ext is not None:
        row += (
            _i32(ext.precision_kills, "precisionKills"),
            _i32(ext.weapon_kills_grenade, "weaponKillsGrenade"),
            _i32(ext.weapon_kills_melee, "weaponKillsMelee"),
            _i32(ext.weapon_kills_super, "weaponKillsSuper"),
            _i32(ext.weapon_kills_ability, "weaponKillsAbility"),
        )
    else:
        row += (None,) * 5
    player_row: Row = (
        membership_id, membership_type, _text(user.display_name, "displayName"),
        _text(user.bungie_global_display_name, "bungieGlobalDisplayName"),
        _i32(user.bungie_global_display_name_code, "bungieGlobalDisplayNameCode"),
        _text(user.icon_path, "iconPath"), _i16(user.cross_save_override, "crossSaveOverride"),
        instance_id, period,
    )  # fmt: skip
    return row, player_row


def _weapon_rows(instance_id: int, character_id: int, entry: Entry) -> list[Row]:
    if entry.extended is None or not entry.extended.weapons:
        return []
    rows: list[Row] = []
    seen: set[int] = set()
    for weapon in entry.extended.weapons:
        weapon_id = _i64(weapon.reference_id, "weapon referenceId")
        if weapon_id is None or weapon_id in seen:
            continue
        seen.add(weapon_id)
        values = weapon.values
        if values is None:
            rows.append((instance_id, character_id, weapon_id, None, None, None))
        else:
            rows.append(
                (
                    instance_id, character_id, weapon_id,
                    _i32(values.unique_weapon_kills, "uniqueWeaponKills"),
                    _i32(values.unique_weapon_precision_kills, "uniqueWeaponPrecisionKills"),
                    _real(values.unique_weapon_kills_precision_kills, "precision ratio"),
                )
            )  # fmt: skip
    return rows
