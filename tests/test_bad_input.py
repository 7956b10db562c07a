"""A corpus of bad inputs through a real master and worker: each gives a clear error (log,
ledger or rejects, with file and line where there is one), every good line still lands, and
nothing crashes or loops."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psycopg
import pytest
import zstandard

from protheon.pgcr.generator import GeneratorOptions, generate
from tests.conftest import Processes, free_port, wait_for
from tests.contract_cases import with_field
from tests.oracle import read_lines
from tests.pipeline import assert_database_matches_source

BIG_LINE_BYTES = 70 << 20


def _pgcr_lines(tmp_path: Path, lines: int, seed: int, start_id: int) -> list[bytes]:
    made = generate(GeneratorOptions(out=tmp_path / f"gen-{seed}", files=1, lines=lines,
                                     seed=seed, start_id=start_id))  # fmt: skip
    return list(read_lines(made[0].path))


def _multi_frame(data: bytes, frame_bytes: int) -> bytes:
    """pzstd-style: frames cut every ``frame_bytes`` decompressed bytes, lines or not."""
    compressor = zstandard.ZstdCompressor(level=1, write_checksum=True)
    cuts = range(0, len(data), frame_bytes)
    return b"".join(compressor.compress(data[a : a + frame_bytes]) for a in cuts)


def _single_frame(data: bytes) -> bytes:
    stream = zstandard.ZstdCompressor(level=1).compressobj()  # streamed: no content size
    return stream.compress(data) + stream.flush()


def _text(lines: list[bytes]) -> bytes:
    return b"".join(line + b"\n" for line in lines)


def _wait_settled(processes: Processes, dsn: str, files: int, timeout: float = 180) -> None:
    def settled() -> bool:
        with psycopg.connect(dsn) as conn:
            row = conn.execute(
                # done or failed, or split with a failed job and nothing else to do
                "SELECT count(*), count(*) FILTER (WHERE status IN ('done', 'failed')"
                "   OR (status = 'split' AND EXISTS (SELECT 1 FROM protheon.jobs j"
                "       WHERE j.file_id = f.file_id AND j.status = 'failed')"
                "     AND NOT EXISTS (SELECT 1 FROM protheon.jobs j"
                "       WHERE j.file_id = f.file_id AND j.status NOT IN ('done', 'failed'))))"
                " FROM protheon.files f"
            ).fetchone()
        return row == (files, files)

    wait_for(settled, timeout, f"{files} files to be loaded or failed")


def _files(dsn: str) -> dict[str, tuple[str, str | None]]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT name, status, error FROM protheon.files").fetchall()
    return {name: (status, error) for name, status, error in rows}


def _assert_no_crash(processes: Processes, started: dict[str, subprocess.Popen[bytes]]) -> None:
    for name, process in started.items():
        assert process.poll() is None, f"{name} exited:\n{processes.log(name)[-3000:]}"
        assert "Traceback" not in processes.log(name), processes.log(name)[-3000:]


def _start(processes: Processes, inbox: Path, workspace: Path, port: int,
           **env: str) -> dict[str, subprocess.Popen[bytes]]:  # fmt: skip
    return {
        "master": processes.start(
            "master", "master", "--input", str(inbox), "--workspace", str(workspace),
            "--listen", f"127.0.0.1:{port}", "--chunk-lines", "100", extra_env=env,
        ),
        "worker": processes.start(
            "worker", "worker", "--master", f"127.0.0.1:{port}", "--concurrency", "1",
            extra_env=env,
        ),
    }  # fmt: skip


def test_a_corpus_of_bad_inputs_loses_no_good_line(
    processes: Processes, pg_dsn: str, tmp_path: Path
) -> None:
    inbox, reference = tmp_path / "inbox", tmp_path / "reference"
    inbox.mkdir()
    reference.mkdir()

    def add(name: str, blob: bytes, readable: bytes | None = None) -> None:
        """Put a source in; ``readable``: what an independent reader should load from it."""
        (inbox / name).write_bytes(blob)
        if readable is not None:
            (reference / name).write_bytes(zstandard.ZstdCompressor().compress(readable))

    # Good PGCRs around every kind of bad line, pzstd-style frames cut mid-line; the 70 MB
    # line crosses many frames and a chunk cut.
    lines = _pgcr_lines(tmp_path, 400, seed=1, start_id=12_000_000_000)
    lines[2] = b'{"broken'
    lines[6] = b'{"_id": "5"}'  # required fields missing
    lines[10] = json.dumps(with_field("period", 12)).encode()  # wrong type
    lines[12] = b"\x00\x00 not json \x00"
    lines.insert(200, b'{"_id": "' + b"9" * BIG_LINE_BYTES + b'"}')
    good = _text(lines)
    add("a-good-and-bad-lines.jsonl.zst", _multi_frame(good, 1 << 16), good)

    # A copy cut short: the whole lines before the cut still load.
    truncated = _text(_pgcr_lines(tmp_path, 300, seed=2, start_id=12_000_100_000))
    blob = _single_frame(truncated)
    readable = zstandard.ZstdDecompressor().stream_reader(blob[: len(blob) * 7 // 10]).read()
    add("b-truncated.jsonl.zst", blob[: len(blob) * 7 // 10],
        readable[: readable.rfind(b"\n") + 1])  # fmt: skip

    add("c-empty.jsonl.zst", b"", b"")
    add("d-not-zstd.jsonl.zst", b'{"_id": "1"}\nplain text, not zstd\n')
    (inbox / "e-a-directory.jsonl.zst").mkdir()
    port = free_port()
    started = _start(processes, inbox, tmp_path / "ws", port)

    # A file still being copied when first seen: it grows in pieces, more slowly than the
    # master scans, but never pausing for as long as settle_seconds.
    copying = _text(_pgcr_lines(tmp_path, 300, seed=3, start_id=12_000_200_000))
    copied = _single_frame(copying)
    (reference / "f-copying.jsonl.zst").write_bytes(copied)

    def copy_slowly() -> None:
        with (inbox / "f-copying.jsonl.zst").open("wb") as fh:
            for start in range(0, len(copied), len(copied) // 12 + 1):
                fh.write(copied[start : start + len(copied) // 12 + 1])
                fh.flush()
                time.sleep(0.1)

    copier = threading.Thread(target=copy_slowly)
    copier.start()
    copier.join()

    _wait_settled(processes, pg_dsn, 5, timeout=300)
    files = _files(pg_dsn)
    assert "e-a-directory.jsonl.zst" not in files
    assert files["a-good-and-bad-lines.jsonl.zst"][0] == "done"
    assert files["c-empty.jsonl.zst"][0] == "done"
    assert files["f-copying.jsonl.zst"][0] == "done", "a growing file was read too early"
    status, error = files["b-truncated.jsonl.zst"]
    assert status == "failed" and "truncated zstd data" in str(error)
    status, error = files["d-not-zstd.jsonl.zst"]
    assert status == "failed" and "zstd" in str(error)

    # Every readable line landed, every bad one is a reject with its file and line.
    assert_database_matches_source(pg_dsn, sorted(reference.glob("*.zst")))
    with psycopg.connect(pg_dsn) as conn:
        big = conn.execute(
            "SELECT line_number, line_bytes, length(raw_line), error FROM protheon.rejects"
            " WHERE line_bytes > 1000000"
        ).fetchall()
    assert len(big) == 1 and big[0][:3] == (201, BIG_LINE_BYTES + 11, 4096), big[0][:3]
    _assert_no_crash(processes, started)
    master_log = processes.log("master")
    assert master_log.count("e-a-directory.jsonl.zst is not a regular file") == 1


def _jobs(dsn: str) -> list[tuple[str, str | None]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT status, error FROM protheon.jobs ORDER BY seq").fetchall()


def test_a_corrupt_frame_loses_only_its_own_lines_with_a_reject_saying_so(
    processes: Processes, pg_dsn: str, tmp_path: Path
) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    lines = _pgcr_lines(tmp_path, 600, seed=4, start_id=12_000_300_000)
    compressor = zstandard.ZstdCompressor(level=1, write_checksum=True)
    frames = [compressor.compress(_text(lines[i : i + 50])) for i in range(0, 600, 50)]
    damaged = bytearray(frames[6])
    middle = len(damaged) // 2
    damaged[middle : middle + 8] = bytes(b ^ 0xA5 for b in damaged[middle : middle + 8])
    frames[6] = bytes(damaged)  # lines 301-350
    source = inbox / "corrupt-frame.jsonl.zst"
    source.write_bytes(b"".join(frames))
    started = _start(processes, inbox, tmp_path / "ws", free_port())
    wait_for(lambda: _files(pg_dsn).get("corrupt-frame.jsonl.zst", ("",))[0] == "done", 120,
             "the file to load")  # fmt: skip
    assert all(status == "done" for status, _ in _jobs(pg_dsn))
    with psycopg.connect(pg_dsn) as conn:
        landed = {row[0] for row in conn.execute("SELECT instance_id FROM pgcr.instances")}
        rejects = conn.execute("SELECT line_number, error FROM protheon.rejects").fetchall()
    ids = [int(json.loads(line)["activityDetails"]["instanceId"]) for line in lines]
    assert landed == set(ids[:300] + ids[350:]), "every line of every other frame"
    assert len(rejects) == 1 and rejects[0][0] == 301, rejects
    assert "corrupt zstd frame" in rejects[0][1] and "lines lost" in rejects[0][1]
    _assert_no_crash(processes, started)


def test_a_source_replaced_after_its_split_is_never_served(
    processes: Processes, pg_dsn: str, tmp_path: Path
) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    first = _text(_pgcr_lines(tmp_path, 300, seed=5, start_id=12_000_400_000))
    (inbox / "replaced.jsonl.zst").write_bytes(_multi_frame(first, 1 << 15))
    port = free_port()
    once = {"PROTHEON_DELIVERY_LIMIT": "1"}
    master = processes.start(
        "master", "master", "--input", str(inbox), "--workspace", str(tmp_path / "ws"),
        "--listen", f"127.0.0.1:{port}", "--chunk-lines", "100", extra_env=once,
    )  # fmt: skip
    wait_for(lambda: _files(pg_dsn).get("replaced.jsonl.zst", ("",))[0] == "split", 60,
             "the split")  # fmt: skip
    second = _text(_pgcr_lines(tmp_path, 300, seed=6, start_id=12_000_500_000))
    (inbox / ".replacement.part").write_bytes(_multi_frame(second, 1 << 15))
    os.replace(inbox / ".replacement.part", inbox / "replaced.jsonl.zst")
    worker = processes.start("worker", "worker", "--master", f"127.0.0.1:{port}",
                             "--concurrency", "1", extra_env=once)  # fmt: skip
    wait_for(lambda: all(status == "failed" for status, _ in _jobs(pg_dsn)), 120,
             "every job of the replaced file to fail")  # fmt: skip
    assert all("changed since it was registered" in str(error) for _, error in _jobs(pg_dsn))
    with psycopg.connect(pg_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM pgcr.instances").fetchone() == (0,)
    assert "changed since it was registered" in processes.log("master")
    _assert_no_crash(processes, {"master": master, "worker": worker})


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv to drop root")
def test_an_unreadable_file_fails_with_the_reason_and_the_rest_loads(
    processes: Processes, pg_dsn: str, rpc_tls_dir: Path
) -> None:
    """The master runs as an unprivileged user here, as deployed (root reads anything)."""
    home = Path(tempfile.mkdtemp(prefix="protheon-unreadable-", dir="/tmp"))
    try:
        inbox, tls = home / "inbox", home / "tls"
        inbox.mkdir()
        shutil.copytree(rpc_tls_dir, tls)
        good = _text(_pgcr_lines(home, 200, seed=7, start_id=12_000_600_000))
        (inbox / "readable.jsonl.zst").write_bytes(_single_frame(good))
        (inbox / "secret.jsonl.zst").write_bytes(_single_frame(good[:1000]))
        (inbox / "secret.jsonl.zst").chmod(0)
        for path in [home, *home.rglob("*")]:
            if path.name != "secret.jsonl.zst":
                os.chown(path, 65534, 65534)
        home.chmod(0o755)
        port = free_port()
        env = {**processes.env, "PGUSER": "postgres", "PROTHEON_RPC_TLS_DIR": str(tls)}
        log = (processes.log_dir / "master.log").open("ab")
        master = subprocess.Popen(
            ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--",
             *processes_command(), "master", "--input", str(inbox), "--workspace",
             str(home / "ws"), "--listen", f"127.0.0.1:{port}"],
            env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        processes.started.append(master)
        worker = processes.start("worker", "worker", "--master", f"127.0.0.1:{port}",
                                 "--concurrency", "1")  # fmt: skip
        _wait_settled(processes, pg_dsn, 2)
        files = _files(pg_dsn)
        assert files["readable.jsonl.zst"][0] == "done"
        status, error = files["secret.jsonl.zst"]
        assert status == "failed" and "Permission denied" in str(error), error
        assert processes.log("master").count("secret.jsonl.zst") <= 3, "reported, not looped"
        _assert_no_crash(processes, {"master": master, "worker": worker})
    finally:
        shutil.rmtree(home, ignore_errors=True)


def processes_command() -> list[str]:
    return [sys.executable, "-m", "protheon"]
