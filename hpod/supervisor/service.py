"""Installing the daemon as a systemd service (`hpod service install|status|uninstall`).

The unit is written from a template in this package with this installation's own executable
by absolute path, and the state directory the CLI resolves is recorded (state.user_record or
state.system_record), so that `hpod enqueue` from any folder fills the queue the service reads.
Where systemd is not the init system, the systemctl commands are printed instead of run.
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import stat
import subprocess
import sys
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

from hpod.errors import HpodError
from hpod.state import SYSCONFDIR_VAR, default_root, system_record, user_record

UNIT = "hpod.service"
SYSTEM_STATE = Path("/var/lib/hpod")  # systemd's StateDirectory=hpod
SYSTEM_USER = "hpod"
UNSAFE_IN_UNIT = ('"', "\\", "\n", "$", "'")  # would need quoting rules beyond a path's


@dataclass(frozen=True)
class Service:
    """One service: the user's own (default) or the machine's (`--system`)."""

    system: bool
    state_dir: Path
    user: str | None = None  # the system service's account

    @property
    def unit_path(self) -> Path:
        if self.system:
            return Path(os.environ.get(SYSCONFDIR_VAR) or "/etc") / "systemd" / "system" / UNIT
        config = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
        return Path(config) / "systemd" / "user" / UNIT

    @property
    def record(self) -> Path:
        return system_record() if self.system else user_record()

    def systemctl(self, *args: str) -> list[str]:
        return ["systemctl", *([] if self.system else ["--user"]), *args]


def executable() -> Path:
    """This installation's `hpod` (the console script beside the interpreter running now)."""
    path = Path(sys.executable).parent / "hpod"
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise HpodError(f"no hpod executable beside {sys.executable}: install hpod with pip into a virtual environment")
    for bad in UNSAFE_IN_UNIT:
        if bad in str(path):
            raise HpodError(f"{path}: a path with {bad!r} cannot go in a unit file; install hpod under a plainer path")
    return path.absolute()


def render(service: Service, exe: Path) -> str:
    """The unit file's text: the package's template with this installation's paths."""
    template = "system.service" if service.system else "user.service"
    text = files("hpod.supervisor").joinpath("units", template).read_text()
    state = str(service.state_dir).replace("%", "%%")
    if service.state_dir == SYSTEM_STATE:
        directory = "StateDirectory=hpod\nStateDirectoryMode=2770"
    else:  # ProtectSystem=strict leaves only this writable
        directory = f'ReadWritePaths="{state}"'
    user = service.user or SYSTEM_USER
    fields = {"executable": str(exe).replace("%", "%%"), "state_dir": state, "state_directory": directory}
    for name, value in (fields | {"user": user, "group": user}).items():
        text = text.replace("{{" + name + "}}", value)  # systemd's own `$VAR` and `%h` stay as they are
    return text


def systemd_running() -> bool:
    """Whether systemd is the init system here (sd_booted's test)."""
    return Path("/run/systemd/system").is_dir()


def run_or_print(service: Service, commands: list[list[str]]) -> list[str]:
    """Run the systemctl commands where systemd runs; otherwise say what to run. Output lines."""
    if not systemd_running():
        shown = " && ".join(" ".join(c) for c in commands)
        return [f"systemd is not the init system here; where it is, run: {shown}"]
    for command in commands:
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise HpodError(f"{' '.join(command)} failed: {(done.stderr or done.stdout).strip()[:300]}")
    return [f"ran: {' && '.join(' '.join(c) for c in commands)}"]


def install(system: bool, state_dir: Path | None, user: str | None) -> list[str]:
    """Write the unit and the record, start the service; what was done, as lines to print."""
    exe = executable()
    if system:
        service = Service(True, (state_dir or SYSTEM_STATE).absolute(), user or SYSTEM_USER)
        lines = prepare_system(service, exe)
    else:
        service = Service(False, (state_dir or Path(os.environ.get("HPOD_HOME") or default_root())).absolute())
        service.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        lines = []
    write_file(service.unit_path, render(service, exe), 0o644)
    write_file(service.record, f"{service.state_dir}\n", 0o644)
    lines += [f"wrote {service.unit_path} (ExecStart={exe} daemon)", f"state directory: {service.state_dir}"]
    lines += run_or_print(service, [service.systemctl("daemon-reload"), service.systemctl("enable", "--now", UNIT)])
    return lines + ([] if system else [lingering()])


