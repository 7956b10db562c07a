"""Settings precedence (flags > PROTHEON_* environment > TOML file > defaults) and validation."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from protheon.config import ConfigError, Settings, _coerce, load_settings
from tests.conftest import run_protheon


def _toml(tmp_path: Path, text: str, name: str = "protheon.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _clean_environ() -> dict[str, str]:
    """The test process's environment without any PROTHEON_* variable."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PROTHEON_")}


def test_defaults_with_nothing_given() -> None:
    settings = load_settings(environ={})
    assert settings.chunk_lines == 50_000
    assert settings.pg_dsn == "postgresql:///protheon"
    assert settings.input == Path("input")
    assert settings.settle_seconds == 1.0
    assert settings.concurrency >= 1
    assert settings == Settings().replace(
        concurrency=settings.concurrency, worker_name=settings.worker_name
    )


def test_toml_top_level_keys(tmp_path: Path) -> None:
    path = _toml(tmp_path, 'chunk_lines = 1000\nqueue = "q.toml"\ninput = "/data/in"\n')
    settings = load_settings(config_file=path, environ={})
    assert (settings.chunk_lines, settings.queue, settings.input) == (
        1000,
        "q.toml",
        Path("/data/in"),
    )
    assert settings.listen == Settings.listen  # untouched keys keep their defaults


def test_toml_protheon_table(tmp_path: Path) -> None:
    path = _toml(tmp_path, '[protheon]\nchunk_lines = 2000\nlisten = "0.0.0.0:6000"\n')
    settings = load_settings(config_file=path, environ={})
    assert (settings.chunk_lines, settings.listen) == (2000, "0.0.0.0:6000")


def test_precedence_flags_over_env_over_file_over_defaults(tmp_path: Path) -> None:
    path = _toml(tmp_path, 'chunk_lines = 10\nqueue = "from-file"\nprefetch = 3\n')
    environ = {"PROTHEON_CHUNK_LINES": "20", "PROTHEON_QUEUE": "from-env"}
    flags: dict[str, Any] = {"chunk_lines": 30, "queue": None, "settle_seconds": None}

    settings = load_settings(flags, path, environ)
    assert settings.chunk_lines == 30  # flag beats env and file
    assert settings.queue == "from-env"  # a None flag means "not given": env beats file
    assert settings.prefetch == 3  # only the file sets it
    assert settings.settle_seconds == 1.0  # nobody sets it: default

    assert load_settings(None, path, environ).chunk_lines == 20
    assert load_settings(None, path, {}).chunk_lines == 10


def test_flags_that_are_not_settings_are_ignored() -> None:
    settings = load_settings({"out": Path("x"), "files": 3, "json": True}, environ={})
    assert settings.chunk_lines == 50_000


def test_empty_env_value_is_not_set(tmp_path: Path) -> None:
    path = _toml(tmp_path, "chunk_lines = 10\n")
    assert load_settings(None, path, {"PROTHEON_CHUNK_LINES": ""}).chunk_lines == 10


def test_protheon_config_env_names_the_file(tmp_path: Path) -> None:
    path = _toml(tmp_path, 'queue = "from-named-file"\n')
    settings = load_settings(environ={"PROTHEON_CONFIG": str(path)})
    assert settings.queue == "from-named-file"
    # An explicit file wins over PROTHEON_CONFIG.
    other = _toml(tmp_path, 'queue = "explicit"\n', "other.toml")
    assert load_settings(None, other, {"PROTHEON_CONFIG": str(path)}).queue == "explicit"


def test_unknown_toml_key_is_an_error(tmp_path: Path) -> None:
    path = _toml(tmp_path, "chunk_lines = 10\nchunk_line = 5\n")
    with pytest.raises(ConfigError, match="unknown setting 'chunk_line'") as caught:
        load_settings(config_file=path, environ={})
    assert str(path) in str(caught.value)


def test_unknown_key_in_protheon_table_is_an_error(tmp_path: Path) -> None:
    path = _toml(tmp_path, "[protheon]\nnot_a_setting = 1\n")
    with pytest.raises(ConfigError, match="not_a_setting"):
        load_settings(config_file=path, environ={})


def test_unreadable_or_invalid_file_is_an_error(tmp_path: Path) -> None:
    missing = tmp_path / "missing.toml"
    with pytest.raises(ConfigError, match=r"missing\.toml"):
        load_settings(config_file=missing, environ={})
    broken = _toml(tmp_path, "chunk_lines = = 3\n", "broken.toml")
    with pytest.raises(ConfigError, match=r"broken\.toml"):
        load_settings(config_file=broken, environ={})
    with pytest.raises(ConfigError, match=r"missing\.toml"):
        load_settings(environ={"PROTHEON_CONFIG": str(missing)})


def test_bad_env_value_names_the_variable() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(environ={"PROTHEON_CHUNK_LINES": "abc"})
    message = str(caught.value)
    assert "chunk_lines" in message
    assert "'abc'" in message
    assert "PROTHEON_CHUNK_LINES" in message


def test_bad_file_value_names_the_file(tmp_path: Path) -> None:
    path = _toml(tmp_path, 'settle_seconds = "soon"\n')
    with pytest.raises(ConfigError, match="settle_seconds") as caught:
        load_settings(config_file=path, environ={})
    assert str(path) in str(caught.value)


def test_bad_flag_value_names_the_flag() -> None:
    with pytest.raises(ConfigError, match="--max-ready-chunks"):
        load_settings({"max_ready_chunks": "many"}, environ={})


def test_bool_is_not_an_int(tmp_path: Path) -> None:
    path = _toml(tmp_path, "chunk_lines = true\n")
    with pytest.raises(ConfigError, match="chunk_lines"):
        load_settings(config_file=path, environ={})


