"""`nixjail submit` against a real `nixjail api` subprocess and a toy worker."""

from __future__ import annotations

import base64
import subprocess
import time
from pathlib import Path

from cli_harness import (
    EXAMPLES,
    NIXJAIL,
    SHELL_NIX,
    Api,
    ToyWorker,
    as_json,
    free_port,
    make_dir,
    nixjail,
    start_api,
    stop_api,
)

from nixjail.models import FileContent, FileEncoding, Submission, SubmissionStatus

HELLO = EXAMPLES / "hello"


def test_no_wait_queues_and_shows_it_queued(api: Api) -> None:
    done = nixjail("submit", HELLO, "--no-wait", "--api", api.url,
                   "--stdin", HELLO / "stdin.txt")
    assert done.returncode == 0, done.stderr
    submission_id, status = done.stdout.split()
    assert status == "queued"
    stored = api.spool.get(submission_id)
    assert stored.status is SubmissionStatus.queued
    assert stored.request.shell_nix == (HELLO / "shell.nix").read_text()
    assert stored.request.run_sh == (HELLO / "run.sh").read_text()
    assert stored.request.compile_sh == (HELLO / "compile.sh").read_text()
    assert stored.request.stdin == "nixjail\n"
    # the scripts travel as their own fields, everything else as files
    assert set(stored.request.files) == {"main.sh", "stdin.txt", "README.md"}


def test_waits_prints_the_program_output_and_exits_with_its_code(api: Api) -> None:
    worker = ToyWorker(api.spool, delay_s=0.2)
    worker.start()
    done = nixjail("submit", HELLO, "--api", api.url, "--stdin", HELLO / "stdin.txt")
    ended = worker.finish()
    assert done.returncode == 0, done.stderr
    assert done.stdout == "Hello, nixjail!\n"
    # the summary table on stderr, then the submission's end
    lines = done.stderr.splitlines()
    assert lines[-1] == f"submission {ended.id}: done"
    table = {line.split()[0]: line.split()[1:] for line in lines[-5:-1]}
    assert table["stage"][:2] == ["status", "exit"]
    assert table["compile"][:2] == ["ok", "0"]
    assert table["run"][:2] == ["ok", "0"]


def test_stdin_from_standard_input_and_progress_lines(api: Api, tmp_path: Path) -> None:
    directory = make_dir(tmp_path, {
        "shell.nix": SHELL_NIX,
        "run.sh": "read -r who; echo \"hi $who\"; echo warning >&2; exit 3\n"})
    worker = ToyWorker(api.spool, delay_s=0.5)
    worker.start()
    done = nixjail("submit", directory, "--api", api.url, "--stdin", "-", stdin="you\n")
    worker.finish()
    assert done.returncode == 3
    assert done.stdout == "hi you\n"
    # stages seen while waiting (as timing allows), the program's stderr, the table
    progress, table = done.stderr.split("warning\n")
    assert set(progress.splitlines()) <= {"dependencies: ok (cached, 120 ms)",
                                          "compile: skipped"}
    assert table.splitlines()[3].split()[:3] == ["run", "nonzero_exit", "3"]


def test_signaled_program_exits_128_plus_signal(api: Api, tmp_path: Path) -> None:
    directory = make_dir(tmp_path, {"shell.nix": SHELL_NIX, "run.sh": "kill -9 $$\n"})
    worker = ToyWorker(api.spool)
    worker.start()
    done = nixjail("submit", directory, "--api", api.url)
    worker.finish()
    assert done.returncode == 128 + 9, done.stderr
    assert "sig 9" in done.stderr


def test_failed_compile_exits_65_and_shows_why(api: Api, tmp_path: Path) -> None:
    directory = make_dir(tmp_path, {
        "shell.nix": SHELL_NIX, "compile.sh": "echo 'main.c:1: error' >&2; exit 1\n",
        "run.sh": "echo never\n"})
    worker = ToyWorker(api.spool)
    worker.start()
    done = nixjail("submit", directory, "--api", api.url)
    worker.finish()
    assert done.returncode == 65
    assert done.stdout == ""
    assert "--- compile failed: nonzero_exit\nmain.c:1: error\n" in done.stderr
    assert done.stderr.splitlines()[-1].endswith(": failed")


def test_json_prints_the_final_submission_only(api: Api) -> None:
    worker = ToyWorker(api.spool)
    worker.start()
    done = nixjail("submit", HELLO, "--api", api.url, "--json",
                   "--stdin", HELLO / "stdin.txt")
    worker.finish()
    assert done.returncode == 0
    assert done.stderr == ""
    submission = Submission.model_validate(as_json(done.stdout))
    assert submission.status is SubmissionStatus.done
    assert submission.stages.run is not None
    assert submission.stages.run.stdout == "Hello, nixjail!\n"


