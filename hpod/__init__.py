"""hpod: a resumable job-queue daemon for architecture searches on one ML workstation."""

from hpod.errors import HpodError
from hpod.study.budget import format_budget, parse_budget, parse_horizon

__all__ = ["HpodError", "format_budget", "parse_budget", "parse_horizon"]