@pytest.mark.parametrize(
    ("environ", "setting"),
    [
        ({"PROTHEON_CHUNK_LINES": "0"}, "chunk_lines"),
        ({"PROTHEON_CHUNK_LINES": "-5"}, "chunk_lines"),
        ({"PROTHEON_PREFETCH": "0"}, "prefetch"),
        ({"PROTHEON_CONCURRENCY": "0"}, "concurrency"),
        ({"PROTHEON_MAX_READY_CHUNKS": "0"}, "max_ready_chunks"),
        ({"PROTHEON_RPC_PIECE_BYTES": str((3 << 20) + 1)}, "rpc_piece_bytes"),
        ({"PROTHEON_RPC_PIECE_BYTES": "0"}, "rpc_piece_bytes"),
        ({"PROTHEON_CHUNK_LEVEL": "0"}, "chunk_level"),
        ({"PROTHEON_CHUNK_LEVEL": "23"}, "chunk_level"),
    ],
)
def test_out_of_range_values_are_errors(environ: dict[str, str], setting: str) -> None:
    with pytest.raises(ConfigError, match=setting):
        load_settings(environ=environ)


def test_range_limits_are_inclusive() -> None:
    settings = load_settings(
        environ={
            "PROTHEON_RPC_PIECE_BYTES": str(3 << 20),
            "PROTHEON_CHUNK_LEVEL": "22",
            "PROTHEON_CHUNK_LINES": "1",
        }
    )
    assert (settings.rpc_piece_bytes, settings.chunk_level, settings.chunk_lines) == (
        3 << 20,
        22,
        1,
    )
    assert load_settings(environ={"PROTHEON_CHUNK_LEVEL": "1"}).chunk_level == 1


@pytest.mark.parametrize(
    ("environ", "flags", "toml", "source"),
    [
        ({"PROTHEON_CHUNK_LINES": "0"}, {}, "", "PROTHEON_CHUNK_LINES"),
        ({}, {"chunk_level": 30}, "", "--chunk-level"),
        ({}, {}, f"rpc_piece_bytes = {4 << 20}\n", "protheon.toml"),
    ],
    ids=["env", "flag", "file"],
)
def test_range_errors_name_the_source(
    environ: dict[str, str], flags: dict[str, Any], toml: str, source: str, tmp_path: Path
) -> None:
    """ConfigError's contract: "the message names the setting and its source"."""
    path = _toml(tmp_path, toml)
    with pytest.raises(ConfigError) as caught:
        load_settings(flags, path, environ)
    assert source in str(caught.value)


@pytest.mark.parametrize(
    "toml", ["chunk_lines = 2.5\n", "settle_seconds = true\n"], ids=["float-int", "bool-float"]
)
def test_toml_values_of_the_wrong_type_are_errors(toml: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        load_settings(config_file=_toml(tmp_path, toml), environ={})


def test_float_and_path_coercion(tmp_path: Path) -> None:
    settings = load_settings(
        environ={
            "PROTHEON_SETTLE_SECONDS": "0.25",
            "PROTHEON_WORKSPACE": "/var/lib/protheon/ws",
            "PROTHEON_CHUNK_LINES": " 42 ",
        }
    )
    assert settings.settle_seconds == 0.25
    assert settings.workspace == Path("/var/lib/protheon/ws")
    assert isinstance(settings.workspace, Path)
    assert settings.chunk_lines == 42

    path = _toml(tmp_path, 'scan_interval = 2\nworkspace = "ws"\n')
    from_file = load_settings(config_file=path, environ={})
    assert from_file.scan_interval == 2.0
    assert isinstance(from_file.scan_interval, float)
    assert from_file.workspace == Path("ws")

    from_flags = load_settings({"input": "in", "settle_seconds": "1.5"}, environ={})
    assert (from_flags.input, from_flags.settle_seconds) == (Path("in"), 1.5)


@pytest.mark.parametrize("text", ["1", "true", "TRUE", "yes", "On"])
def test_bool_coercion_true(text: str) -> None:
    assert _coerce("flag", bool, text, "test") is True


@pytest.mark.parametrize("text", ["0", "false", "No", "off"])
def test_bool_coercion_false(text: str) -> None:
    assert _coerce("flag", bool, text, "test") is False


def test_bool_coercion_rejects_other_words() -> None:
    with pytest.raises(ConfigError, match=r"flag: cannot use 'maybe' from PROTHEON_FLAG"):
        _coerce("flag", bool, "maybe", "PROTHEON_FLAG")
    assert _coerce("flag", bool, True, "toml") is True


# -- the command line ---------------------------------------------------------------------------


def _protheon(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return run_protheon(*args, env=env)


def test_cli_help() -> None:
    result = _protheon("--help", env=_clean_environ())
    assert result.returncode == 0, result.stderr
    for command in ("gen", "db", "master", "worker", "status"):
        assert command in result.stdout


def test_cli_bad_env_value_exits_2_with_a_clear_message(tmp_path: Path) -> None:
    env = {
        **_clean_environ(),
        "PROTHEON_CHUNK_LINES": "abc",
        "PROTHEON_INPUT": str(tmp_path / "in"),
        "PROTHEON_WORKSPACE": str(tmp_path / "ws"),
    }
    result = _protheon("master", env=env)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "protheon: chunk_lines: cannot use 'abc' from PROTHEON_CHUNK_LINES"
    )
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "ws").exists()  # it stopped before doing anything


def test_cli_unknown_config_key_exits_2(tmp_path: Path) -> None:
    path = _toml(tmp_path, "bogus = 1\n")
    result = _protheon("--config", str(path), "master", env=_clean_environ())
    assert result.returncode == 2
    assert "unknown setting 'bogus'" in result.stderr
    assert "Traceback" not in result.stderr
