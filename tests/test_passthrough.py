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

import pytest
import zstandard

from protheon.master.splitter import Chunk, pass_through, split_file
from protheon.worker.job import chunk_lines
from protheon.zstdio import CorruptInput


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
    return list(chunk_lines(piece, chunk.line_count, chunk.head_skip, chunk.tail))


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
    next_line = 1
    for chunk in chunks:
        assert chunk.first_line == next_line
        lines = _lines_of(chunk, blob)
        assert len(lines) == chunk.line_count
        got.extend(lines)
        next_line += chunk.line_count
    assert got == expected_lines
    ranges = [(c.source_offset or 0, (c.source_offset or 0) + c.byte_size) for c in chunks]
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(ranges)), "ranges never overlap"


def test_a_resumed_split_yields_the_same_remaining_chunks(tmp_path: Path) -> None:
    rng = random.Random(8)
    data = _data(rng, 3000)
    path, _ = _source(tmp_path, data, list(range(5000, len(data), 37_000)))
    chunks = list(pass_through(path, 200))
    middle = len(chunks) // 2
    resumed = list(pass_through(path, 200, chunks[middle].first_line - 1, middle))
    assert resumed == chunks[middle:]


def test_a_resumed_split_notices_a_changed_file(tmp_path: Path) -> None:
    rng = random.Random(9)
    data = _data(rng, 1000)
    path, _ = _source(tmp_path, data, list(range(5000, len(data), 20_000)))
    chunks = list(pass_through(path, 100))
    with pytest.raises(CorruptInput, match="the file changed"):
        list(pass_through(path, 100, chunks[2].first_line + 5, 2))


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
