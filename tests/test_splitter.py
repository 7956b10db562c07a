"""The splitter cuts real zstd JSON-lines files into whole-line chunk files, and notices damage.

Sources are made by the generator or, for shapes it never writes (no trailing newline, frames
cut mid-line, damage), with ``zstandard`` directly. Chunk contents are checked against the
source's own decompressed bytes, read independently of ``protheon.zstdio``.
"""

from __future__ import annotations

import io
import itertools
import os
import random
import struct
from collections.abc import Generator, Iterator, Sequence
from pathlib import Path

import pytest
import zstandard

from protheon.master.splitter import Chunk, chunk_path, recompress
from protheon.pgcr.generator import GeneratorOptions, generate
from protheon.zstdio import CorruptInput, UnreadableInput, decompressed_blocks
from tests.oracle import read_lines

LINES = 1000
CHUNK_LINES = 128  # 7 full chunks and a last one of 104 lines
FILE_ID = 7


def _raw(path: Path) -> bytes:
    """All decompressed bytes of a .zst file (every frame), via zstandard's own reader."""
    with (
        path.open("rb") as fh,
        zstandard.ZstdDecompressor().stream_reader(fh, read_across_frames=True) as reader,
    ):
        return reader.read()


def _frames(*contents: bytes) -> bytes:
    """One independent zstd frame (with checksum) per content, concatenated."""
    compressor = zstandard.ZstdCompressor(level=3, write_checksum=True)
    return b"".join(compressor.compress(content) for content in contents)


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _chunk_files(workspace: Path) -> list[str]:
    return sorted(p.name for p in (workspace / "chunks").iterdir())


