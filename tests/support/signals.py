"""For tests that interrupt a command with SIGINT, as Ctrl-C does.

A shell starts background jobs with SIGINT ignored (`make test &`, nohup, a CI
runner's detached job), children inherit that, and Python then installs no
KeyboardInterrupt handler: the command would never hear the signal. `hear_sigint`,
as the Popen's preexec_fn, gives the child the default disposition back, so the
test sees what a user's Ctrl-C does wherever the suite runs."""

from __future__ import annotations

import signal


def hear_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)
