"""`hpod service install|status|uninstall`, tried as a new user would: real units checked by
systemd-analyze, real accounts made with useradd and used with runuser, a real CLI run from
another folder. (systemctl cannot run here: PID 1 is not systemd, so the installer prints the
commands, which is what these tests see.)"""

from __future__ import annotations

import configparser
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import uuid
from pathlib import Path

import pytest

from hpod.supervisor.service import SYSTEM_STATE, Service, render
from tests.conftest import ROOT
from tests.helpers import write_job

HPOD = Path(sys.executable).parent / "hpod"
HAS_ANALYZE = shutil.which("systemd-analyze") is not None
CAN_MAKE_USERS = os.geteuid() == 0 and all(shutil.which(c) for c in ("useradd", "userdel", "usermod", "runuser"))


def parsed(text: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str
    parser.read_string(text)
    return parser


def values(text: str, key: str) -> list[str]:
    """Every value of a directive (configparser keeps only the last of a repeated one)."""
    return [line.split("=", 1)[1] for line in text.splitlines() if line.startswith(f"{key}=")]


def user_env(tmp_path: Path) -> dict:
    """A person's environment with their own config and state folders and no $HPOD_HOME."""
    env = {k: v for k, v in os.environ.items() if k != "HPOD_HOME"}
    env |= {"XDG_CONFIG_HOME": str(tmp_path / "config"), "XDG_STATE_HOME": str(tmp_path / "xdg-state")}
    return env | {"HPOD_SYSCONFDIR": str(tmp_path / "etc")}


def run(args: list[str], env: dict, cwd: Path | str = "/", user: str | None = None) -> subprocess.CompletedProcess:
    command = ["runuser", "-u", user, "--", "env", "-i", *[f"{k}={v}" for k, v in env.items()], *args] if user else args
    return subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=cwd, env=None if user else env)


@pytest.mark.parametrize("system", [False, True])
def test_a_rendered_unit_runs_this_installation_as_a_notify_service_on_the_clis_state_directory(system, tmp_path):
    service = Service(system, tmp_path / "state dir", "hpod")
    text = render(service, HPOD)
    unit = parsed(text)
    section = unit["Service"]
    assert section["Type"] == "notify" and section["KillSignal"] == "SIGTERM"
    assert section["ExecStart"] == f'"{HPOD}" daemon' and HPOD.is_absolute()
    assert f'"HPOD_HOME={tmp_path / "state dir"}"' in values(text, "Environment")
    assert int(section["TimeoutStopSec"]) >= 300 and int(section["WatchdogSec"]) > 0
    assert int(unit["Unit"]["StartLimitBurst"]) <= 10  # a start that keeps failing gives up
    assert "PrivateDevices" not in section  # it would hide the GPUs
    if system:
        assert section["User"] == "hpod" and section["UMask"] == "0007"
        assert section["ReadWritePaths"] == f'"{tmp_path / "state dir"}"'


@pytest.mark.skipif(not HAS_ANALYZE, reason="systemd-analyze is not installed")
@pytest.mark.parametrize("system, state", [(False, None), (True, SYSTEM_STATE), (True, None)])
def test_systemd_analyze_verifies_every_rendered_unit_and_rates_the_system_one_at_3_5_or_less(system, state, tmp_path):
    service = Service(system, state or tmp_path / "state", "root")
    unit = tmp_path / "hpod.service"
    unit.write_text(render(service, HPOD))
    verified = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert verified.returncode == 0, verified.stderr
    if not system:
        return
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", str(unit)], capture_output=True, text=True, timeout=60
    )
    exposure = re.search(r"Overall exposure level for hpod.service: ([0-9.]+)", result.stdout)
    assert exposure is not None, result.stdout[-2000:] + result.stderr[-2000:]
    assert float(exposure.group(1)) <= 3.5, result.stdout
    assert re.search(r"RestrictAddressFamilies=.*AF_INET6", unit.read_text())  # a PostgreSQL on another host


def test_a_user_install_makes_the_cli_in_any_folder_fill_the_queue_the_service_reads(tmp_path):
    env = user_env(tmp_path)
    installed = run([str(HPOD), "service", "install"], env)
    assert installed.returncode == 0, installed.stderr
    assert "systemctl --user daemon-reload && systemctl --user enable --now hpod.service" in installed.stdout
    assert "lingering" in installed.stdout
    unit_path = tmp_path / "config" / "systemd" / "user" / "hpod.service"
    home = [v for v in values(unit_path.read_text(), "Environment") if "HPOD_HOME=" in v]
    service_home = Path(home[0].split("HPOD_HOME=")[1].rstrip('"'))
    assert service_home == tmp_path / "xdg-state" / "hpod"  # systemd's %S/hpod for a user service

    elsewhere = tmp_path / "somewhere" / "else"
    elsewhere.mkdir(parents=True)
    job = write_job(tmp_path, epochs=1)
    queued = run(
        [str(HPOD), "enqueue", "--budget", "20K", "--horizon", "h1", "--job", job, "--no-estimate"], env, elsewhere
    )
    assert queued.returncode == 0, queued.stderr
    assert (service_home / "queue.db").exists() and not (elsewhere / "state").exists()
    shown = run([str(HPOD), "status", "--json"], env, tmp_path)
    assert [j["study"] for j in json.loads(shown.stdout)["jobs"]] == ["daemon-20K-h1"]
    listed = run([str(HPOD), "service", "status"], env)
    assert f"user service: {unit_path}, runs {HPOD}, state {service_home}" in listed.stdout

    removed = run([str(HPOD), "service", "uninstall"], env)
    assert removed.returncode == 0, removed.stderr
    assert not unit_path.exists() and (service_home / "queue.db").exists()  # the studies are kept
    assert run([str(HPOD), "service", "uninstall"], env).returncode == 2


