"""nixjail.systemd: sockets passed by systemd, and sd_notify, with a real `nixjail api`."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from nixjail import systemd


def test_listen_fds_needs_its_own_pid(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LISTEN_PID", str(os.getpid() + 1))
    monkeypatch.setenv("LISTEN_FDS", "1")
    assert systemd.listen_fds() == []
    assert "LISTEN_FDS" not in os.environ  # children must not take them either
    monkeypatch.delenv("LISTEN_PID", raising=False)
    assert systemd.listen_fds() == []
    monkeypatch.setenv("LISTEN_PID", "garbage")
    monkeypatch.setenv("LISTEN_FDS", "1")
    assert systemd.listen_fds() == []


def test_notify_without_systemd_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert systemd.notify("READY=1") is False


def test_notify_sends_one_datagram(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(str(path))
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        assert systemd.notify("READY=1", "STATUS=up") is True
        assert listener.recv(4096) == b"READY=1\nSTATUS=up"


def test_watchdog_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    assert systemd.watchdog_interval() is None
    monkeypatch.setenv("WATCHDOG_USEC", "4000000")
    assert systemd.watchdog_interval() == 2.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))
    assert systemd.watchdog_interval() is None
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert systemd.watchdog_interval() == 2.0


def _recv_until(sock: socket.socket, wanted: str, timeout: float) -> list[str]:
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            message = sock.recv(4096).decode()
        except TimeoutError:
            break
        seen += message.split("\n")
        if wanted in seen:
            return seen
    raise AssertionError(f"no {wanted} in {seen}")


def test_nixjail_api_serves_on_the_socket_systemd_passes(tmp_path: Path) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    notify_path = tmp_path / "notify"
    notify_sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify_sock.bind(str(notify_path))
    settings = tmp_path / "settings.toml"
    # settings.api.listen would fail if used: the passed socket must win.
    settings.write_text('[api]\nlisten = "256.0.0.1:1"\n'
                        f'[runner]\nkick_socket = "{tmp_path / "kick.sock"}"\n')
    fd = listener.fileno()
    # As systemd does: the socket at fd 3, LISTEN_PID naming the service
    # itself (exec keeps the pid of the wrapper that sets it).
    wrapper = (
        "import os, sys\n"
        f"os.dup2({fd}, 3)\n"
        "os.environ['LISTEN_PID'] = os.environ['WATCHDOG_PID'] = str(os.getpid())\n"
        "os.execv(sys.executable, [sys.executable, '-m', 'nixjail.cli.api', *sys.argv[1:]])\n"
    )
    env = {**os.environ, "LISTEN_FDS": "1", "NOTIFY_SOCKET": str(notify_path),
           "WATCHDOG_USEC": "200000"}
    process = subprocess.Popen(
        [sys.executable, "-c", wrapper, "--settings", str(settings),
         "--spool", str(tmp_path / "spool"), "--run-dir", str(tmp_path / "run")],
        pass_fds=[fd], env=env, stderr=subprocess.PIPE, text=True)
    listener.close()  # the service holds it now
    try:
        _recv_until(notify_sock, "READY=1", timeout=20)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as answer:
            assert answer.status == 200
            assert json.load(answer) == {"status": "ok", "parts": {}}
        assert (tmp_path / "spool" / "submissions").is_dir()
        _recv_until(notify_sock, "WATCHDOG=1", timeout=5)
        process.send_signal(signal.SIGTERM)
        _recv_until(notify_sock, "STOPPING=1", timeout=10)
        assert process.wait(timeout=15) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        notify_sock.close()
        stderr = process.stderr.read() if process.stderr else ""
    assert "Traceback" not in stderr, stderr


def test_nixjail_api_listens_on_listen_without_systemd(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]  # free now; a race is unlikely on loopback
    env = {key: value for key, value in os.environ.items()
           if key not in ("LISTEN_FDS", "LISTEN_PID", "NOTIFY_SOCKET")}
    process = subprocess.Popen(
        [sys.executable, "-m", "nixjail.cli.api", "--listen", f"127.0.0.1:{port}",
         "--spool", str(tmp_path / "spool"), "--run-dir", str(tmp_path / "run")],
        env=env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz",
                                            timeout=5) as answer:
                    assert answer.status == 200
                break
            except OSError:
                assert process.poll() is None, process.stderr.read() if process.stderr else ""
                assert time.monotonic() < deadline, "the API never answered"
                time.sleep(0.1)
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=15) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_a_bad_listen_address_is_a_clear_error(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "nixjail.cli.api", "--listen", "nowhere",
         "--spool", str(tmp_path / "spool"), "--run-dir", str(tmp_path / "run")],
        capture_output=True, text=True, timeout=30, env={
            key: value for key, value in os.environ.items() if key != "LISTEN_FDS"})
    assert result.returncode == 2
    assert "HOST:PORT" in result.stderr
    assert "Traceback" not in result.stderr
