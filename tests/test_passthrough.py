"""Multi-frame sources are served as byte ranges of whole frames, never recompressed.

pzstd cuts frames at arbitrary bytes, so a line may start in one frame and end several frames
later: it belongs to the chunk it starts in, whose ``tail`` completes it, and the next chunk
skips its ``head_skip`` bytes.
"""

from __future__ import annotations

import io
import itertools
import random
from pathlib import Path

import psycopg
import pytest
import zstandard

from protheon.master.ledger import MasterLedger
from protheon.master.splitter import Chunk, pass_through, split_file
from protheon.worker.job import chunk_lines
from protheon.zstdio import CorruptInput, TruncatedInput
from tests.oracle import read_lines as read_lines_of_file


def _source(tmp_path: Path, data: bytes, cuts: list[int]) -> tuple[Path, bytes]:
    compressor = zstandard.ZstdCompressor(write_content_size=True)
    edges = sorted({0, len(data), *cuts})
    blob = b"".join(compressor.compress(data[a:b]) for a, b in itertools.pairwise(edges) if b > a)
    path = tmp_path / "12000000000-12000003000.jsonl.zst"
    path.write_bytes(blob)
    return path, blob


def _lines_of(chunk: Chunk, blob: bytes) -> list[bytes]:
    assert chunk.source_offset is not None
    piece = blob[chunk.source_offset : chunk.source_offset + chunk.byte_size]
    return list(chunk_lines(piece, None, chunk.head_skip, chunk.tail))


def _data(rng: random.Random, lines: int, end_newline: bool = True) -> bytes:
    text = b"\n".join(b"x" * rng.randint(0, 9000) + str(i).encode() for i in range(lines))
    return text + b"\n" if end_newline else text


@pytest.mark.parametrize("chunk_lines_wanted", [1, 7, 250, 10**6])
@pytest.mark.parametrize("shape", ["mid-line frames", "line-aligned frames", "no final newline",
                                   "a line longer than many frames"])  # fmt: skip
def test_chunks_reassemble_the_source_exactly(
    tmp_path: Path, shape: str, chunk_lines_wanted: int
) -> None:
    rng = random.Random(7)
    data = _data(rng, 2000, end_newline=shape != "no final newline")
    if shape == "a line longer than many frames":
        data = b"a\n" + b"y" * 300_000 + b"\nb\n" + _data(rng, 50)
    if shape == "line-aligned frames":
        cuts = [i + 1 for i, byte in enumerate(data) if byte == 10][99::100]
    else:
        cuts, position = [], 0
        while position < len(data):
            position += rng.randint(1000, 60_000)
            cuts.append(min(position, len(data)))
    path, blob = _source(tmp_path, data, cuts)
    chunks = list(split_file(path, tmp_path / "ws", 1, chunk_lines_wanted))
    assert all(chunk.source_offset is not None for chunk in chunks), "nothing recompressed"
    assert not (tmp_path / "ws").exists() or not any((tmp_path / "ws").rglob("*.zst"))
    expected_lines = data.split(b"\n")
    if expected_lines[-1] == b"":
        expected_lines.pop()
    got: list[bytes] = []
    for chunk in chunks:
        # Cut without counting: the worker counts, the ledger numbers chunks after the first.
        first_line = 1 if chunk.seq == 0 else None
        assert (chunk.first_line, chunk.line_count) == (first_line, None)
        got.extend(_lines_of(chunk, blob))
    assert got == expected_lines
    ranges = [(c.source_offset or 0, (c.source_offset or 0) + c.byte_size) for c in chunks]
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(ranges)), "ranges never overlap"


def test_a_resumed_split_yields_the_same_remaining_chunks(tmp_path: Path) -> None:
    rng = random.Random(8)
    data = _data(rng, 3000)
    path, _ = _source(tmp_path, data, list(range(5000, len(data), 37_000)))
    chunks = list(pass_through(path, 200))
    middle = len(chunks) // 2
    resumed = list(pass_through(path, 200, middle))
    assert resumed == chunks[middle:]


