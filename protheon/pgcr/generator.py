"""Write synthetic PGCR dump files (``<startId>-<endId>.jsonl.zst``) for tests and benchmarks.

The real dataset is 2.5 TB and not redistributable in a test suite, so the pipeline is
exercised on generated files that share its shape: the same naming and id ranges, zstd JSON
lines of ~3.5 KB, and the dirt real dumps carry (exact duplicate lines, also across files, and
malformed lines of several kinds). Generation is deterministic for a given set of options, so a
failing end-to-end run can be replayed byte for byte, and it streams, so a multi-gigabyte run
needs no more memory than a small one.

Files appear atomically (written under a dot-prefixed temporary name, then ``os.replace``d),
because the master watches the input directory and must never pick up a half-written file.
"""

from __future__ import annotations

import os
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import msgspec
import zstandard

from protheon.pgcr.fake_pgcr import PgcrFactory

_GOOD, _DUP, _BAD = 0, 1, 2
# Byte sequences spliced into a line to break it. Each holds a raw control character (or an
# invalid UTF-8 byte next to one), which is invalid JSON wherever it lands, inside a string or
# between tokens, for every conforming parser; none is whitespace, so the line stays non-empty.
_GARBAGE = (b"\x00", b"\x01\x02\x03", b"\x1b[0m", b"\xff\xfe\x00", b"}\x00{", b"\x07,]")
_WRITE_BATCH = 256  # lines handed to the compressor at once: fewer calls into zstd


@dataclass(frozen=True)
class GeneratorOptions:
    """What to generate. Identical options always produce byte-identical files."""

    out: Path
    files: int = 2
    lines: int = 10_000  # lines per file, including duplicate and bad lines
    seed: int = 1
    start_id: int = 12_000_000_000
    dup_rate: float = 0.0  # fraction of lines repeating an earlier PGCR (maybe an earlier file's)
    bad_rate: float = 0.0  # fraction of lines that are malformed
    multi_frame: bool = False  # write each file as many independent zstd frames
    frame_lines: int = 1000  # lines per frame when multi_frame
    level: int = 3  # zstd level


@dataclass(frozen=True)
class GeneratedFile:
    """What was written, so tests can check the loader's counts against it."""

    path: Path
    lines: int
    bad_lines: int
    duplicate_lines: int
    bytes_uncompressed: int


class _DuplicatePool:
    """Good lines that may be repeated later, in bounded memory.

    Real duplicates are sometimes adjacent (a re-fetch) and sometimes far apart, even in another
    file, so half the picks come from the most recent lines and half from a uniform reservoir
    sample (algorithm R) of every good line of the run so far.
    """

    def __init__(self, rng: random.Random, recent: int = 64, reservoir: int = 512) -> None:
        self._rng = rng
        self._recent: deque[bytes] = deque(maxlen=recent)
        self._reservoir: list[bytes] = []
        self._capacity = reservoir
        self._seen = 0

    def __bool__(self) -> bool:
        return self._seen > 0

    def add(self, line: bytes) -> None:
        self._recent.append(line)
        self._seen += 1
        if len(self._reservoir) < self._capacity:
            self._reservoir.append(line)
        else:
            slot = int(self._rng.random() * self._seen)
            if slot < self._capacity:
                self._reservoir[slot] = line

    def pick(self) -> bytes:
        rand = self._rng.random
        if rand() < 0.5:
            return self._recent[int(rand() * len(self._recent))]
        return self._reservoir[int(rand() * len(self._reservoir))]


def _break_json(line: bytes, rng: random.Random) -> bytes:
    """A good line made unparsable: truncated, or with garbage spliced in.

    Any proper prefix of a JSON object lacks its closing brace, so truncation always breaks it;
    the cut keeps at least the opening ``{`` so the line is never mistaken for an empty one.
    """
    body = line[:-1]
    cut = 1 + int(rng.random() * (len(body) - 1))
    if rng.random() < 0.5:
        return body[:cut] + b"\n"
    garbage = _GARBAGE[int(rng.random() * len(_GARBAGE))]
    return body[:cut] + garbage + body[cut:] + b"\n"


def _wrong_type(pgcr: dict[str, Any], rng: random.Random) -> None:
    """Give one field a JSON type the format does not allow (in place)."""
    entries: list[dict[str, Any]] = pgcr["entries"]
    entry = entries[int(rng.random() * len(entries))]
    variant = int(rng.random() * 6)
    if variant == 0:
        entry["values"]["kills"] = "many"
    elif variant == 1:
        pgcr["entries"] = "none"
    elif variant == 2:
        pgcr["activityDetails"]["mode"] = str(pgcr["activityDetails"]["mode"])
    elif variant == 3:
        entry["characterId"] = {"id": entry["characterId"]}
    elif variant == 4:
        pgcr["period"] = 1_600_000_000
    else:
        pgcr["activityDetails"]["modes"] = "5,10"


