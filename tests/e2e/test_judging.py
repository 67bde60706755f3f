"""Judging through the API: test cases compiled once and judged case by case,
a catalog environment named instead of a shell.nix, binary-safe I/O, output
files, and a signed callback at a loopback receiver."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_stack import BUILD_COUNTERS, Stack, cache_setup, counted_shell, counter_file, start_stack

from callback_receiver import Receiver

pytestmark = [pytest.mark.docker, pytest.mark.nix]

# One program, told by its first argument what to do: each case exercises
# one verdict. compile.sh logs each run of it, so a case sees how often it ran.
PROGRAM = """\
case "$1" in
  sum) read a b; echo $((a + b)) ;;
  wrong) echo 4 ;;
  spin) while :; do :; done ;;
  crash) echo "about to fail" >&2; exit 3 ;;
  odd) echo 7 ;;
  write) echo secret > leak.txt; echo wrote ;;
  look) if [ -e leak.txt ]; then echo seen; else echo unseen; fi ;;
esac
busybox test "$(busybox wc -l < compiled.log)" -eq 1 || { echo "compiled again" >&2; exit 9; }
"""
COMPILE = "busybox sh -n prog.sh && busybox cp prog.sh prog && echo compiled >> compiled.log"
EVEN_CHECKER = """\
n=$(busybox cat "$3")
if [ $((n % 2)) -eq 0 ]; then echo "$n is even"; exit 0; fi
echo "$n is odd, expected an even number"; exit 1
"""

SECRET = "callback-secret-" + secrets.token_hex(8)


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    # The first callback is answered 500, so it must come again.
    receiving = Receiver([500], path="/hooks/")
    yield receiving
    receiving.close()


@pytest.fixture(scope="module")
def catalog_counter() -> Iterator[Path]:
    BUILD_COUNTERS.mkdir(exist_ok=True)
    BUILD_COUNTERS.chmod(0o1777)
    yield counter_file()


@pytest.fixture(scope="module")
def judging_stack(tmp_path_factory: pytest.TempPathFactory, receiver: Receiver,
                  catalog_counter: Path) -> Iterator[Stack]:
    base = tmp_path_factory.mktemp("judging")
    (base / "callback.key").write_text(SECRET)
    shell = counted_shell(catalog_counter, secrets.token_hex(8))
    extra = f"""
[callbacks]
allowed_prefixes = ["{receiver.url}"]
secret_file = "{base / 'callback.key'}"
backoff_s = 0.2