def test_no_wait_json(api: Api) -> None:
    done = nixjail("submit", HELLO, "--api", api.url, "--no-wait", "--json")
    assert done.returncode == 0
    assert as_json(done.stdout)["status"] == "queued"


def test_directory_without_run_sh_is_a_usage_error(tmp_path: Path) -> None:
    directory = make_dir(tmp_path, {"shell.nix": SHELL_NIX, "compile.sh": "true\n"})
    done = nixjail("submit", directory, "--api", f"http://127.0.0.1:{free_port()}")
    assert done.returncode == 64
    assert done.stderr == f"nixjail: {directory} has no run.sh (or give --environment)\n"


def test_missing_directory_is_a_usage_error(tmp_path: Path) -> None:
    done = nixjail("submit", tmp_path / "nowhere")
    assert done.returncode == 64
    assert done.stderr == f"nixjail: {tmp_path / 'nowhere'} is not a directory\n"


def test_symlink_outside_the_directory_is_refused(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("not for sending")
    directory = make_dir(tmp_path, {"shell.nix": SHELL_NIX, "run.sh": "cat key\n"})
    (directory / "key").symlink_to(secret)
    done = nixjail("submit", directory, "--no-wait")
    assert done.returncode == 64
    assert done.stderr.startswith(f"nixjail: {directory / 'key'} is a symlink to {secret}, "
                                  f"outside {directory}")
    assert "Traceback" not in done.stderr


def test_server_refusal_names_the_field_and_reason(api: Api) -> None:
    done = nixjail("submit", HELLO, "--api", api.url, "--wall-time", "1000")
    assert done.returncode == 64
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("nixjail: ")
    assert "wall_time_s" in done.stderr
    assert "above the maximum 60" in done.stderr
    assert "(HTTP 4" in done.stderr


def test_bad_limit_flag_is_refused_before_sending(tmp_path: Path) -> None:
    done = nixjail("submit", HELLO, "--limit", "run.wall_time_s=-1")
    assert done.returncode == 64
    assert done.stderr.startswith("nixjail: limits.run.wall_time_s: ")
    done = nixjail("submit", HELLO, "--limit", "link.memory_mib=5")
    assert done.returncode == 64
    assert "unknown stage 'link'" in done.stderr


def test_limit_flags_reach_the_request(api: Api) -> None:
    done = nixjail("submit", HELLO, "--api", api.url, "--no-wait", "--no-cache",
                   "--wall-time", "2.5", "--memory", "128", "--output", "16",
                   "--limit", "compile.memory_mib=512", "--limit", "run.processes=8")
    assert done.returncode == 0, done.stderr
    request = api.spool.get(done.stdout.split()[0]).request
    assert request.cache is False
    assert request.limits.run.model_dump(exclude_none=True) == {
        "wall_time_s": 2.5, "memory_mib": 128, "output_kib": 16, "processes": 8}
    assert request.limits.compile.memory_mib == 512
    assert request.limits.dependencies.model_dump(exclude_none=True) == {}


def test_binary_files_go_base64(api: Api, tmp_path: Path) -> None:
    blob = bytes(range(256))
    directory = make_dir(tmp_path, {
        "shell.nix": SHELL_NIX, "run.sh": "od -c data/blob.bin\n",
        "data/blob.bin": blob, "data/notes.txt": "plain text\n", "nul.txt": "a\x00b"})
    inside = directory / "data" / "alias.txt"
    inside.symlink_to(directory / "data" / "notes.txt")
    done = nixjail("submit", directory, "--api", api.url, "--no-wait")
    assert done.returncode == 0, done.stderr
    files = api.spool.get(done.stdout.split()[0]).request.files
    assert set(files) == {"data/blob.bin", "data/notes.txt", "data/alias.txt", "nul.txt"}
    assert files["data/blob.bin"] == FileContent(
        content=base64.b64encode(blob).decode(), encoding=FileEncoding.base64)
    assert isinstance(files["nul.txt"], FileContent)
    assert files["data/notes.txt"] == files["data/alias.txt"] == "plain text\n"


HIDDEN = {".env": "KEY=1\n", ".netrc": "machine x login y password z\n",
          ".git/config": "[core]\n", "src/.secret": "s\n", "src/.cache/blob": "b\n",
          "src/main.sh": "echo hi\n"}


def test_hidden_files_stay_home_and_are_named(api: Api, tmp_path: Path) -> None:
    directory = make_dir(tmp_path, {"shell.nix": SHELL_NIX, "run.sh": "sh src/main.sh\n",
                                    **HIDDEN})
    done = nixjail("submit", directory, "--api", api.url, "--no-wait")
    assert done.returncode == 0, done.stderr
    files = api.spool.get(done.stdout.split()[0]).request.files
    assert set(files) == {"src/main.sh"}
    # A hidden directory is named once, not file by file.
    assert done.stderr == (
        f"nixjail: left out 5 hidden entries of {directory} (--include-hidden sends them): "
        ".env, .git/, .netrc, src/.cache/, src/.secret\n")


def test_include_hidden_sends_them(api: Api, tmp_path: Path) -> None:
    directory = make_dir(tmp_path, {"shell.nix": SHELL_NIX, "run.sh": "sh src/main.sh\n",
                                    **HIDDEN})
    done = nixjail("submit", directory, "--api", api.url, "--no-wait", "--include-hidden")
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    request = api.spool.get(done.stdout.split()[0]).request
    assert request.files == HIDDEN


def test_too_large_file_is_refused(tmp_path: Path) -> None:
    directory = make_dir(tmp_path, {"shell.nix": SHELL_NIX, "run.sh": "true\n"})
    with open(directory / "big.bin", "wb") as big:
        big.truncate(9 * 1024 * 1024)
    done = nixjail("submit", directory)
    assert done.returncode == 64
    assert done.stderr == (f"nixjail: {directory / 'big.bin'} is 9.0 MiB; "
                           "a submission carries at most 8.0 MiB\n")


def test_timeout_gives_up_waiting_but_leaves_the_submission(api: Api) -> None:
    done = nixjail("submit", HELLO, "--api", api.url, "--timeout", "0.5")
    assert done.returncode == 75
    assert "gave up waiting after 0.5 s; submission " in done.stderr
    submission_id = done.stderr.split("submission ")[1].split()[0]
    assert api.spool.get(submission_id).status is SubmissionStatus.queued


def test_unreachable_api_is_one_line(tmp_path: Path) -> None:
    done = nixjail("submit", HELLO, "--api", f"http://127.0.0.1:{free_port()}")
    assert done.returncode == 75
    assert done.stderr.startswith("nixjail: cannot reach the nixjail API at http://127.0.0.1:")
    assert done.stderr.count("\n") == 1


def test_api_url_from_the_environment(api: Api) -> None:
    done = nixjail("submit", HELLO, "--no-wait", env={"NIXJAIL_API": api.url})
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[1] == "queued"


def test_waiting_rides_out_an_api_crash_and_restart(api: Api, tmp_path: Path) -> None:
    waiting = subprocess.Popen([str(NIXJAIL), "submit", str(HELLO), "--api", api.url,
                                "--stdin", str(HELLO / "stdin.txt")],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # Crash only once the submission is stored and its POST answered: the
    # command then waits by polling, which it may repeat.
    while not api.spool.list()[0]:
        time.sleep(0.05)
    time.sleep(0.5)
    stop_api(api, crash=True)
    time.sleep(1)  # the waiting command finds nobody listening for a while
    restarted = start_api(tmp_path, settings_path=api.settings_path)
    try:
        worker = ToyWorker(restarted.spool)
        worker.start()
        stdout, stderr = waiting.communicate(timeout=30)
        worker.finish()
    finally:
        stop_api(restarted)
    assert waiting.returncode == 0, stderr
    assert stdout == "Hello, nixjail!\n"


def test_bearer_token_from_flag_file_or_environment(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("submitter s3cret\n")
    api = start_api(tmp_path, api_extra=f'tokens_file = "{tokens}"')
    try:
        refused = nixjail("submit", HELLO, "--api", api.url, "--no-wait")
        assert refused.returncode == 64
        assert refused.stderr.startswith("nixjail: ") and "(HTTP 401)" in refused.stderr
        token_file = tmp_path / "token"
        token_file.write_text("s3cret\n")
        for how in (["--token", "s3cret"], ["--token-file", str(token_file)]):
            done = nixjail("submit", HELLO, "--api", api.url, "--no-wait", *how)
            assert done.returncode == 0, done.stderr
        done = nixjail("submit", HELLO, "--api", api.url, "--no-wait",
                       env={"NIXJAIL_TOKEN": "s3cret"})
        assert done.returncode == 0, done.stderr
    finally:
        stop_api(api)