def prepare_system(service: Service, exe: Path) -> list[str]:
    """The system service's account, its shared state directory, and the check that the
    account can run this installation (else systemd fails it with 203/EXEC)."""
    if os.geteuid() != 0:
        raise HpodError(f"hpod service install --system writes /etc and creates a user: run it as root (sudo {exe} …)")
    lines = ensure_account(service.user)
    check_runnable(service.user, exe)
    prepare_state_dir(service.state_dir, service.user)
    member = os.environ.get("SUDO_USER")
    if member and member != "root":
        subprocess.run(["usermod", "-aG", service.user, member], check=True, capture_output=True, timeout=60)
        lines.append(f"added {member} to group {service.user} (log in again for it to take effect)")
    lines.append(f"members of group {service.user} can enqueue and read status: sudo usermod -aG {service.user} USER")
    return lines


def ensure_account(name: str) -> list[str]:
    try:
        pwd.getpwnam(name)
        return []
    except KeyError:
        pass
    home = str(SYSTEM_STATE)
    command = ["useradd", "--system", "--user-group", "--home-dir", home, "--no-create-home"]
    done = subprocess.run([*command, "--shell", "/usr/sbin/nologin", name], capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise HpodError(f"useradd {name} failed: {done.stderr.strip()[:300]}")
    return [f"created system user and group {name}"]


def check_runnable(user: str, exe: Path) -> None:
    """Run `hpod --version` as the service's user; refuse, naming what blocks it, if it fails."""
    done = subprocess.run(
        ["runuser", "-u", user, "--", str(exe), "--version"], capture_output=True, text=True, timeout=120, cwd="/"
    )
    if done.returncode == 0:
        return
    blocker = first_blocker(user, exe) or (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]
    raise HpodError(
        f"user {user} cannot run {exe}: {blocker}. Install hpod where {user} can read it, e.g. "
        f"sudo /usr/bin/python3 -m venv /opt/hpod && sudo /opt/hpod/bin/pip install torch==2.13.0 "
        f"{checkout_hint()} && sudo /opt/hpod/bin/hpod service install --system"
    )


def checkout_hint() -> str:
    here = Path(__file__).resolve().parents[2]
    return str(here) if (here / "pyproject.toml").exists() else "hpod"


def first_blocker(user: str, exe: Path) -> str | None:
    """The first folder or file on the way to the executable or its interpreter that `user`
    may not enter or read, described; None when the modes allow it all."""
    account = pwd.getpwnam(user)
    groups = set(os.getgrouplist(user, account.pw_gid))
    for path in chain(exe):
        for folder in reversed(path.parents):
            if not allowed(folder, account.pw_uid, groups, stat.S_IXUSR):
                return f"{folder} is {describe(folder)} and {user} may not enter it (on the way to {path})"
        if not allowed(path, account.pw_uid, groups, stat.S_IRUSR):
            return f"{path} is {describe(path)} and {user} may not read it"
    return None


def chain(exe: Path) -> list[Path]:
    """The script, its interpreter (the shebang) and every link on the way to the real binary."""
    paths = [exe]
    with exe.open("rb") as f:
        first = f.readline().decode(errors="replace").strip()
    link = Path(first[2:].split()[0]) if first.startswith("#!") else None
    while link is not None and link not in paths:
        paths.append(link)
        link = (link.parent / os.readlink(link)) if link.is_symlink() else None
    return paths


def allowed(path: Path, uid: int, groups: set[int], owner_bit: int) -> bool:
    """Whether the mode bits let this uid and groups do what `owner_bit` says (x or r)."""
    try:
        info = path.lstat() if path.is_symlink() else path.stat()
    except OSError:
        return True  # what this process cannot see, runuser's own error names
    if path.is_symlink():
        return True  # a link's own mode means nothing; its target is checked in turn
    if uid == 0:
        return True
    if info.st_uid == uid:
        return bool(info.st_mode & owner_bit)
    if info.st_gid in groups:
        return bool(info.st_mode & (owner_bit >> 3))
    return bool(info.st_mode & (owner_bit >> 6))


def describe(path: Path) -> str:
    info = path.stat()
    return f"{stat.filemode(info.st_mode)} {name_of(pwd.getpwuid, info.st_uid)}:{name_of(grp.getgrgid, info.st_gid)}"


def name_of(lookup, number: int) -> str:
    try:
        return lookup(number)[0]
    except KeyError:
        return str(number)


def prepare_state_dir(root: Path, user: str) -> None:
    """The system service's state directory: owned by its account, setgid and 2770, so that
    its group's members can enqueue and read status (and what they write stays the group's)."""
    account = pwd.getpwnam(user)
    root.mkdir(parents=True, exist_ok=True)
    for path in (root, *root.rglob("*")):
        os.chown(path, account.pw_uid, account.pw_gid, follow_symlinks=False)
        if path.is_symlink():
            continue
        mode = stat.S_IMODE(path.stat().st_mode)
        os.chmod(path, mode | (0o2770 if path.is_dir() else 0o660))


def write_file(path: Path, text: str, mode: int) -> None:
    """Write a unit or a record, readable by everyone (the CLI of every user reads the record)."""
    for folder in reversed([path.parent, *path.parent.parents]):
        if not folder.exists():
            folder.mkdir()
            folder.chmod(0o755)
    path.write_text(text)
    path.chmod(mode)


def uninstall(system: bool) -> list[str]:
    """Stop and disable the service, remove its unit and record; the state directory stays."""
    service = Service(system, Path())
    if not service.unit_path.exists():
        raise HpodError(f"no hpod service is installed ({service.unit_path} does not exist)")
    if system and os.geteuid() != 0:
        raise HpodError("hpod service uninstall --system must run as root")
    disable, reload = service.systemctl("disable", "--now", UNIT), service.systemctl("daemon-reload")
    lines = run_or_print(service, [disable]) if systemd_running() else []
    service.unit_path.unlink()
    service.record.unlink(missing_ok=True)
    lines += run_or_print(service, [reload] if systemd_running() else [disable, reload])
    return [*lines, f"removed {service.unit_path}; the state directory and its studies are kept"]


def status_lines() -> list[str]:
    """Each installed service: its unit, executable, state directory and whether systemd runs it."""
    lines = []
    for system in (False, True):
        service = Service(system, Path())
        kind = "system service" if system else "user service"
        if not service.unit_path.exists():
            lines.append(f"{kind}: not installed ({service.unit_path})")
            continue
        settings = unit_settings(service.unit_path.read_text())
        exe = settings.get("ExecStart", "?").split('"')[1] if '"' in settings.get("ExecStart", "") else "?"
        missing = "" if Path(exe).is_file() else " (MISSING: reinstall with hpod service install)"
        lines.append(f"{kind}: {service.unit_path}, runs {exe}{missing}, state {settings.get('HPOD_HOME', '?')}")
        lines.append(f"  {active(service)}")
        if not system:
            lines.append(f"  {lingering()}")
    return lines


def unit_settings(text: str) -> dict[str, str]:
    """ExecStart and HPOD_HOME of a unit written by `install`."""
    found = {}
    for line in text.splitlines():
        if line.startswith("ExecStart="):
            found["ExecStart"] = line.removeprefix("ExecStart=")
        elif line.startswith('Environment="HPOD_HOME='):
            found["HPOD_HOME"] = line.removeprefix('Environment="HPOD_HOME=').rstrip('"').replace("%%", "%")
    return found


def active(service: Service) -> str:
    if not systemd_running():
        return "systemd is not the init system here: the unit is not running"
    done = subprocess.run(service.systemctl("is-active", UNIT), capture_output=True, text=True, timeout=30)
    return f"systemctl: {done.stdout.strip() or done.stderr.strip()}"


def lingering() -> str:
    """Whether this user's services outlive their login (loginctl's Linger)."""
    user = pwd.getpwuid(os.getuid()).pw_name
    if shutil.which("loginctl") is None or not systemd_running():
        return f"lingering: unknown here; a user service survives logout only after: sudo loginctl enable-linger {user}"
    done = subprocess.run(
        ["loginctl", "show-user", user, "--property=Linger"], capture_output=True, text=True, timeout=30
    )
    if done.stdout.strip() == "Linger=yes":
        return "lingering is on: the service keeps running after you log out"
    return f"lingering is off: the service stops when you log out; to keep it: sudo loginctl enable-linger {user}"
