"""A read-only state directory (a read-only mount, as a colleague or a rescue disk sees it): the
commands that only read work; those that must write say why in one line, exit 2."""

import os
import subprocess

import pytest

from tests.helpers import enqueue, finish, hpod, start_daemon, write_job

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="a read-only bind mount needs root")


@pytest.fixture(scope="module")
def read_only(tmp_path_factory):
    """A state directory with a finished study, seen through a read-only bind mount."""
    tmp_path = tmp_path_factory.mktemp("read-only")
    source, mount = tmp_path / "state", tmp_path / "read-only"
    job_file = write_job(tmp_path, epochs=1)
    enqueue(source, job_file, "--no-estimate")
    finish(start_daemon(source, "--until-idle"))
    mount.mkdir()
    subprocess.run(["mount", "--bind", "-o", "ro", str(source), str(mount)], check=True)
    yield mount, job_file
    subprocess.run(["umount", str(mount)], check=True)


def test_a_read_only_state_directory_is_read_by_every_command_that_only_reads(read_only):
    mount, _ = read_only
    assert not os.access(mount, os.W_OK)
    for command in (["status"], ["status", "--json"], ["show", "1"], ["report"], ["log", "1"], ["export", "1"],
                    ["plan", "--hours", "1"], ["doctor"]):  # fmt: skip
        result = hpod(mount, *command)
        assert result.returncode == 0, (command, result.stderr)
        assert "Traceback" not in result.stderr and result.stdout.strip(), command
    assert "done" in hpod(mount, "status").stdout
    assert "20K h1" in hpod(mount, "report").stdout


def test_commands_that_must_write_a_read_only_state_directory_say_so_in_one_line(read_only):
    mount, job_file = read_only
    for command in (["enqueue", "--budget", "30K", "--horizon", "h1", "--job", job_file, "--no-estimate", "--force"],
                    ["daemon", "--until-idle"], ["cancel", "1"], ["pause", "1"], ["retry", "1", "--trials", "5"],
                    ["edit", "1", "--priority", "3"], ["remove", "1"], ["clean"]):  # fmt: skip
        result = hpod(mount, *command)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1, (command, result.stderr)
        assert "read-only" in lines[0] and "queue.db" in lines[0], lines
