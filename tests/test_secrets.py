"""A storage password never reaches any output: URLs with a password in each form SQLAlchemy
accepts, against a real PostgreSQL server (its trust authentication ignores the password) and
against one that cannot be reached, through every command that prints a job or its storage."""

import random
import string
import urllib.parse

from tests.helpers import hpod, write_job


def passwords(n: int, seed: int) -> list[str]:
    """Generated passwords, with characters that need percent-encoding in a URL."""
    rng = random.Random(seed)
    alphabet = string.ascii_letters + string.digits + "!$%&*+,;=@:/?#[]~"
    return [f"pw{''.join(rng.choice(alphabet) for _ in range(rng.randint(8, 24)))}" for _ in range(n)]


def with_password(url: str, form: str, password: str) -> str:
    """`url` (postgresql+psycopg://postgres@/db?host=…) with the password in user-info or in the query."""
    quoted = urllib.parse.quote(password, safe="")
    if form == "userinfo":
        return url.replace("postgres@", f"postgres:{quoted}@", 1)
    return f"{url}&{form}={quoted}"


def assert_secret_kept(result, password: str) -> None:
    text = result.stdout + result.stderr
    for shown in {password, urllib.parse.quote(password, safe=""), urllib.parse.quote_plus(password)}:
        assert shown not in text, (shown, text[-2000:])


def test_no_command_prints_a_storage_password_in_any_url_form(tmp_path, postgres_url, postgres_cluster):
    job_file = write_job(tmp_path, epochs=1)
    state = tmp_path / "state"
    gone = f"postgresql+psycopg://postgres@/nothing?host={tmp_path}"  # no server listens there
    forms = ("userinfo", "password", "sslpassword")
    secrets = passwords(len(forms), seed=7)
    results = []
    for number, (form, password) in enumerate(zip(forms, secrets, strict=True)):
        enqueue = ["enqueue", "--budget", f"{20 + number}K", "--horizon", "h1", "--job", job_file, "--no-estimate"]
        queued = hpod(state, *enqueue, "--storage", with_password(postgres_url, form, password))
        assert queued.returncode == 0, queued.stderr
        refused = hpod(state, *enqueue, "--storage", with_password(gone, form, password))
        assert refused.returncode == 2 and "cannot be opened" in refused.stderr
        results += [queued, refused, hpod(state, "show", str(number + 1), "--json")]
    url = with_password(postgres_url, forms[0], secrets[0])
    for command in (
        ["status"],
        ["status", "--json"],
        ["status", "--storage", url],
        ["show", "1"],
        ["plan", "--hours", "1", "--json"],
    ):
        results.append(hpod(state, *command))
        assert results[-1].returncode == 0, (command, results[-1].stderr)
    for result in results:
        for password in secrets:
            assert_secret_kept(result, password)
