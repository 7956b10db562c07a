"""Real systemd hosts for deployment tests: Debian 12 booted with systemd-nspawn on a bridge.

What works here (shared/notes/systemd-hosts.md, as facts): a minbase debootstrap rootfs cached
as a tarball, one overlay per host, a private bridge without NAT, apt through an apt-cacher-ng
on the bridge, ``--register=no --keep-unit`` with each container put into its own cgroup first,
commands through ``nsenter`` into the container's systemd, and SSH over the bridge for Ansible.
Everything is built by this module on first use and cached under ``PROTHEON_LAB_CACHE``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

CACHE = Path(os.environ.get("PROTHEON_LAB_CACHE", "/var/cache/protheon-lab"))
BRIDGE = "pthlab0"
SUBNET = "10.231.0"
BRIDGE_IP = f"{SUBNET}.1"
MIRROR = "http://deb.debian.org/debian"
PACKAGES = ("systemd,systemd-sysv,dbus,openssh-server,python3,python3-apt,iproute2,"
            "ca-certificates,procps,less")  # fmt: skip
CGROUP_ROOTS = (Path("/sys/fs/cgroup/systemd"), Path("/sys/fs/cgroup/unified"))


def run(*command: str, check: bool = True, timeout: float = 600, **kwargs: object
        ) -> subprocess.CompletedProcess[str]:  # fmt: skip
    return subprocess.run(command, check=check, timeout=timeout, text=True,
                          capture_output=True, **kwargs)  # type: ignore[call-overload,no-any-return]  # fmt: skip


def base_rootfs() -> Path:
    """The shared read-only lower layer: debootstrapped once, then kept as a tarball."""
    base = CACHE / "base"
    if (base / "etc" / "os-release").exists():
        return base
    tarball = CACHE / "bookworm-base.tar.gz"
    CACHE.mkdir(parents=True, exist_ok=True)
    if not tarball.exists():
        scratch = CACHE / "debootstrap"
        shutil.rmtree(scratch, ignore_errors=True)
        run("debootstrap", "--variant=minbase", f"--include={PACKAGES}", "bookworm",
            str(scratch), MIRROR, timeout=1200)  # fmt: skip
        _configure_base(scratch)
        run("tar", "-C", str(scratch), "-czf", str(tarball) + ".part", ".", timeout=600)
        os.replace(str(tarball) + ".part", tarball)
        shutil.rmtree(scratch, ignore_errors=True)
    partial = CACHE / "base.part"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    run("tar", "-C", str(partial), "-xzf", str(tarball), timeout=600)
    os.replace(partial, base)
    return base


def _configure_base(root: Path) -> None:
    (root / "etc" / "machine-id").write_text("")
    (root / "etc" / "hosts").write_text("127.0.0.1 localhost\n::1 localhost\n")
    (root / "etc" / "apt" / "sources.list").write_text(
        "deb http://deb.debian.org/debian bookworm main\n"
        "deb http://deb.debian.org/debian bookworm-updates main\n"
        "deb http://deb.debian.org/debian-security bookworm-security main\n"
    )
    (root / "etc" / "apt" / "apt.conf.d" / "01proxy").write_text(
        f'Acquire::http::Proxy "http://{BRIDGE_IP}:3142";\n'
    )
    # Ansible over SSH as root; no password logins.
    sshd = root / "etc" / "ssh" / "sshd_config.d"
    sshd.mkdir(parents=True, exist_ok=True)
    (sshd / "lab.conf").write_text("PermitRootLogin prohibit-password\nUseDNS no\n")
    networkd = root / "etc" / "systemd" / "system" / "multi-user.target.wants"
    networkd.mkdir(parents=True, exist_ok=True)
    link = networkd / "systemd-networkd.service"
    if not link.exists():
        link.symlink_to("/lib/systemd/system/systemd-networkd.service")


class AptCache:
    """apt-cacher-ng on the bridge, so hosts install Debian packages without internet and
    every later run installs from the cache."""

    def __init__(self) -> None:
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        bridge_up()  # it binds the bridge address
        config = CACHE / "acng-conf"
        shutil.rmtree(config, ignore_errors=True)
        shutil.copytree("/etc/apt-cacher-ng", config)
        (config / "backends_debian").write_text("http://deb.debian.org/debian/\n")
        conf = (config / "acng.conf").read_text()
        conf += ("\nRemap-secdeb: security.debian.org deb.debian.org/debian-security ;"
                 " deb.debian.org/debian-security\n")  # fmt: skip
        (config / "acng.conf").write_text(conf)
        for folder in ("acng-cache", "acng-log"):
            (CACHE / folder).mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            ["apt-cacher-ng", "-c", str(config), "ForeGround=1", "Port=3142",
             f"BindAddress=127.0.0.1 {BRIDGE_IP}", f"CacheDir={CACHE / 'acng-cache'}",
             f"LogDir={CACHE / 'acng-log'}", "ExThreshold=60"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if run("bash", "-c", f"exec 3<>/dev/tcp/{BRIDGE_IP}/3142", check=False).returncode == 0:
                return
            time.sleep(0.3)
        raise RuntimeError("apt-cacher-ng did not start")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=20)


def bridge_up() -> None:
    if run("ip", "link", "show", BRIDGE, check=False).returncode != 0:
        run("ip", "link", "add", BRIDGE, "type", "bridge")
        run("ip", "addr", "add", f"{BRIDGE_IP}/24", "dev", BRIDGE)
    run("ip", "link", "set", BRIDGE, "up")


def bridge_down() -> None:
    run("ip", "link", "del", BRIDGE, check=False)


@dataclasses.dataclass
class Host:
    """A booted container: its own systemd as PID 1, an address on the bridge."""

    name: str
    address: str
    root: Path  # the overlay's merged view
    nspawn: subprocess.Popen[bytes] | None = None
    leader: int = 0

    def sh(self, script: str, check: bool = True, timeout: float = 300
           ) -> subprocess.CompletedProcess[str]:  # fmt: skip
        """Run a shell script inside the host, through its systemd's namespaces."""
        return run("nsenter", "-t", str(self.leader), "-a", "--", "/bin/sh", "-c", script,
                   check=check, timeout=timeout)  # fmt: skip

    def systemctl(self, *args: str, check: bool = True) -> str:
        return self.sh("systemctl " + " ".join(args), check=check).stdout.strip()

    def show(self, unit: str, prop: str) -> str:
        return self.systemctl("show", "-p", prop, "--value", unit)


