import configparser
import os
import re
import shutil
import socket
import subprocess

import pytest

from hpod.supervisor.systemd import notify, watchdog_interval_s
from tests.conftest import ROOT

UNITS = ROOT / "systemd"


def unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str
    parser.read(UNITS / name)
    return parser


@pytest.mark.parametrize("name", ["hpod.service", "hpod-user.service"])
def test_units_run_the_daemon_as_a_notify_service_that_stops_gracefully(name):
    service = unit(name)["Service"]
    assert service["Type"] == "notify"
    assert service["ExecStart"].endswith("hpod daemon")
    assert service["StateDirectory"] == "hpod" and service["Environment"]
    assert service["Restart"] == "on-failure" and service["KillSignal"] == "SIGTERM"
    assert int(service["TimeoutStopSec"]) >= 300 and int(service["WatchdogSec"]) > 0
    assert service["NoNewPrivileges"] == "yes" and service["PrivateTmp"] == "yes"
    assert "PrivateDevices" not in service  # it would hide the GPUs


def test_the_system_unit_runs_as_a_user_with_hardening():
    service = unit("hpod.service")["Service"]
    assert service["User"] and service["ProtectSystem"] == "strict"
    assert unit("hpod.service")["Install"]["WantedBy"] == "multi-user.target"
    assert "enable-linger" in (UNITS / "hpod-user.service").read_text()


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_analyze_verifies_the_system_unit(tmp_path):
    text = (UNITS / "hpod.service").read_text().replace("/opt/hpod/.venv/bin/hpod", "/bin/true")
    (tmp_path / "hpod.service").write_text(text)
    result = subprocess.run(
        ["systemd-analyze", "verify", str(tmp_path / "hpod.service")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


def test_notify_is_silent_outside_systemd(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert notify("READY=1") is False
    monkeypatch.setenv("NOTIFY_SOCKET", "/nonexistent/socket")
    assert notify("READY=1") is False


def test_notify_sends_datagrams_to_the_socket_and_the_abstract_namespace(monkeypatch, tmp_path):
    for address, env in ((str(tmp_path / "n.sock"), str(tmp_path / "n.sock")), ("\0hpod-test", "@hpod-test")):
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.bind(address)
            monkeypatch.setenv("NOTIFY_SOCKET", env)
            assert notify("STATUS=trial 3 epoch 2")
            assert sock.recv(100) == b"STATUS=trial 3 epoch 2"


def test_watchdog_interval_is_half_of_watchdog_usec_for_this_process(monkeypatch):
    monkeypatch.setenv("WATCHDOG_USEC", "10000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert watchdog_interval_s() == 5.0
    monkeypatch.setenv("WATCHDOG_PID", "1")
    assert watchdog_interval_s() is None


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed here")
def test_the_system_unit_is_hardened_to_an_exposure_of_3_5_or_less_and_keeps_gpus_and_network():
    unit = ROOT / "systemd" / "hpod.service"
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", str(unit)], capture_output=True, text=True, timeout=60
    )
    exposure = re.search(r"Overall exposure level for hpod.service: ([0-9.]+)", result.stdout)
    assert exposure is not None, result.stdout[-2000:] + result.stderr[-2000:]
    assert float(exposure.group(1)) <= 3.5, result.stdout
    text = unit.read_text()
    assert "DeviceAllow=char-nvidia-frontend rw" in text and "\nPrivateDevices=" not in text  # GPUs stay visible
    assert re.search(r"RestrictAddressFamilies=.*AF_INET6", text)  # a PostgreSQL storage on another host
