"""Whether a lease holder's process runs, as this host can tell without systemd."""

from __future__ import annotations

import os
import signal
import subprocess

from nixjail.holders import holder_alive, pid_exists


def test_a_zombie_is_not_a_running_holder() -> None:
    # Its parent has not reaped it yet: kill(pid, 0) still succeeds, but it is dead.
    child = subprocess.Popen(["sleep", "60"])
    try:
        assert pid_exists(child.pid)
        os.kill(child.pid, signal.SIGKILL)
        os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # dead, not reaped
        assert not pid_exists(child.pid)
        assert not holder_alive(f"runner-x/{child.pid}", names={"runner-x"})
    finally:
        child.wait()
    assert pid_exists(os.getpid())
    assert holder_alive(f"runner-x/{os.getpid()}", names={"runner-x"})
    # Another host's holder is its deadline's to judge.
    assert holder_alive(f"elsewhere/{child.pid}", names={"runner-x"})