def _bad_line(pgcr: dict[str, Any], rng: random.Random, encode: Callable[[Any], bytes]) -> bytes:
    """One malformed line, the three kinds picked evenly: broken JSON, no activityDetails,
    a wrong JSON type."""
    kind = int(rng.random() * 3)
    if kind == 0:
        return _break_json(encode(pgcr) + b"\n", rng)
    if kind == 1:
        del pgcr["activityDetails"]
    else:
        _wrong_type(pgcr, rng)
    return encode(pgcr) + b"\n"


class _FrameSink:
    """Compresses lines into ``fh``: one streamed frame, or one frame per ``frame_lines``.

    Multi-frame output is what pzstd writes and what lets the master serve chunks as byte
    ranges without recompressing; every frame ends at a line boundary and records its content
    size and checksum. Single-frame output is streamed so memory stays flat for huge files.
    """

    def __init__(self, fh: BinaryIO, options: GeneratorOptions) -> None:
        self._cctx = zstandard.ZstdCompressor(level=options.level, write_checksum=True)
        self._fh = fh
        self._multi = options.multi_frame
        self._limit = options.frame_lines if options.multi_frame else _WRITE_BATCH
        self._pending: list[bytes] = []
        self._writer: Any = None if self._multi else self._cctx.stream_writer(fh, closefd=False)

    def write(self, line: bytes) -> None:
        self._pending.append(line)
        if len(self._pending) >= self._limit:
            self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        data = b"".join(self._pending)
        self._pending.clear()
        if self._multi:
            self._fh.write(self._cctx.compress(data))
        else:
            self._writer.write(data)

    def close(self) -> None:
        self._flush()
        if self._writer is not None:
            self._writer.close()  # ends the frame (closefd=False keeps fh open)


def _validate(options: GeneratorOptions) -> None:
    if options.files < 0 or options.lines < 1 or options.frame_lines < 1:
        raise ValueError("files must be >= 0, lines and frame_lines >= 1")
    if options.start_id < 0:
        raise ValueError("start_id must be >= 0")
    if not (0.0 <= options.dup_rate <= 1.0 and 0.0 <= options.bad_rate <= 1.0):
        raise ValueError("dup_rate and bad_rate must be within [0, 1]")
    if options.dup_rate + options.bad_rate > 1.0:
        raise ValueError("dup_rate + bad_rate must not exceed 1")


def generate(options: GeneratorOptions) -> list[GeneratedFile]:
    """Write ``options.files`` files into ``options.out`` (created if missing), in order.

    One ``random.Random(seed)`` drives the whole run, so the output depends only on the
    options; ``multi_frame``/``frame_lines``/``level`` change the compression, never the lines.
    """
    _validate(options)
    options.out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(options.seed)
    factory = PgcrFactory(rng)
    pool = _DuplicatePool(rng)
    return [_write_file(i, options, rng, factory, pool) for i in range(options.files)]


def _plan(options: GeneratorOptions, rng: random.Random, have_good: bool) -> bytearray:
    """Decide each line's kind up front, so instance ids can be spread over the file's range.

    A duplicate needs an earlier good line, so none is planned before the first one.
    """
    kinds = bytearray(options.lines)
    bad, dup_edge = options.bad_rate, options.bad_rate + options.dup_rate
    for j in range(options.lines):
        u = rng.random()
        if u < bad:
            kinds[j] = _BAD
        elif u < dup_edge and have_good:
            kinds[j] = _DUP
        else:
            have_good = True
    return kinds


def _write_file(
    index: int,
    options: GeneratorOptions,
    rng: random.Random,
    factory: PgcrFactory,
    pool: _DuplicatePool,
) -> GeneratedFile:
    first = options.start_id + index * options.lines
    end = first + options.lines
    path = options.out / f"{first}-{end}.jsonl.zst"
    tmp = options.out / f".{path.name}.part"
    kinds = _plan(options, rng, bool(pool))
    # Lines with a fresh instance id (good and bad) take a random ordered subset of the file's
    # id range (selection sampling, Knuth's algorithm S): ids increase, and the ids freed by
    # duplicate lines become gaps spread over the range, as in the real dumps.
    needed = options.lines - kinds.count(_DUP)
    next_id = first
    encode = msgspec.json.encode
    rand = rng.random
    n_bad = n_dup = n_bytes = 0
    try:
        with open(tmp, "wb") as fh:
            sink = _FrameSink(fh, options)
            for kind in kinds:
                if kind == _DUP:
                    line = pool.pick()
                    n_dup += 1
                else:
                    while rand() * (end - next_id) >= needed:
                        next_id += 1
                    pgcr = factory.build(next_id)
                    next_id += 1
                    needed -= 1
                    if kind == _GOOD:
                        line = encode(pgcr) + b"\n"
                        pool.add(line)
                    else:
                        line = _bad_line(pgcr, rng, encode)
                        n_bad += 1
                n_bytes += len(line)
                sink.write(line)
            sink.close()
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return GeneratedFile(path, options.lines, n_bad, n_dup, n_bytes)
