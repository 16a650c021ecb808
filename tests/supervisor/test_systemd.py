"""sd_notify (the units themselves: test_service.py)."""

import os
import socket

from hpod.supervisor.systemd import notify, watchdog_interval_s


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
