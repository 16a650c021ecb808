"""The one error type hpod raises for bad input: the CLI prints it as one line and exits 2."""


class HpodError(Exception):
    """Bad input or an impossible request; `exit_code` is what the CLI exits with."""

    exit_code = 2