@pytest.mark.parametrize("wanted", [100, 400])
def test_chunks_hold_about_the_lines_asked_for(tmp_path: Path, wanted: int) -> None:
    """Cut by decompressed size at the line length of the file's first MiBs."""
    data = b"".join(b'{"n": %d, "pad": "%s"}\n' % (i, b"z" * (i % 50)) for i in range(4000))
    path, blob = _source(tmp_path, data, list(range(1000, len(data), 1000)))  # ~21 lines each
    counts = [len(_lines_of(chunk, blob)) for chunk in pass_through(path, wanted)]
    assert sum(counts) == 4000
    assert all(wanted * 0.8 <= count <= wanted * 1.2 for count in counts[:-1]), counts
    assert counts[-1] <= wanted * 1.2


def test_a_frame_cut_short_fails_the_split_with_its_offset(tmp_path: Path) -> None:
    data = _data(random.Random(9), 400)
    path, blob = _source(tmp_path, data, list(range(5000, len(data), 20_000)))
    path.write_bytes(blob[:-10])
    with pytest.raises(CorruptInput, match="truncated zstd data"):
        list(pass_through(path, 50))


def test_single_frame_sources_are_recompressed(tmp_path: Path) -> None:
    data = _data(random.Random(10), 500)
    stream = zstandard.ZstdCompressor().compressobj()  # streamed: no content size
    path = tmp_path / "single.jsonl.zst"
    path.write_bytes(stream.compress(data) + stream.flush())
    chunks = list(split_file(path, tmp_path / "ws", 1, 100))
    assert chunks and all(chunk.source_offset is None for chunk in chunks)
    assert all(chunk.path.parent == tmp_path / "ws" / "chunks" for chunk in chunks)
    assert (
        b"".join(
            zstandard.ZstdDecompressor().stream_reader(io.BytesIO(c.path.read_bytes())).read()
            for c in chunks
        )
        == data
    )


def test_the_ledger_numbers_lines_once_every_chunk_before_is_counted(pg_dsn: str) -> None:
    """Workers count a passed-through chunk's lines; the master numbers the file's lines (and
    the rejects) up to the first chunk still uncounted."""
    ledger = MasterLedger(pg_dsn)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        (file_id,) = conn.execute(
            "INSERT INTO protheon.files (name, size_bytes, mtime, status)"
            " VALUES ('a.zst', 1, now(), 'split') RETURNING file_id"
        ).fetchone() or (0,)
        jobs = [
            conn.execute(
                "INSERT INTO protheon.jobs (file_id, seq, first_line, byte_size, raw_size)"
                " VALUES (%s, %s, %s, 1, 1) RETURNING job_id",
                (file_id, seq, 1 if seq == 0 else None),
            ).fetchone()[0]  # type: ignore[index]
            for seq in range(4)
        ]

        def worker_done(job: int, lines: int, bad_line_in_job: int) -> None:
            conn.execute(
                "INSERT INTO protheon.rejects (file_id, job_id, line_in_job, error, line_bytes,"
                " raw_line) VALUES (%s, %s, %s, 'bad', 1, 'x')",
                (file_id, job, bad_line_in_job),
            )
            conn.execute(
                "UPDATE protheon.jobs SET status = 'done', line_count = %s WHERE job_id = %s",
                (lines, job),
            )

        def numbers() -> list[tuple[int | None, int | None]]:
            return conn.execute(
                "SELECT j.first_line, r.line_number FROM protheon.jobs j"
                " LEFT JOIN protheon.rejects r USING (job_id) ORDER BY j.seq"
            ).fetchall()

        worker_done(jobs[1], 20, 2)
        worker_done(jobs[3], 40, 4)
        ledger.number_lines()
        assert numbers() == [(1, None), (None, None), (None, None), (None, None)]
        worker_done(jobs[0], 10, 1)
        assert ledger.close_finished_files() == []
        assert numbers() == [(1, 1), (11, 12), (None, None), (None, None)]
        worker_done(jobs[2], 30, 3)
        assert ledger.close_finished_files() == ["a.zst"]
        assert numbers() == [(1, 1), (11, 12), (31, 33), (61, 64)]
        assert conn.execute("SELECT lines_total FROM protheon.files").fetchone() == (100,)
    ledger.close()