[[environments]]
name = "busybox-sh"
version = "1.36"
description = "The POSIX shell of busybox"
aliases = ["sh"]
shell_nix = {json.dumps(shell)}
main_file = "main.sh"
compile_sh = "busybox sh -n main.sh"
run_sh = "busybox sh main.sh"
"""
    stack_cache = cache_setup(base)
    for stack in start_stack(base, cache=stack_cache, extra_settings=extra):
        stack.cache = stack_cache
        yield stack


def test_cases_get_their_verdicts_from_one_compile(judging_stack: Stack) -> None:
    cases = [
        {"name": "sum", "args": ["sum"], "stdin": "2 3\n", "expected_output": "5\n"},
        {"name": "wrong", "args": ["wrong"], "stdin": "2 3\n", "expected_output": "5\n"},
        {"name": "spin", "args": ["spin"], "limits": {"cpu_time_s": 1, "wall_time_s": 20}},
        {"name": "crash", "args": ["crash"]},
        {"name": "odd", "args": ["odd"],
         "checker": {"kind": "custom", "check_sh": EVEN_CHECKER}},
        {"name": "write", "args": ["write"], "expected_output": "wrote"},
        {"name": "look", "args": ["look"], "expected_output": "unseen"},
    ]
    submission = judging_stack.submit(
        files={"prog.sh": PROGRAM}, compile_sh=COMPILE, run_sh='busybox sh ./prog "$@"',
        tests=cases, limits={"run": {"wall_time_s": 20}}, wait=180)
    assert submission["status"] == "done", submission
    assert submission["stages"]["compile"]["status"] == "ok"
    assert submission["stages"]["run"] is None  # the cases hold the runs
    results = {case["name"]: case for case in submission["tests"]}
    verdicts = {name: case["verdict"] for name, case in results.items()}
    assert verdicts == {"sum": "accepted", "wrong": "wrong_answer", "spin": "time_limit",
                        "crash": "runtime_error", "odd": "wrong_answer",
                        "write": "accepted", "look": "accepted"}, submission["tests"]
    # Every case that ran its program to the end found compile.sh's log
    # with exactly one line: compile ran once, before them all.
    for name in ("sum", "wrong", "odd", "write", "look"):
        assert "compiled again" not in results[name]["stderr"], results[name]
    assert results["wrong"]["message"] == "line 1: expected '5', got '4'"
    assert results["odd"]["message"] == "7 is odd, expected an even number\n"
    assert results["spin"]["status"] == "time_limit"
    assert results["spin"]["cpu_time_ms"] >= 1000
    assert (results["crash"]["exit_code"], results["crash"]["stderr"]) == (3, "about to fail\n")
    for case in submission["tests"]:
        assert case["started_at"] <= case["finished_at"], case
    judgement = submission["judgement"]
    assert (judgement["verdict"], judgement["passed"], judgement["total"]) == (
        "wrong_answer", 3, 7)
    assert judgement["counts"] == {"accepted": 3, "wrong_answer": 2, "time_limit": 1,
                                   "runtime_error": 1}
    assert judgement["max_cpu_time_ms"] == results["spin"]["cpu_time_ms"]
    assert submission["finished_at"] >= submission["tests"][-1]["finished_at"]


def test_stop_on_failure_skips_the_cases_after_the_first_failure(
        judging_stack: Stack) -> None:
    cases = [{"name": n, "args": [n], "expected_output": "unseen"}
             for n in ("look", "wrong", "look")]
    submission = judging_stack.submit(
        files={"prog.sh": PROGRAM}, compile_sh=COMPILE, run_sh='busybox sh ./prog "$@"',
        tests=cases, stop_on_failure=True)
    assert [case["verdict"] for case in submission["tests"]] == [
        "accepted", "wrong_answer", "skipped"], submission["tests"]
    assert submission["judgement"]["verdict"] == "wrong_answer"


def test_a_failed_compile_is_every_cases_compile_error(judging_stack: Stack) -> None:
    submission = judging_stack.submit(
        files={"prog.sh": "if then fi\n"}, compile_sh=COMPILE, run_sh="busybox sh ./prog",
        tests=[{"name": "a"}, {"name": "b"}])
    assert submission["status"] == "failed", submission
    assert [case["verdict"] for case in submission["tests"]] == ["compile_error"] * 2
    assert submission["judgement"]["verdict"] == "compile_error"


def test_a_catalog_environment_is_built_at_start_and_named(
        judging_stack: Stack, catalog_counter: Path) -> None:
    deadline = time.monotonic() + 120
    while True:
        status, listing = judging_stack.request("GET", "/v1/environments")
        assert status == 200, listing
        (entry,) = listing["environments"]
        if entry["built"]:
            break
        assert time.monotonic() < deadline, "the catalog environment was never built"
        time.sleep(0.5)
    assert (entry["name"], entry["version"], entry["aliases"]) == ("busybox-sh", "1.36", ["sh"])
    submission = judging_stack.submit(shell_nix=None, environment="sh",
                                      files={"main.sh": 'echo "hello from $0"'})
    assert submission["status"] == "done", submission
    dependencies = submission["stages"]["dependencies"]
    assert (dependencies["status"], dependencies["cached"]) == ("ok", True), dependencies
    assert submission["stages"]["compile"]["status"] == "ok"  # the catalog's compile_sh
    assert submission["stages"]["run"]["stdout"] == "hello from main.sh\n"
    # Built once, when the cache builder started; never for the submission.
    assert len(catalog_counter.read_text().splitlines()) == 1


def test_binary_input_and_output_round_trip_byte_for_byte(judging_stack: Stack) -> None:
    blob = bytes(range(256)) * 4 + b"\xff\xfe\x00tail"
    encoded = {"content": base64.b64encode(blob).decode(), "encoding": "base64"}
    submission = judging_stack.submit(
        files={"blob.bin": encoded}, stdin=encoded, output_files=["out/*.bin"],
        run_sh="busybox cat blob.bin; busybox cat >&2; busybox mkdir out; "
               "busybox cp blob.bin out/copy.bin; busybox echo text > out/note.txt")
    assert submission["status"] == "done", submission
    run = submission["stages"]["run"]
    assert (run["stdout_encoding"], run["stderr_encoding"]) == ("base64", "base64")
    assert base64.b64decode(run["stdout"]) == blob
    assert base64.b64decode(run["stderr"]) == blob
    assert set(run["files"]) == {"out/copy.bin"}
    assert run["files"]["out/copy.bin"]["encoding"] == "base64"
    assert base64.b64decode(run["files"]["out/copy.bin"]["content"]) == blob

    text = judging_stack.submit(run_sh="busybox echo plain", output_encoding="base64")
    assert text["stages"]["run"]["stdout_encoding"] == "base64"
    assert base64.b64decode(text["stages"]["run"]["stdout"]) == b"plain\n"


def test_a_callback_arrives_signed_and_is_retried_after_a_500(
        judging_stack: Stack, receiver: Receiver) -> None:
    submission = judging_stack.submit(run_sh="busybox echo hi",
                                      callback_url=receiver.url + "done")
    assert submission["status"] == "done", submission
    requests = receiver.wait_for(2, timeout_s=30)
    assert len(requests) == 2, requests
    for path, headers, body in requests:
        assert path == "/hooks/done"
        stamp = headers["X-Nixjail-Timestamp"]
        expected = hmac.new(SECRET.encode(), f"{stamp}.".encode() + body,
                            hashlib.sha256).hexdigest()
        assert hmac.compare_digest(headers["X-Nixjail-Signature"], f"sha256={expected}")
        summary = json.loads(body)
        assert (summary["id"], summary["status"]) == (submission["id"], "done")
        assert summary["finished_at"] == submission["finished_at"]
    assert requests[0][2] == requests[1][2]  # the same summary, sent again


def test_a_callback_outside_the_allowed_prefixes_is_refused(judging_stack: Stack,
                                                            receiver: Receiver) -> None:
    status, body = judging_stack.request("POST", "/v1/submissions", {
        "shell_nix": "x", "run_sh": "y", "callback_url": "http://127.0.0.1:1/elsewhere"})
    assert status == 422, body
    assert body["errors"] == [{"field": "callback_url",
                               "reason": "not under a prefix this server allows"}]
