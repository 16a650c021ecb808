"""Commands that only read create nothing: a `--storage` that names a file which is not a study's
database (text, a directory, a FIFO, a missing file, the queue) is one line, exit 2, and no file,
lock file or table appears beside it."""

import os
import sqlite3

from tests.helpers import hpod


def not_studies(folder) -> list[str]:
    text, missing, fifo, queue = folder / "passwd", folder / "missing.db", folder / "fifo", folder / "queue.db"
    text.write_text("root:x:0:0:root:/root:/bin/bash\n")
    os.mkfifo(fifo)
    sqlite3.connect(queue).execute("CREATE TABLE jobs (id INTEGER)").connection.commit()
    return [str(p) for p in (text, missing, folder, fifo, queue)]


def test_a_storage_that_is_no_study_database_is_refused_by_reading_commands_which_create_nothing(tmp_path):
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    paths = not_studies(folder)
    before = sorted(os.listdir(folder))
    for path in paths:  # `show` opens a storage as `status` does: once is enough
        commands = (
            ["status", "--storage"],
            ["report", "--storage"],
            *([["show", "s", "--storage"]] * (path == paths[0])),
        )
        for command in commands:
            result = hpod(tmp_path / "state", *command, f"sqlite:///{path}", timeout=60)
            lines = result.stderr.strip().splitlines()
            assert result.returncode == 2 and len(lines) == 1, (command, path, result.stderr)
            assert "root:x" not in result.stderr  # a file's content never shows in a message
            if path.endswith("passwd"):  # a file named by mistake is not called hpod's own, damaged
                assert "is not an SQLite database: name another file" in result.stderr, result.stderr
    assert sorted(os.listdir(folder)) == before
    assert [r[0] for r in sqlite3.connect(folder / "queue.db").execute("SELECT name FROM sqlite_master")] == ["jobs"]
