"""The daemon and what it supervises: the queue, worker processes (the child and the parent's
handle), running and resuming trials, liveness, systemd, status."""