@pytest.mark.parametrize("frames", ["multi-frame", "single frame"])
def test_a_file_cut_short_still_yields_every_whole_line_before_the_cut(
    tmp_path: Path, frames: str
) -> None:
    """A copy cut short: the chunks before the cut hold every line that is whole, then the
    split fails with TruncatedInput (the file is marked failed, its good lines load)."""
    data = _data(random.Random(11), 600)
    if frames == "multi-frame":
        path, blob = _source(tmp_path, data, list(range(3000, len(data), 7000)))
    else:
        stream = zstandard.ZstdCompressor().compressobj()  # streamed: recompressed by chunks
        blob = stream.compress(data) + stream.flush()
        path = tmp_path / "single.jsonl.zst"
    cut = len(blob) * 2 // 3
    path.write_bytes(blob[:cut])
    got: list[bytes] = []
    with pytest.raises(TruncatedInput):
        for chunk in split_file(path, tmp_path / "ws", 1, 50):
            if chunk.source_offset is None:
                got.extend(read_lines_of_file(chunk.path))
            else:
                got.extend(_lines_of(chunk, blob))
    reader = zstandard.ZstdDecompressor().stream_reader(blob[:cut], read_across_frames=True)
    readable = reader.read()  # python-zstandard stops quietly where the data is cut
    whole = readable[: readable.rfind(b"\n") + 1].split(b"\n")[:-1]
    if frames == "multi-frame":  # whole frames only; a line running into the cut frame is
        # passed on cut short (the worker rejects it, with its line number)
        assert readable.startswith(b"\n".join(got)) and got[:-1] == whole[: len(got) - 1]
        assert len(whole) - len(got) < 400
    else:  # streamed: every whole line before the cut
        assert got == whole
    assert len(got) > 100


def test_a_corrupt_frame_at_a_cut_does_not_stop_the_split(tmp_path: Path) -> None:
    """The master cuts right after a frame it cannot read; the worker reports that frame."""
    data = _data(random.Random(12), 800)
    cuts = list(range(4000, len(data), 4000))
    path, blob = _source(tmp_path, data, cuts)
    clean = list(pass_through(path, 60))
    extents = [(c.source_offset or 0) + c.byte_size for c in clean[:3]]
    frame_end = extents[1]  # the last frame of chunk 1 is read by the master at its cut
    damaged = bytearray(blob)
    damaged[frame_end - 40 : frame_end - 32] = bytes(
        b ^ 0x5A for b in damaged[frame_end - 40 : frame_end - 32]
    )
    path.write_bytes(bytes(damaged))
    chunks = list(pass_through(path, 60))
    assert len(chunks) >= len(clean) - 1, "the split went on past the corrupt frame"
    assert chunks[-1].source_offset is not None
    assert (chunks[-1].source_offset + chunks[-1].byte_size) == len(blob)


def test_a_later_frame_without_a_content_size_is_a_clear_error(tmp_path: Path) -> None:
    data = _data(random.Random(13), 200)
    path, blob = _source(tmp_path, data, list(range(5000, len(data), 5000)))
    stream = zstandard.ZstdCompressor().compressobj()  # streamed: no content size
    path.write_bytes(blob + stream.compress(b"more\n") + stream.flush())
    with pytest.raises(CorruptInput, match="does not state a small content size"):
        list(pass_through(path, 50))
