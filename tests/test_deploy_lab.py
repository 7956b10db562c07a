"""``ansible-playbook site.yml`` against three real systemd hosts: one master, two workers.

Hosts are Debian 12 containers booted with systemd-nspawn on a private bridge (tests/lab.py).
The playbook runs twice (the second run must change nothing), then a real load goes through
the deployed services, a worker is stopped mid-job (it drains), another is frozen (the
watchdog kills and restarts it), and Prometheus, RabbitMQ and PostgreSQL are checked for what
a user relies on. Slow (several minutes the first time, while apt fills its cache): skip with
``-m 'not slow'``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pika
import pytest

from protheon.pgcr.generator import GeneratorOptions, generate
from protheon.rpc.v1 import chunks_pb2, chunks_pb2_grpc
from tests import lab
from tests.conftest import wait_for
from tests.oracle import read_expected

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        os.geteuid() != 0 or any(shutil.which(tool) is None for tool in
                                 ("systemd-nspawn", "debootstrap", "apt-cacher-ng")),
        reason="needs root, systemd-nspawn, debootstrap and apt-cacher-ng",
    ),
]  # fmt: skip

ROOT = Path(__file__).resolve().parent.parent
ANSIBLE = ROOT / "ansible"
BIN = Path(sys.executable).parent
HOSTS = {"lab-master": 10, "lab-w1": 11, "lab-w2": 12}
PSQL = "runuser -u postgres -- psql -d protheon -At -c"


class Lab:
    def __init__(self, hosts: dict[str, lab.Host], workdir: Path) -> None:
        self.hosts = hosts
        self.workdir = workdir
        self.master = hosts["lab-master"]

    def playbook(self) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "ANSIBLE_NOCOLOR": "1",
               "ANSIBLE_FORCE_COLOR": "0"}  # fmt: skip
        return subprocess.run(
            [str(BIN / "ansible-playbook"), "site.yml", "-i", str(self.workdir / "inventory.ini")],
            cwd=ANSIBLE, env=env, capture_output=True, text=True, timeout=1800,
        )  # fmt: skip

    def protheon(self, *args: str) -> str:
        return self.master.sh(
            "/opt/protheon/venv/bin/protheon --config /etc/protheon/master.toml " + " ".join(args)
        ).stdout

    def status(self) -> dict[str, int]:
        return json.loads(self.protheon("status", "--json"))  # type: ignore[no-any-return]

    def sql(self, query: str) -> list[str]:
        out = self.master.sh(f'{PSQL} "{query}"').stdout
        return [line for line in out.splitlines() if line]


def _wheelhouse() -> Path:
    """Dependency wheels built on the controller: the hosts have no internet."""
    house = lab.CACHE / "wheelhouse"
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    digest = hashlib.sha256("\n".join(sorted(dependencies)).encode()).hexdigest()[:12]
    marker = house / f".complete-{digest}"  # rebuilt when the dependencies change
    if not marker.exists():
        shutil.rmtree(house, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "-w", str(house),
                        str(ROOT)], check=True, timeout=1200)  # fmt: skip
        for wheel in house.glob("protheon-*.whl"):
            wheel.unlink()  # the playbook builds and ships the current one
        marker.touch()
    return house


def _inventory(workdir: Path, key: Path, wheelhouse: Path) -> None:
    lines = ["[master]", f"lab-master ansible_host={lab.SUBNET}.{HOSTS['lab-master']}", "",
             "[workers]"]  # fmt: skip
    for name in ("lab-w1", "lab-w2"):
        lines.append(f"{name} ansible_host={lab.SUBNET}.{HOSTS[name]} protheon_worker_processes=2")
    lines += [
        "", "[all:vars]", "ansible_user=root", f"ansible_ssh_private_key_file={key}",
        f"protheon_wheelhouse={wheelhouse}", "grafana_install_package=false",
        "protheon_watchdog_sec=10", "protheon_drain_seconds=20",
        "protheon_timeout_stop_sec=30", "protheon_master_chunk_lines=1500",
    ]  # fmt: skip
    (workdir / "inventory.ini").write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    workdir = tmp_path_factory.mktemp("lab")
    key = lab.CACHE / "ssh" / "id_ed25519"
    if not key.exists():
        key.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)],
                       check=True)  # fmt: skip
    wheelhouse = _wheelhouse()
    cache = lab.AptCache()
    cache.start()
    names = {name: f"{lab.SUBNET}.{octet}" for name, octet in HOSTS.items()}
    hosts: dict[str, lab.Host] = {}
    try:
        for name, octet in HOSTS.items():
            hosts[name] = lab.boot(name, octet, names, key.with_suffix(".pub").read_text())
        _inventory(workdir, key, wheelhouse)
        yield Lab(hosts, workdir)
    finally:
        for host in hosts.values():
            lab.shutdown(host)
        cache.stop()
        lab.bridge_down()


@pytest.fixture(scope="module")
def converged(deployed: Lab) -> Lab:
    first = deployed.playbook()
    assert first.returncode == 0, first.stdout[-6000:] + first.stderr[-3000:]
    return deployed


def _recap(output: str) -> dict[str, dict[str, int]]:
    recap = {}
    for line in output.split("PLAY RECAP")[-1].splitlines():
        match = re.match(r"^(\S+)\s*:\s*(.*)$", line.strip())
        if match:
            recap[match.group(1)] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)",
                                                                      match.group(2))}  # fmt: skip
    return recap


def test_a_second_run_changes_nothing(converged: Lab) -> None:
    again = converged.playbook()
    assert again.returncode == 0, again.stdout[-4000:]
    recap = _recap(again.stdout)
    assert set(recap) == set(HOSTS)
    changed = {host: counts["changed"] for host, counts in recap.items() if counts["changed"]}
    assert not changed, again.stdout[-6000:]


def test_services_run_hardened_and_listen_on_the_lan_only(converged: Lab) -> None:
    master = converged.master
    for unit in ("protheon-master", "rabbitmq-server", "postgresql@15-main", "prometheus",
                 "prometheus-node-exporter", "prometheus-postgres-exporter"):  # fmt: skip
        assert master.show(unit, "ActiveState") == "active", unit
    for name in ("lab-w1", "lab-w2"):
        worker = converged.hosts[name]
        for index in (1, 2):
            assert worker.show(f"protheon-worker@{index}", "ActiveState") == "active"
        assert worker.show("protheon-workers.target", "ActiveState") == "active"
    listening = master.sh("ss -Hltn").stdout
    for port in ("9090", "9100", "9187", "15692", "50051", "9400", "5432", "5672"):
        lan = (f"{master.address}:{port}", f"[::ffff:{master.address}]:{port}")
        assert any(address in listening for address in lan), port
        assert f"0.0.0.0:{port}" not in listening and f"*:{port}" not in listening, port
    config = master.sh("stat -c '%U:%G %a' /etc/protheon/master.toml").stdout.strip()
    assert config == "root:protheon 640"


def test_guest_cannot_log_in_and_strangers_cannot_reach_postgresql(converged: Lab) -> None:
    address = converged.master.address
    with pytest.raises(pika.exceptions.AMQPError):
        pika.BlockingConnection(pika.URLParameters(f"amqp://guest:guest@{address}:5672/%2F"))
    users = converged.master.sh("rabbitmqctl -q list_users").stdout
    assert "guest" not in users and "protheon" in users
    hba = converged.master.sh("cat /etc/postgresql/15/main/pg_hba.conf").stdout
    assert "trust" not in hba and "scram-sha-256" in hba
    assert f"{lab.BRIDGE_IP}/32" not in hba, "the controller is not an inventory host"
    encrypted = converged.sql("SELECT rolpassword LIKE 'SCRAM-SHA-256%' FROM pg_authid"
                              " WHERE rolname = 'protheon'")  # fmt: skip
    assert encrypted == ["t"]


def test_the_master_answers_grpc_only_over_tls_with_the_token(converged: Lab) -> None:
    target = f"{converged.master.address}:50051"
    request = chunks_pb2.StreamChunkRequest(job_id=1, worker="stranger")
    with grpc.insecure_channel(target) as plain, pytest.raises(grpc.RpcError) as caught:
        list(chunks_pb2_grpc.ChunkServiceStub(plain).StreamChunk(request, timeout=10))  # type: ignore[no-untyped-call]
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    ca = (converged.workdir / "credentials" / "tls" / "ca.pem").read_bytes()
    with grpc.secure_channel(target, grpc.ssl_channel_credentials(ca)) as channel:
        stub = chunks_pb2_grpc.ChunkServiceStub(channel)  # type: ignore[no-untyped-call]
        with pytest.raises(grpc.RpcError) as caught:
            list(stub.StreamChunk(request, timeout=10))
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    for name in ("lab-w1", "lab-w2"):
        files = converged.hosts[name].sh("stat -c '%n %U:%G %a' /etc/protheon/tls/*").stdout
        assert files.split("\n")[:2] == [
            "/etc/protheon/tls/ca.pem root:protheon 644",
            "/etc/protheon/tls/token root:protheon 640",
        ], files
        assert "master.key" not in files and "ca.key" not in files
    assert "ca.key" not in converged.master.sh("ls /etc/protheon/tls").stdout


def test_a_load_lands_exactly_once(converged: Lab, tmp_path: Path) -> None:
    made = generate(GeneratorOptions(out=tmp_path / "gen", files=2, lines=6000, seed=71,
                                     dup_rate=0.03, bad_rate=0.01))  # fmt: skip
    inbox = converged.master.root / "srv" / "protheon" / "input"
    for file in made:
        shutil.copy(file.path, inbox / f".{file.path.name}.part")
        os.replace(inbox / f".{file.path.name}.part", inbox / file.path.name)
    wait_for(lambda: converged.status()["files_done"] == 2, 240, "the lab to load two files")
    expected = read_expected([file.path for file in made])
    instances = converged.sql("SELECT instance_id FROM pgcr.instances")
    assert len(instances) == len(expected.instances)
    assert {int(value) for value in instances} == expected.instances
    assert converged.sql("SELECT count(*) FROM pgcr.entries") == [str(len(expected.entries))]
    assert converged.sql("SELECT count(*) FROM pgcr.weapons") == [str(len(expected.weapons))]
    assert converged.sql("SELECT count(*) FROM protheon.rejects") == [str(len(expected.rejects))]
    workers = set(converged.sql("SELECT DISTINCT split_part(worker, '-', 1) || '-' ||"
                                " split_part(worker, '-', 2) FROM protheon.jobs"))  # fmt: skip
    assert workers == {"lab-w1", "lab-w2"}, "both worker hosts took jobs"


def test_workers_reach_postgresql_over_verified_tls_only(converged: Lab) -> None:
    hba = converged.master.sh("cat /etc/postgresql/15/main/pg_hba.conf").stdout
    lan = [line for line in hba.splitlines() if "/32" in line and "127.0.0.1/32" not in line]
    assert lan and all(line.startswith("hostssl") for line in lan), hba
    sessions = converged.sql(
        "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)"
        " WHERE a.application_name LIKE 'protheon-worker%' AND a.client_addr IS NOT NULL"
    )
    assert sessions and set(sessions) == {"t"}, sessions
    config = converged.hosts["lab-w1"].sh("cat /etc/protheon/worker.toml").stdout
    assert "sslmode=verify-full" in config


def test_stopping_a_worker_mid_job_drains_it(converged: Lab, tmp_path: Path) -> None:
    worker = converged.hosts["lab-w1"]
    before = converged.status()["jobs_done"]
    # Hold a lock every job's COPY into pgcr.weapons needs: workers stop mid-transaction.
    blocker = subprocess.Popen(
        ["nsenter", "-t", str(converged.master.leader), "-a", "--", "runuser", "-u", "postgres",
         "--", "psql", "-d", "protheon", "-c",
         "BEGIN; LOCK TABLE pgcr.weapons IN SHARE MODE; SELECT pg_sleep(600);"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        made = generate(GeneratorOptions(out=tmp_path / "gen", files=1, lines=4500, seed=72,
                                         start_id=12_100_000_000))  # fmt: skip
        inbox = converged.master.root / "srv" / "protheon" / "input"
        shutil.copy(made[0].path, inbox / ".drain.part")
        os.replace(inbox / ".drain.part", inbox / made[0].path.name)
        wait_for(lambda: converged.sql(
            "SELECT 1 FROM pg_stat_activity WHERE application_name ="
            " 'protheon-worker lab-w1-1' AND wait_event_type = 'Lock'"), 120,
            "lab-w1's first worker to block inside a job")  # fmt: skip
        since = worker.sh("date '+%Y-%m-%d %H:%M:%S'").stdout.strip()
        worker.systemctl("stop", "--no-block", "protheon-worker@1")
        wait_for(lambda: worker.show("protheon-worker@1", "ActiveState") == "deactivating",
                 10, "the stop to begin")  # fmt: skip
    finally:
        converged.master.sh("runuser -u postgres -- psql -d protheon -c \"SELECT"
                            " pg_cancel_backend(pid) FROM pg_stat_activity WHERE query LIKE"
                            " '%pg_sleep(600)%' AND pid <> pg_backend_pid()\"")  # fmt: skip
        blocker.wait(timeout=30)
    wait_for(lambda: worker.show("protheon-worker@1", "ActiveState") == "inactive", 60,
             "the drained worker to stop")  # fmt: skip
    assert worker.show("protheon-worker@1", "Result") == "success"
    assert worker.show("protheon-worker@1", "ExecMainStatus") == "0"
    journal = worker.sh(f"journalctl -u protheon-worker@1 --since '{since}' -o cat").stdout
    assert "draining" in journal and re.search(r"job \d+ \(.* PGCRs", journal), journal[-3000:]
    assert "stopped after" in journal
    worker.systemctl("start", "protheon-worker@1")
    wait_for(lambda: converged.status()["files_done"] == 3, 180, "the third file to load")
    assert converged.status()["jobs_done"] == before + 3
    expected_total = converged.status()["pgcrs_written"]
    assert converged.sql("SELECT count(*) FROM pgcr.instances") == [str(expected_total)]


def test_a_frozen_worker_is_killed_by_the_watchdog_and_restarted(converged: Lab) -> None:
    worker = converged.hosts["lab-w2"]
    restarts = int(worker.show("protheon-worker@2", "NRestarts"))
    worker.systemctl("kill", "--signal=SIGSTOP", "protheon-worker@2")
    wait_for(lambda: int(worker.show("protheon-worker@2", "NRestarts")) > restarts, 120,
             "systemd to restart the frozen worker", interval=1)  # fmt: skip
    journal = worker.sh("journalctl -u protheon-worker@2 -o cat").stdout
    assert "Watchdog timeout" in journal
    wait_for(lambda: worker.show("protheon-worker@2", "ActiveState") == "active", 60,
             "the restarted worker to be ready")  # fmt: skip


def test_prometheus_on_the_master_sees_every_target_up(converged: Lab) -> None:
    url = f"http://{converged.master.address}:9090/api/v1/targets"

    def targets() -> list[dict[str, object]]:
        with urllib.request.urlopen(url, timeout=10) as response:
            return list(json.load(response)["data"]["activeTargets"])

    expected = 1 + 4 + 1 + 3 + 1  # master, 2x2 workers, rabbitmq, 3 nodes, postgres
    wait_for(lambda: len(targets()) == expected
             and all(t["health"] == "up" for t in targets()), 120,
             "every scrape target to be up")  # fmt: skip
    jobs = {str(t["labels"]["job"]) for t in targets()}  # type: ignore[index]
    assert jobs == {"protheon-master", "protheon-worker", "rabbitmq", "node", "postgres"}
