"""The playbook and roles, without hosts: syntax, lint (offline), and role conventions."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ANSIBLE = Path(__file__).resolve().parent.parent / "ansible"
ROLES = sorted(path for path in (ANSIBLE / "roles").iterdir() if path.is_dir())
BIN = Path(sys.executable).parent


def _run(*command: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "ANSIBLE_NOCOLOR": "1"}
    return subprocess.run(command, cwd=ANSIBLE, env=env, capture_output=True, text=True,
                          timeout=600)  # fmt: skip


def test_playbook_syntax() -> None:
    result = _run(str(BIN / "ansible-playbook"), "site.yml", "-i", "../inventory.example.ini",
                  "--syntax-check")  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.skipif(not (BIN / "ansible-lint").exists(), reason="ansible-lint not installed")
def test_ansible_lint_is_clean_offline() -> None:
    result = _run(str(BIN / "ansible-lint"), "--offline", "--nocolor")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert "Passed" in result.stdout + result.stderr


@pytest.mark.parametrize("role", ROLES, ids=lambda path: path.name)
def test_roles_follow_the_conventions(role: Path) -> None:
    for required in ("meta/main.yml", "meta/argument_specs.yml", "tasks/main.yml",
                     "tasks/preflight.yml", "tasks/configure.yml"):  # fmt: skip
        assert (role / required).exists(), f"{role.name}: {required}"
    handlers = role / "handlers" / "main.yml"
    if handlers.exists():
        for handler in yaml.safe_load(handlers.read_text()):
            assert "listen" in handler, f"{role.name}: handler {handler['name']!r} uses listen:"
    specs = yaml.safe_load((role / "meta" / "argument_specs.yml").read_text())
    documented = set(specs["argument_specs"]["main"].get("options", {}))
    defaults = role / "defaults" / "main.yml"
    if defaults.exists():
        assert set(yaml.safe_load(defaults.read_text()) or {}) <= documented, role.name


def test_no_default_secrets_anywhere() -> None:
    """Every password variable defaults to the controller's password lookup (generated once,
    reused, overridable from a vault), never to a literal."""
    sources = [ANSIBLE / "group_vars" / "all.yml", *ANSIBLE.glob("roles/*/defaults/main.yml")]
    passwords = {}
    for source in sources:
        for name, value in (yaml.safe_load(source.read_text()) or {}).items():
            if name.endswith(("_password", "_token")):
                passwords[name] = str(value)
    assert len(passwords) >= 4, passwords.keys()
    for name, value in passwords.items():
        assert value.strip().startswith("{{ lookup('ansible.builtin.password'"), name
    everything = "\n".join(path.read_text() for pattern in ("*.yml", "*.j2", "*.cfg")
                            for path in ANSIBLE.rglob(pattern))  # fmt: skip
    assert "guest:guest" not in everything