def boot(name: str, octet: int, hosts: dict[str, str], ssh_key: str) -> Host:
    base = base_rootfs()
    work = CACHE / "hosts" / name
    shutil.rmtree(work, ignore_errors=True)
    for part in ("upper", "work", "merged"):
        (work / part).mkdir(parents=True)
    run("mount", "-t", "overlay", "overlay", "-o",
        f"lowerdir={base},upperdir={work / 'upper'},workdir={work / 'work'}",
        str(work / "merged"))  # fmt: skip
    root = work / "merged"
    address = f"{SUBNET}.{octet}"
    (root / "etc" / "hostname").write_text(name + "\n")
    (root / "etc" / "hosts").write_text(
        "127.0.0.1 localhost\n::1 localhost\n"
        + "".join(f"{ip} {host}\n" for host, ip in hosts.items())
    )
    network = root / "etc" / "systemd" / "network"
    network.mkdir(parents=True, exist_ok=True)
    (network / "10-host0.network").write_text(
        f"[Match]\nName=host0\n\n[Network]\nAddress={address}/24\nLinkLocalAddressing=no\n"
    )
    ssh = root / "root" / ".ssh"
    ssh.mkdir(mode=0o700, parents=True, exist_ok=True)
    (ssh / "authorized_keys").write_text(ssh_key)
    (ssh / "authorized_keys").chmod(0o600)
    host = Host(name, address, root)
    script = "".join(
        f"mkdir -p {cg}/protheon-lab/{name} && echo $$ > {cg}/protheon-lab/{name}/cgroup.procs && "
        for cg in CGROUP_ROOTS if cg.exists()
    ) + (f"exec systemd-nspawn -D {root} -M {name} --boot --register=no --keep-unit "
         f"--console=pipe --network-bridge={BRIDGE} --resolv-conf=off")  # fmt: skip
    log = (work / "console.log").open("wb")
    host.nspawn = subprocess.Popen(["sh", "-c", script], stdin=subprocess.DEVNULL, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    host.leader = _wait_for_leader(host)
    host.sh("systemctl is-system-running --wait || true", timeout=120)
    return host


def _wait_for_leader(host: Host, timeout: float = 60) -> int:
    assert host.nspawn is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if host.nspawn.poll() is not None:
            raise RuntimeError(f"{host.name}: systemd-nspawn exited {host.nspawn.returncode}")
        children = run("pgrep", "-P", str(host.nspawn.pid), check=False).stdout.split()
        for child in children:
            if Path(f"/proc/{child}/root/run/systemd/private").exists():
                return int(child)
        time.sleep(0.2)
    raise RuntimeError(f"{host.name}: systemd did not come up")


def shutdown(host: Host) -> None:
    if host.nspawn is not None and host.nspawn.poll() is None:
        host.nspawn.send_signal(signal.SIGTERM)  # a clean poweroff of the container
        try:
            host.nspawn.wait(timeout=30)
        except subprocess.TimeoutExpired:
            if host.leader:
                os.kill(host.leader, signal.SIGKILL)
            host.nspawn.wait(timeout=30)
    run("ip", "link", "del", f"vb-{host.name}", check=False)
    run("umount", "-l", str(host.root), check=False)
    for cg in CGROUP_ROOTS:
        folder = cg / "protheon-lab" / host.name
        for sub in sorted(folder.glob("**/"), key=lambda p: len(p.parts), reverse=True):
            with contextlib.suppress(OSError):
                sub.rmdir()
