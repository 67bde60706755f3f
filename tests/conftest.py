"""What every test process shares."""

from __future__ import annotations

import signal

# Tests send SIGINT to the commands they start, as a terminal's Ctrl-C does.
# A shell starts background jobs with SIGINT ignored, and an ignored signal
# stays ignored across exec: so a suite started in the background would give
# its commands no way to see Ctrl-C. A handler of our own is reset to the
# default at exec instead, so every command starts as from a terminal.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