def test_a_system_install_by_someone_other_than_root_is_one_line_exit_2(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("runs as root here")
    result = run([str(HPOD), "service", "install", "--system"], user_env(tmp_path))
    assert result.returncode == 2 and result.stderr.startswith("Error: ") and result.stderr.count("\n") == 1
    assert not (tmp_path / "etc").exists()


def installation(folder: Path, python: str) -> Path:
    """An hpod installation in `folder`: a venv of `python` that finds this checkout and its
    packages through a .pth file, with the console script pip would write."""
    subprocess.run([python, "-m", "venv", "--without-pip", str(folder)], check=True, timeout=120)
    major, minor = sys.version_info[:2]
    site = folder / "lib" / f"python{major}.{minor}" / "site-packages"
    (site / "hpod-checkout.pth").write_text(f"{ROOT}\n{sysconfig.get_path('purelib')}\n")
    script = folder / "bin" / "hpod"
    script.write_text(f"#!{folder / 'bin' / 'python'}\nimport sys\nfrom hpod.cli import main\nsys.exit(main())\n")
    script.chmod(0o755)
    return script


@pytest.fixture
def accounts():
    """Accounts made for one test (a service, a researcher, an outsider), removed after it."""
    made: list[str] = []

    def make(role: str, system: bool = False) -> str:
        name = f"hp{role}{uuid.uuid4().hex[:6]}"
        flags = ["--system"] if system else []
        subprocess.run(["useradd", *flags, "--user-group", "--no-create-home", name], check=True, timeout=60)
        made.append(name)
        return name

    yield make
    for name in made:
        subprocess.run(["userdel", name], capture_output=True, timeout=60)
        subprocess.run(["groupdel", name], capture_output=True, timeout=60)


@pytest.mark.skipif(not CAN_MAKE_USERS, reason="needs root, useradd and runuser")
def test_the_system_installer_refuses_an_installation_its_account_cannot_run_and_says_what_blocks_it(
    tmp_path, accounts
):
    private = tmp_path / "private"  # a 0700 home, as a checkout under someone's home often is
    private.mkdir(mode=0o700)
    script = installation(private / "venv", sys._base_executable)
    service_user = accounts("svc", system=True)
    env = user_env(tmp_path)
    result = run([str(script), "service", "install", "--system", "--service-user", service_user,
                  "--state-dir", str(tmp_path / "srv")], env)  # fmt: skip
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.count("\n") == 1 and f"user {service_user} cannot run {script}" in result.stderr
    assert "may not enter it" in result.stderr and "/opt/hpod" in result.stderr  # the reason and the way out
    assert not (tmp_path / "etc").exists() and not (tmp_path / "srv").exists()  # nothing written


@pytest.fixture
def public_installation():
    """An installation every account can run: Debian's python beside this one's packages, in a
    world-readable folder; skipped where this checkout itself is closed to other accounts."""
    python = f"/usr/bin/python{sys.version_info[0]}.{sys.version_info[1]}"
    if not CAN_MAKE_USERS or not os.path.exists(python):
        pytest.skip(f"needs root, useradd, runuser and {python}")
    folder = Path(tempfile.mkdtemp(prefix="hpod-public-"))
    folder.chmod(0o755)
    script = installation(folder / "venv", python)
    subprocess.run(["chmod", "-R", "a+rX", str(folder)], check=True)
    probe = subprocess.run(["runuser", "-u", "nobody", "--", str(script), "--version"], capture_output=True, text=True)
    if probe.returncode != 0:
        shutil.rmtree(folder)
        pytest.skip(f"other accounts cannot read this checkout or its packages: {probe.stderr.strip()[-200:]}")
    yield script
    shutil.rmtree(folder)


def test_members_of_the_system_services_group_enqueue_and_read_status_and_the_service_trains_it(
    public_installation, accounts
):
    service_user, member, outsider = accounts("svc", system=True), accounts("res"), accounts("out")
    subprocess.run(["usermod", "-aG", service_user, member], check=True, timeout=60)
    base = Path(tempfile.mkdtemp(prefix="hpod-system-"))
    base.chmod(0o755)
    try:
        env = {"HPOD_SYSCONFDIR": str(base / "etc"), "HOME": "/nonexistent", "PATH": os.environ["PATH"]}
        state = base / "srv"
        installed = run([str(public_installation), "service", "install", "--system", "--service-user", service_user,
                         "--state-dir", str(state)], env)  # fmt: skip
        assert installed.returncode == 0, installed.stderr
        assert (base / "etc" / "hpod" / "state_dir").read_text().strip() == str(state)
        job = write_job(base, epochs=1)
        os.chmod(job, 0o644)
        hpod = str(public_installation)
        queued = run([hpod, "enqueue", "--budget", "20K", "--horizon", "h1", "--job", job, "--no-estimate"], env,
                     "/tmp", member)  # fmt: skip
        assert queued.returncode == 0, queued.stderr
        trained = run([hpod, "daemon", "--until-idle"], env | {"HPOD_HOME": str(state)}, "/", service_user)
        assert trained.returncode == 0, trained.stdout + trained.stderr
        shown = run([hpod, "status", "--json"], env, "/tmp", member)
        assert shown.returncode == 0, shown.stderr
        assert [j["state"] for j in json.loads(shown.stdout)["jobs"]] == ["done"]
        refused = run([hpod, "status"], env, "/tmp", outsider)
        assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stdout + refused.stderr
        assert str(state) in refused.stderr and f"usermod -aG {service_user}" in refused.stderr
    finally:
        shutil.rmtree(base)
