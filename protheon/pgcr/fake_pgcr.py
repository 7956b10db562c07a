"""Build one realistic synthetic PGCR (post game carnage report) as a plain dict.

The loader must be exercised on data that looks like the public PGCR dump: the same fields and
JSON types, plain-number stats, players that recur across PGCRs (so per-player tables see
repeats), several characters of one player in one PGCR, big ``fireteamId`` values that are
sometimes floats, and an average line size near the real ~3.5 KB (so throughput figures carry
over). Size comes from realistic fields (names, icon paths, teams, weapons), never from padding.

Speed matters (the generator must write ~10,000 lines/s on one core), so the per-player parts
that do not change between games are built once and reused, and random draws use the cheap
``Random.random()`` rather than ``randint``/``choice`` where it is hot.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Any

# DestinyClass: (characterClass, classHash). Hashes are the real manifest values.
_CLASSES: tuple[tuple[str, int], ...] = (
    ("Titan", 3655393761),
    ("Hunter", 671679327),
    ("Warlock", 2271682572),
)
_RACE_HASHES = (3887404748, 2803282938, 898834093)  # Human, Awoken, Exo
_GENDER_HASHES = (3111576190, 2204441813)  # Male, Female
_PLATFORMS = (1, 2, 3, 3, 3, 6)  # Xbox, PSN, Steam (most common), Epic
_TEAM_NAMES = (("Alpha", 17), ("Bravo", 18))

# fmt: off
_SYLLABLES = (
    "ka", "zu", "mi", "ra", "to", "shi", "vex", "nor", "gal", "ion", "dra", "ke", "lum", "ost",
    "pha", "qui", "ren", "sol", "tar", "ul", "ver", "wyn", "xan", "yor", "zel", "cay", "dex",
)
# fmt: on
_NAME_EXTRAS = ("", "", "", "", "TTV", "YT", "xX", "_", "Zoë", "Ψ", "ナルト", "Ñ", "Łukasz", "7")

# Offsets that make ids look like real Bungie ids: membershipIds of Destiny accounts are 19-digit
# numbers starting 4611686018, characterIds 19-digit numbers starting 2305843009.
_MEMBERSHIP_BASE = 4611686018_400000000
_CHARACTER_BASE = 2305843009_200000000
_SCRAMBLE = 2654435761  # odd and not a multiple of 5: a bijection modulo any power of ten
_ID_SPAN = 100_000_000

# 2017-09-06 (launch) plus instance id / 85: roughly the real rate of ~2.7 billion PGCRs a year,
# so `period` grows with the instance id the way it does in the dump.
_EPOCH = 1_504_656_000
_IDS_PER_SECOND = 85
_FIRETEAM_MAX = 9_100_000_000_000_000_000  # below 2**63 - 1: must fit a PostgreSQL bigint


@dataclass(frozen=True)
class _Activity:
    """One kind of activity: how many players, teams, typical length and kill counts."""

    mode: int
    modes: tuple[int, ...]
    weight: float
    players: tuple[int, ...]  # candidate player counts, drawn uniformly
    pvp: bool
    duration: tuple[int, int]
    kills: int  # rough maximum kills per player


# DestinyActivityModeType values. Weights tune the mix (and so the average line size) towards a
# public-dump-like mixture of solo patrols, 3-player strikes, raids and 12-player Crucible.
_ACTIVITIES: tuple[_Activity, ...] = (
    _Activity(6, (7, 6), 44, (1, 1, 1, 2, 3), False, (60, 1800), 120),  # patrol
    _Activity(2, (7, 2), 8, (1, 1, 2, 3), False, (300, 2400), 150),  # story
    _Activity(87, (7, 87), 16, (1,), False, (240, 900), 120),  # lost sector
    _Activity(3, (7, 18, 3), 14, (1, 2, 3, 3, 3), False, (600, 1500), 200),  # strike
    _Activity(46, (7, 18, 46), 6, (1, 3, 3, 3), False, (900, 2400), 250),  # scored nightfall
    _Activity(82, (7, 82), 3, (1, 2, 3, 3), False, (1200, 4800), 300),  # dungeon
    _Activity(4, (7, 4), 2.5, (3, 5, 6, 6, 6, 6), False, (1800, 7200), 400),  # raid
    _Activity(63, (7, 64, 63), 2, (8,), True, (600, 1200), 80),  # gambit
    _Activity(10, (5, 10, 73), 2.5, (10, 11, 12, 12, 12), True, (480, 720), 35),  # control
    _Activity(12, (5, 12), 1, (12,), True, (480, 600), 30),  # clash
    _Activity(37, (5, 37, 80), 2, (6,), True, (300, 600), 15),  # survival
    _Activity(19, (5, 19, 43), 1, (12,), True, (480, 720), 35),  # iron banner
    _Activity(84, (5, 84, 37), 1.5, (6,), True, (300, 700), 15),  # trials
    _Activity(48, (5, 48), 1.5, (6,), True, (480, 600), 30),  # rumble (free for all)
)


def _hash32(rng: random.Random) -> int:
    """A manifest-style hash: an unsigned 32-bit int (often above 2**31, like the real ones)."""
    return rng.getrandbits(32)


def _icon(rng: random.Random) -> str:
    return f"/common/destiny2_content/icons/{rng.getrandbits(128):032x}.jpg"


class _Player:
    """What stays the same about an account between games (built once, then reused)."""

    __slots__ = ("characters", "user_info")

    def __init__(self, index: int, rng: random.Random) -> None:
        membership_id = _MEMBERSHIP_BASE + (index * _SCRAMBLE) % _ID_SPAN
        platform = _PLATFORMS[int(rng.random() * len(_PLATFORMS))]
        cross_save = platform if rng.random() < 0.4 else 0
        applicable = [platform] if cross_save == 0 else sorted({platform, 3, 2})
        n_syll = 2 + int(rng.random() * 3)
        name = "".join(_SYLLABLES[int(rng.random() * len(_SYLLABLES))] for _ in range(n_syll))
        name = name.capitalize() + _NAME_EXTRAS[int(rng.random() * len(_NAME_EXTRAS))]
        display = name if rng.random() < 0.7 else f"{name}{int(rng.random() * 1000)}"
        # Shared between every entry of this player: callers must never mutate it.
        self.user_info: dict[str, Any] = {
            "iconPath": _icon(rng),
            "crossSaveOverride": cross_save,
            "applicableMembershipTypes": applicable,
            "isPublic": rng.random() < 0.8,
            "membershipType": platform,
            "membershipId": str(membership_id),
            "displayName": display,
            "bungieGlobalDisplayName": name,
            "bungieGlobalDisplayNameCode": int(rng.random() * 10_000),
        }
        n_classes = 1 + int(rng.random() * 3)
        first = int(rng.random() * 3)
        # (class index, characterId, raceHash, genderHash, emblemHash, base light level)
        self.characters: list[tuple[int, str, int, int, int, int]] = []
        for k in range(n_classes):
            cls = (first + k) % 3
            char_id = _CHARACTER_BASE + ((index * 3 + cls) * _SCRAMBLE) % _ID_SPAN
            self.characters.append(
                (
                    cls,
                    str(char_id),
                    _RACE_HASHES[int(rng.random() * 3)],
                    _GENDER_HASHES[int(rng.random() * 2)],
                    _hash32(rng),
                    1350 + int(rng.random() * 450),
                )
            )


class PgcrFactory:
    """Makes PGCR dicts; all randomness comes from the caller's ``rng`` so runs replay exactly."""

    def __init__(self, rng: random.Random, players: int = 40_000, weapons: int = 400) -> None:
        if not 1 <= players <= _ID_SPAN // 3:
            raise ValueError(f"players must be in 1..{_ID_SPAN // 3}")
        self._rng = rng
        self._n_players = players
        self._players: dict[int, _Player] = {}
        self._weapons = [_hash32(rng) for _ in range(weapons)]
        # Each activity kind gets a few (referenceId, directorActivityHash) pairs.
        self._hashes = [[(_hash32(rng), _hash32(rng)) for _ in range(12)] for _ in _ACTIVITIES]
        total = sum(a.weight for a in _ACTIVITIES)
        acc = 0.0
        self._cumulative: list[float] = []
        for a in _ACTIVITIES:
            acc += a.weight / total
            self._cumulative.append(acc)

    def _player(self, index: int) -> _Player:
        player = self._players.get(index)
        if player is None:
            player = self._players[index] = _Player(index, self._rng)
        return player

    def _pick_activity(self) -> int:
        u = self._rng.random()
        for i, edge in enumerate(self._cumulative):
            if u < edge:
                return i
        return len(self._cumulative) - 1

    def _fireteam_id(self) -> int | float:
        """Real dumps hold fireteamIds both as integers and as floats like 5.3e18."""
        value = 10**17 + int(self._rng.random() * (_FIRETEAM_MAX - 10**17))
        return float(value) if self._rng.random() < 0.5 else value

    def build(self, instance_id: int) -> dict[str, Any]:
        """One complete PGCR for ``instance_id`` with 1 to 12 entries."""
        rng = self._rng
        rand = rng.random
        kind_index = self._pick_activity()
        kind = _ACTIVITIES[kind_index]
        reference_id, director_hash = self._hashes[kind_index][int(rand() * 12)]
        n_players = kind.players[int(rand() * len(kind.players))]
        lo, hi = kind.duration
        duration = lo + int(rand() * (hi - lo))

        # Distinct players; a product of two uniforms skews towards low indexes, so some
        # players play a lot (and per-player tables see many repeats).
        chosen: list[int] = []
        while len(chosen) < n_players:
            idx = int(self._n_players * rand() * rand())
            if idx not in chosen:
                chosen.append(idx)

        teams: list[dict[str, Any]] = []
        team_scores = (0, 0)
        winner = 0
        if kind.pvp and kind.mode != 48:
            team_scores = (int(rand() * 150), int(rand() * 150))
            winner = 0 if team_scores[0] >= team_scores[1] else 1
            for t, (team_name, team_id) in enumerate(_TEAM_NAMES):
                teams.append(
                    {
                        "teamId": team_id,
                        "standing": 0 if t == winner else 1,
                        "score": team_scores[t],
                        "teamName": team_name,
                    }
                )

        # Fireteams of up to three, never spanning two teams; one id shared by its members.
        half = (n_players + 1) // 2
        fireteams: dict[tuple[int, int], int | float] = {}
        completed_run = rand() < 0.8
        completion_reason = 0 if completed_run else (2 if rand() < 0.5 else 255)
        entries: list[dict[str, Any]] = []
        for slot, idx in enumerate(chosen):
            player = self._player(idx)
            team = int(slot >= half) if teams else 0
            fireteam_key = (team, (slot - team * half) // 3)
            fireteam_id = fireteams.get(fireteam_key)
            if fireteam_id is None:
                fireteam_id = fireteams[fireteam_key] = self._fireteam_id()
            chars = player.characters
            chars_here = [chars[int(rand() * len(chars))]]
            # A player who switched characters mid-activity shows up once per character.
            room = 12 - len(entries) - (len(chosen) - slot)  # keep the PGCR at <= 12 entries
            if len(chars) > 1 and room > 0 and rand() < 0.06:
                other = chars[int(rand() * len(chars))]
                if other is not chars_here[0]:
                    chars_here.append(other)
            for char in chars_here:
                entries.append(
                    self._entry(
                        player,
                        char,
                        kind,
                        duration,
                        fireteam_id,
                        teams[team]["standing"] if teams else 0,
                        team_scores[team] if teams else 0,
                        n_players,
                        completed_run,
                        completion_reason,
                    )
                )

        t = _EPOCH + instance_id // _IDS_PER_SECOND - int(rand() * 120)
        return {
            "_id": str(instance_id),
            "period": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t)),
            "startingPhaseIndex": 0 if rand() < 0.85 else int(rand() * 4),
            "activityWasStartedFromBeginning": rand() < 0.7,
            "activityDetails": {
                "referenceId": reference_id,
                "directorActivityHash": director_hash,
                "instanceId": str(instance_id),
                "mode": kind.mode,
                "modes": list(kind.modes),
                "isPrivate": rand() < 0.02,
                "membershipType": _PLATFORMS[int(rand() * len(_PLATFORMS))],
            },
            "entries": entries,
            "teams": teams,
        }

    def _entry(
        self,
        player: _Player,
        char: tuple[int, str, int, int, int, int],
        kind: _Activity,
        duration: int,
        fireteam_id: int | float,
        standing: int,
        team_score: int,
        n_players: int,
        completed_run: bool,
        completion_reason: int,
    ) -> dict[str, Any]:
        rand = self._rng.random
        cls, char_id, race, gender, emblem, light = char
        class_name, class_hash = _CLASSES[cls]
        late = rand() < 0.15
        start = int(rand() * duration * 0.6) if late else 0
        played = duration - start - (int(rand() * duration * 0.3) if rand() < 0.1 else 0)
        kills = int(kind.kills * rand() * rand() * 2)
        deaths = int(rand() * (12 if kind.pvp else 6))
        assists = int(rand() * kills * 0.5) + int(rand() * 4)
        per_death = max(deaths, 1)
        precision = int(kills * rand() * 0.5)
        score = (kills * 100 + assists * 50) if kind.pvp else int(rand() * 3) * 1000 * kills
        entry: dict[str, Any] = {
            "standing": standing,
            "score": score,
            "characterId": char_id,
            "player": {
                "destinyUserInfo": player.user_info,
                "characterClass": class_name,
                "classHash": class_hash,
                "raceHash": race,
                "genderHash": gender,
                "characterLevel": 50,
                "lightLevel": light + int(rand() * 10),
                "emblemHash": emblem,
            },
            "values": {
                "assists": assists,
                "completed": 1 if completed_run and not (late and rand() < 0.2) else 0,
                "deaths": deaths,
                "kills": kills,
                "opponentsDefeated": kills + assists,
                "efficiency": (kills + assists) / per_death,
                "killsDeathsRatio": kills / per_death,
                "killsDeathsAssists": (kills + assists / 2) / per_death,
                "score": score,
                "activityDurationSeconds": duration,
                "completionReason": completion_reason,
                "fireteamId": fireteam_id,
                "startSeconds": start,
                "timePlayedSeconds": max(played, 0),
                "playerCount": n_players,
                "teamScore": team_score,
            },
        }
        if rand() < 0.03:  # some entries (and older dumps) have no extended stats at all
            return entry
        extended: dict[str, Any] = {}
        if kills > 0 and rand() < 0.95:
            n_weapons = 1 + int(rand() * rand() * 6)  # mostly one to three
            weapons = []
            left = kills
            for ref in self._rng.sample(self._weapons, n_weapons):
                wk = left if left <= 1 else 1 + int(rand() * left)
                left -= wk
                wp = int(wk * rand() * 0.6)
                weapons.append(
                    {
                        "referenceId": ref,
                        "values": {
                            "uniqueWeaponKills": wk,
                            "uniqueWeaponPrecisionKills": wp,
                            "uniqueWeaponKillsPrecisionKills": wp / wk if wk else 0.0,
                        },
                    }
                )
            extended["weapons"] = weapons
        extended["values"] = {
            "precisionKills": precision,
            "weaponKillsGrenade": int(rand() * kills * 0.1),
            "weaponKillsMelee": int(rand() * kills * 0.1),
            "weaponKillsSuper": int(rand() * kills * 0.15),
            "weaponKillsAbility": int(rand() * kills * 0.1),
        }
        entry["extended"] = extended
        return entry