def _check_chunks(
    chunks: Sequence[Chunk], workspace: Path, file_id: int, first_seq: int = 0, first_line: int = 1
) -> bytes:
    """Check the chunks' bookkeeping against their files; return their joined content."""
    contents = []
    for index, chunk in enumerate(chunks):
        assert chunk.seq == first_seq + index
        assert chunk.path == chunk_path(workspace, file_id, chunk.seq)
        assert chunk.path.name == f"{file_id}-{chunk.seq}.zst"
        data = chunk.path.read_bytes()
        assert chunk.byte_size == len(data)
        assert zstandard.get_frame_parameters(data).has_checksum
        content = _raw(chunk.path)
        assert chunk.raw_size == len(content)
        assert content.endswith(b"\n")
        assert content.count(b"\n") == chunk.line_count > 0
        expected_first = (
            first_line
            if index == 0
            else chunks[index - 1].first_line + chunks[index - 1].line_count
        )
        assert chunk.first_line == expected_first
        contents.append(content)
    assert not [name for name in _chunk_files(workspace) if name.endswith(".part")]
    return b"".join(contents)


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The same 1000 generated lines as one streamed frame and as frames of 70 lines."""
    base = tmp_path_factory.mktemp("sources")
    single = generate(GeneratorOptions(out=base / "single", files=1, lines=LINES, seed=11))
    multi = generate(
        GeneratorOptions(
            out=base / "multi", files=1, lines=LINES, seed=11, multi_frame=True, frame_lines=70
        )
    )
    assert _raw(single[0].path) == _raw(multi[0].path)
    return {"single": single[0].path, "multi": multi[0].path}


@pytest.mark.parametrize("kind", ["single", "multi"])
def test_chunks_cover_the_source_exactly(
    kind: str, sources: dict[str, Path], tmp_path: Path
) -> None:
    source = sources[kind]
    chunks = list(recompress(source, tmp_path, FILE_ID, CHUNK_LINES))

    assert [c.line_count for c in chunks] == [CHUNK_LINES] * 7 + [LINES - 7 * CHUNK_LINES]
    assert [c.first_line for c in chunks] == [1 + CHUNK_LINES * i for i in range(8)]
    assert _check_chunks(chunks, tmp_path, FILE_ID) == _raw(source)
    # Each chunk holds exactly the source lines its numbering claims.
    lines = list(read_lines(source))
    for chunk in chunks:
        want = lines[chunk.first_line - 1 : chunk.first_line - 1 + chunk.line_count]
        assert list(read_lines(chunk.path)) == want
    assert _chunk_files(tmp_path) == sorted(f"{FILE_ID}-{seq}.zst" for seq in range(8))


def test_chunk_lines_dividing_the_file_leaves_no_empty_last_chunk(
    sources: dict[str, Path], tmp_path: Path
) -> None:
    chunks = list(recompress(sources["multi"], tmp_path, FILE_ID, 250))
    assert [c.line_count for c in chunks] == [250] * 4
    assert _check_chunks(chunks, tmp_path, FILE_ID) == _raw(sources["multi"])
    assert len(_chunk_files(tmp_path)) == 4


def test_one_chunk_when_chunk_lines_exceeds_the_file(
    sources: dict[str, Path], tmp_path: Path
) -> None:
    chunks = list(recompress(sources["single"], tmp_path, FILE_ID, 10 * LINES, level=1))
    assert [(c.seq, c.first_line, c.line_count) for c in chunks] == [(0, 1, LINES)]
    assert _check_chunks(chunks, tmp_path, FILE_ID) == _raw(sources["single"])


def test_lines_spanning_frames_cut_at_arbitrary_bytes(
    sources: dict[str, Path], tmp_path: Path
) -> None:
    """Frames that end mid-line (not what the generator writes) still give whole-line chunks."""
    raw = _raw(sources["single"])
    cuts = [*range(0, len(raw), 3001), len(raw)]
    source = _write(tmp_path / "in.zst", _frames(*(raw[a:b] for a, b in itertools.pairwise(cuts))))

    chunks = list(recompress(source, tmp_path / "ws", FILE_ID, 97))
    assert sum(c.line_count for c in chunks) == LINES
    assert [c.line_count for c in chunks[:-1]] == [97] * (len(chunks) - 1)
    assert _check_chunks(chunks, tmp_path / "ws", FILE_ID) == raw


@pytest.mark.parametrize(
    "frames",
    [
        [b"l1\nl2\nl3\nl4\nl5"],
        [b"l1\nl", b"2\nl3", b"\nl4\nl5"],  # frames cut mid-line
        [b"l1\nl2\nl3\nl4\n", b"l5"],  # the unterminated line alone in the last frame
    ],
    ids=["one-frame", "cut-mid-line", "tail-frame"],
)
def test_last_line_without_newline_is_counted_and_terminated(
    frames: list[bytes], tmp_path: Path
) -> None:
    source = _write(tmp_path / "in.zst", _frames(*frames))

    chunks = list(recompress(source, tmp_path / "ws", FILE_ID, 2))
    assert [(c.first_line, c.line_count) for c in chunks] == [(1, 2), (3, 2), (5, 1)]
    assert [_raw(c.path) for c in chunks] == [b"l1\nl2\n", b"l3\nl4\n", b"l5\n"]
    _check_chunks(chunks, tmp_path / "ws", FILE_ID)

    whole = list(recompress(source, tmp_path / "ws2", FILE_ID, 5))
    assert [(c.first_line, c.line_count) for c in whole] == [(1, 5)]
    assert _raw(whole[0].path) == b"l1\nl2\nl3\nl4\nl5\n"


def test_blank_lines_are_lines(tmp_path: Path) -> None:
    source = _write(tmp_path / "in.zst", _frames(b"\n\na\n\n"))
    chunks = list(recompress(source, tmp_path / "ws", FILE_ID, 3))
    assert [(c.first_line, c.line_count) for c in chunks] == [(1, 3), (4, 1)]
    assert [_raw(c.path) for c in chunks] == [b"\n\na\n", b"\n"]


@pytest.mark.parametrize("kind", ["single", "multi"])
@pytest.mark.parametrize(
    ("skip_lines", "first_seq"),
    [(0, 0), (128, 1), (384, 3), (896, 7), (200, 2), (999, 5)],
)
def test_resume_yields_exactly_the_remaining_chunks(
    kind: str, skip_lines: int, first_seq: int, sources: dict[str, Path], tmp_path: Path
) -> None:
    source = sources[kind]
    resumed = list(
        recompress(
            source, tmp_path, FILE_ID, CHUNK_LINES, skip_lines=skip_lines, first_seq=first_seq
        )
    )

    remaining = LINES - skip_lines
    counts = [CHUNK_LINES] * (remaining // CHUNK_LINES)
    if remaining % CHUNK_LINES:
        counts.append(remaining % CHUNK_LINES)
    assert [c.line_count for c in resumed] == counts
    assert [c.seq for c in resumed] == list(range(first_seq, first_seq + len(counts)))
    content = _check_chunks(resumed, tmp_path, FILE_ID, first_seq, first_line=skip_lines + 1)
    lines = list(read_lines(source))
    assert content == b"".join(line + b"\n" for line in lines[skip_lines:])
    # Nothing of the skipped part was written.
    assert len(_chunk_files(tmp_path)) == len(counts)


def test_resume_at_chunk_boundary_matches_the_original_split(
    sources: dict[str, Path], tmp_path: Path
) -> None:
    full = list(recompress(sources["multi"], tmp_path / "a", FILE_ID, CHUNK_LINES))
    resumed = list(
        recompress(
            sources["multi"],
            tmp_path / "b",
            FILE_ID,
            CHUNK_LINES,
            skip_lines=3 * CHUNK_LINES,
            first_seq=3,
        )
    )
    assert [(c.seq, c.first_line, c.line_count, c.raw_size) for c in resumed] == [
        (c.seq, c.first_line, c.line_count, c.raw_size) for c in full[3:]
    ]
    assert [_raw(c.path) for c in resumed] == [_raw(c.path) for c in full[3:]]


@pytest.mark.parametrize("skip_lines", [LINES, LINES + 5])
def test_resume_past_the_end_yields_nothing(
    skip_lines: int, sources: dict[str, Path], tmp_path: Path
) -> None:
    assert (
        list(
            recompress(
                sources["single"],
                tmp_path,
                FILE_ID,
                CHUNK_LINES,
                skip_lines=skip_lines,
                first_seq=8,
            )
        )
        == []
    )
    assert _chunk_files(tmp_path) == []


@pytest.mark.parametrize(
    ("skip_lines", "expected"),
    [(1, [b"b\nc\n", b"d\n"]), (3, [b"d\n"]), (4, [])],
)
def test_resume_in_a_file_without_final_newline(
    skip_lines: int, expected: list[bytes], tmp_path: Path
) -> None:
    source = _write(tmp_path / "in.zst", _frames(b"a\nb", b"\nc\nd"))
    chunks = list(
        recompress(source, tmp_path / "ws", FILE_ID, 2, skip_lines=skip_lines, first_seq=4)
    )
    assert [_raw(c.path) for c in chunks] == expected
    if chunks:
        assert chunks[0].first_line == skip_lines + 1
        assert chunks[0].seq == 4
        _check_chunks(chunks, tmp_path / "ws", FILE_ID, 4, skip_lines + 1)


def test_every_yielded_chunk_file_is_whole_and_no_part_file_exists(
    sources: dict[str, Path], tmp_path: Path
) -> None:
    """At each yield the consumer sees only whole chunk files, never a temporary one."""
    seen: list[str] = []
    for chunk in recompress(sources["multi"], tmp_path, FILE_ID, CHUNK_LINES):
        seen.append(chunk.path.name)
        assert _chunk_files(tmp_path) == sorted(seen)
        assert _raw(chunk.path).count(b"\n") == chunk.line_count


@pytest.mark.parametrize("taken", [1, 3])
def test_closing_the_generator_early_leaves_no_part_file(
    taken: int, sources: dict[str, Path], tmp_path: Path
) -> None:
    splitter = recompress(sources["single"], tmp_path, FILE_ID, CHUNK_LINES)
    assert isinstance(splitter, Generator)
    chunks = [next(splitter) for _ in range(taken)]
    splitter.close()  # the consumer stops early (e.g. the master is stopping)

    assert _chunk_files(tmp_path) == sorted(c.path.name for c in chunks)
    lines = list(read_lines(sources["single"]))
    assert _check_chunks(chunks, tmp_path, FILE_ID) == b"".join(
        line + b"\n" for line in lines[: taken * CHUNK_LINES]
    )


def _collect_until_corrupt(splitter: Iterator[Chunk]) -> tuple[list[Chunk], CorruptInput]:
    chunks: list[Chunk] = []
    with pytest.raises(CorruptInput) as caught:
        for chunk in splitter:
            chunks.append(chunk)
    return chunks, caught.value


@pytest.mark.parametrize("kind", ["single", "multi"])
def test_truncated_source_raises_after_the_whole_chunks(
    kind: str, sources: dict[str, Path], tmp_path: Path
) -> None:
    data = sources[kind].read_bytes()
    source = _write(tmp_path / "cut.zst", data[: len(data) * 2 // 3])

    chunks, error = _collect_until_corrupt(recompress(source, tmp_path / "ws", FILE_ID, 50))
    assert "truncated" in str(error)
    assert chunks, "the part before the cut holds whole chunks that must have been yielded"
    content = _check_chunks(chunks, tmp_path / "ws", FILE_ID)
    assert _raw(sources[kind]).startswith(content)
    assert sum(c.line_count for c in chunks) < LINES
    assert _chunk_files(tmp_path / "ws") == sorted(c.path.name for c in chunks)


def test_corrupt_frame_in_the_middle_raises_after_the_chunks_before_it(tmp_path: Path) -> None:
    frames = [b"".join(b"frame%d line%d\n" % (f, i) for i in range(10)) for f in range(5)]
    good = _frames(*frames[:2])
    damaged = bytearray(_frames(frames[2]))
    damaged[:4] = b"\x00\x00\x00\x00"  # the frame's magic number
    source = _write(tmp_path / "in.zst", good + bytes(damaged) + _frames(*frames[3:]))

    chunks, error = _collect_until_corrupt(recompress(source, tmp_path / "ws", FILE_ID, 4))
    assert f"byte {len(good)}" in str(error)  # the damage is located at the frame's start
    # 20 good lines: 5 chunks of 4; nothing of the damaged or later frames.
    assert [(c.first_line, c.line_count) for c in chunks] == [(1 + 4 * i, 4) for i in range(5)]
    assert _check_chunks(chunks, tmp_path / "ws", FILE_ID) == frames[0] + frames[1]
    assert len(_chunk_files(tmp_path / "ws")) == 5


def test_partial_chunk_before_the_damage_is_not_yielded(tmp_path: Path) -> None:
    """Lines read before the damage that do not fill a chunk are dropped with the .part file."""
    good = _frames(b"a\nb\nc\n")
    source = _write(tmp_path / "in.zst", good + b"\x00garbage")
    chunks, _ = _collect_until_corrupt(recompress(source, tmp_path / "ws", FILE_ID, 2))
    assert [_raw(c.path) for c in chunks] == [b"a\nb\n"]
    assert _chunk_files(tmp_path / "ws") == [f"{FILE_ID}-0.zst"]


@pytest.mark.xfail(
    reason="known limitation, chosen: a frame's checksum is only verified at its end, and"
    " single-frame files are streamed rather than held back; the file is marked failed",
    strict=True,
)
def test_damage_inside_a_frame_never_reaches_a_yielded_chunk(tmp_path: Path) -> None:
    """split_file's docstring: chunks already yielded "stay valid" when the file is damaged.

    Incompressible lines make zstd store raw blocks, so one flipped byte in the first MiB is
    copied silently to the output and noticed only by the frame checksum at its end, in a later
    1 MiB read: by then the chunks holding the altered line have been yielded (and, in the
    master, recorded and published).
    """
    rng = random.Random(5)
    lines = [rng.randbytes(999).replace(b"\n", b"x") + b"\n" for _ in range(2500)]
    raw = b"".join(lines)
    data = bytearray(_frames(raw))
    position = bytes(data).find(raw[300_000:300_032])
    assert 0 < position < 1 << 20
    data[position] = ord("y") if data[position] != ord("y") else ord("z")
    source = _write(tmp_path / "in.zst", bytes(data))

    chunks, error = _collect_until_corrupt(recompress(source, tmp_path / "ws", FILE_ID, 100))
    assert "checksum" in str(error)
    content = b"".join(_raw(c.path) for c in chunks)
    assert raw.startswith(content), "a yielded chunk holds bytes the source does not have"


def test_empty_file_yields_no_chunks(tmp_path: Path) -> None:
    source = _write(tmp_path / "empty.zst", b"")
    assert list(recompress(source, tmp_path / "ws", FILE_ID, 10)) == []
    assert _chunk_files(tmp_path / "ws") == []


def test_frame_with_empty_content_yields_no_chunks(tmp_path: Path) -> None:
    source = _write(tmp_path / "empty.zst", _frames(b"", b""))
    assert list(recompress(source, tmp_path / "ws", FILE_ID, 10)) == []
    assert _chunk_files(tmp_path / "ws") == []


def test_missing_source_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(UnreadableInput, match=r"cannot open.*No such file"):
        next(recompress(tmp_path / "missing.zst", tmp_path / "ws", FILE_ID, 10))


def test_workspace_errors_are_not_blamed_on_the_file(tmp_path: Path) -> None:
    source = tmp_path / "in.zst"
    source.write_bytes(zstandard.ZstdCompressor().compress(b"a\nb\n"))
    (tmp_path / "ws").write_text("a file where the workspace folder should be")
    with pytest.raises(OSError) as caught:
        next(recompress(source, tmp_path / "ws", FILE_ID, 10))
    assert not isinstance(caught.value, UnreadableInput)


# -- zstdio.decompressed_blocks ---------------------------------------------------------------


def _skippable(payload: bytes) -> bytes:
    return struct.pack("<II", 0x184D2A50, len(payload)) + payload


@pytest.mark.parametrize("read_size", [1, 7, 1000, 1 << 20])
def test_decompressed_blocks_reads_every_frame(read_size: int) -> None:
    contents = [os.urandom(3000).hex().encode() + b"\n" for _ in range(4)]
    data = _frames(*contents)
    blocks = list(decompressed_blocks(io.BytesIO(data), read_size))
    assert b"".join(blocks) == b"".join(contents)
    if read_size == 1 << 20:
        assert blocks == contents  # one block per frame when a read holds them all


def test_decompressed_blocks_skips_skippable_frames() -> None:
    """pzstd writes skippable frames between the data frames."""
    data = _skippable(b"\x00" * 4) + _frames(b"a\n") + _skippable(b"meta") + _frames(b"b\n")
    assert b"".join(decompressed_blocks(io.BytesIO(data + _skippable(b"")))) == b"a\nb\n"


def test_decompressed_blocks_on_generated_multi_frame_file(sources: dict[str, Path]) -> None:
    with sources["multi"].open("rb") as fh:
        blocks = list(decompressed_blocks(fh))
    assert len(blocks) >= LINES // 70  # at least one block per frame
    assert b"".join(blocks) == _raw(sources["single"])


@pytest.mark.parametrize("read_size", [1, 13, 1 << 20])
@pytest.mark.parametrize("cut", [1, 4, 100, -20])
def test_decompressed_blocks_raises_on_truncation_after_the_good_frames(
    read_size: int, cut: int
) -> None:
    rng = random.Random(3)
    first, second = (rng.randbytes(2000).hex().encode() + b"\n" for _ in range(2))
    data = _frames(first, second)
    assert len(data) - len(_frames(first)) > 100
    cut_at = len(_frames(first)) + cut if cut > 0 else len(data) + cut

    blocks: list[bytes] = []
    with pytest.raises(CorruptInput, match=f"truncated zstd data.* at byte {cut_at}"):
        for block in decompressed_blocks(io.BytesIO(data[:cut_at]), read_size):
            blocks.append(block)
    out = b"".join(blocks)
    assert out.startswith(first)
    assert second.startswith(out[len(first) :])


def test_decompressed_blocks_raises_on_trailing_garbage() -> None:
    data = _frames(b"ok\n")
    blocks: list[bytes] = []
    with pytest.raises(CorruptInput, match=f"near compressed byte {len(data)}"):
        for block in decompressed_blocks(io.BytesIO(data + b"not zstd at all")):
            blocks.append(block)
    assert blocks == [b"ok\n"]


def test_decompressed_blocks_raises_on_checksum_mismatch() -> None:
    data = bytearray(_frames(b"x" * 1000 + b"\n"))
    data[-1] ^= 0xFF  # last byte of the checksum
    with pytest.raises(CorruptInput, match="checksum"):
        list(decompressed_blocks(io.BytesIO(bytes(data))))


def test_decompressed_blocks_of_nothing_is_nothing() -> None:
    assert list(decompressed_blocks(io.BytesIO(b""))) == []
    assert isinstance(CorruptInput("x"), ValueError)
