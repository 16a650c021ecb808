"""hpod: a resumable job-queue daemon for architecture searches on one ML workstation."""

from hpod.budget import format_budget, parse_budget, parse_horizon
from hpod.errors import HpodError

__all__ = ["HpodError", "format_budget", "parse_budget", "parse_horizon"]
