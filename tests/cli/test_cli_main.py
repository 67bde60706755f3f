"""The `nixjail` entry point: subcommands, errors, exit statuses."""

from __future__ import annotations

import signal
import subprocess
import time

from cli_harness import NIXJAIL, nixjail

from nixjail import __version__
from nixjail.cli import main


def test_help_lists_the_subcommands() -> None:
    done = nixjail("--help")
    assert done.returncode == 0
    for command in ("submit", "api", "expire-leases"):
        assert f"    {command}" in done.stdout


def test_version() -> None:
    assert nixjail("--version").stdout == f"nixjail {__version__}\n"


def test_usage_errors() -> None:
    # No command, or an unknown one: argparse's own 2, before any command runs.
    assert nixjail().returncode == 2
    assert nixjail("frobnicate").returncode == 2
    # The commands that talk to the API keep 2 for a program's own exit code.
    for argv in (["submit"], ["submit", ".", "--limit", "nonsense"], ["submit", ".", "--bogus"],
                 ["status"], ["status", "x", "--wait", "0"], ["cancel"], ["cancel", "a", "b"],
                 ["list", "--limit", "0"], ["list", "--status", "finished"],
                 ["list", "--all", "--limit", "3"]):
        done = nixjail(*argv)
        assert done.returncode == 64, (argv, done.stderr)
        assert f"nixjail {argv[0]}: error: " in done.stderr, argv


def test_only_the_chosen_subcommand_is_imported() -> None:
    # Building the parser for `submit` must not load the services' libraries.
    code = ("import sys; from nixjail.cli.main import build_parser; "
            "build_parser(['submit', 'x']); print('falcon' in sys.modules)")
    done = subprocess.run([str(NIXJAIL.with_name("python")), "-c", code],
                          capture_output=True, text=True, check=True)
    assert done.stdout == "False\n"


def test_every_subcommand_has_its_parser() -> None:
    for name in main.COMMANDS:
        parser = main.build_parser([name])
        args = parser.parse_args([name, "x"] if name in ("submit", "status", "cancel")
                                 else [name])
        assert callable(args.func), name


def test_ctrl_c_gives_up_with_75(tmp_path) -> None:
    # A submit waiting on a server that never answers, interrupted.
    import socket

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        (tmp_path / "shell.nix").write_text("{}: {}")
        (tmp_path / "run.sh").write_text("true")
        process = subprocess.Popen([str(NIXJAIL), "submit", str(tmp_path), "--api",
                                    f"http://127.0.0.1:{port}"],
                                   stderr=subprocess.PIPE, text=True)
        conn, _ = listener.accept()  # the request is in flight
        time.sleep(0.2)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=10)
        conn.close()
    assert process.returncode == 75
    assert stderr == "\nnixjail: interrupted\n"
