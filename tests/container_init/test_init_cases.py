"""Container init on this host: test cases, checkers, arguments, binary output and
output files, with the real nsjail."""

from __future__ import annotations

import base64
from typing import Any

from init_helpers import limits, make_job

PROGRAM = """\
read -r a b
case "$a" in
  sleep) while :; do :; done ;;
  crash) exit 3 ;;
esac
echo $((a + b))
"""


def case(stdin: str, expected: str | None, **fields: Any) -> dict[str, Any]:
    return {"name": fields.pop("name", None), "stdin": stdin, "args": fields.pop("args", []),
            "files": fields.pop("files", {}), "expected_output": expected,
            "limits": fields.pop("limits", limits()),
            "checker": fields.pop("checker", {"kind": "lines"}), **fields}


def cases_of(run) -> list[dict[str, Any]]:
    finished = [e for e in run.events if e["event"] == "case_finished"]
    assert [e["index"] for e in finished] == list(range(len(finished))), run.events
    return [e["result"] for e in finished]


def test_each_case_gets_its_verdict_and_compile_runs_once(run_init):
    job = make_job(
        "bash ./add.sh",
        compile_sh="echo compiled >> compile.log; cp prog add.sh",
        files={"prog": PROGRAM},
        tests=[
            case("1 2\n", "3\n", name="sum"),
            case("2 2\n", "5\n", name="wrong"),
            case("sleep 0\n", "0\n", limits=limits(wall_time_s=1, cpu_time_s=0.5)),
            case("crash 0\n", "0\n"),
            case("1 1\n", "2   \n\n\n"),
        ],
    )
    run = run_init(job)
    assert run.returncode == 0, run.stderr
    results = cases_of(run)
    assert [r["verdict"] for r in results] == [
        "accepted", "wrong_answer", "time_limit", "runtime_error", "accepted"]
    assert results[0]["name"] == "sum" and results[0]["stdout"] == "3\n"
    assert results[1]["message"] == "line 1: expected '5', got '4'"
    assert results[3]["exit_code"] == 3
    assert all(r["started_at"] <= r["finished_at"] for r in results)
    compile_events = [e for e in run.events if e.get("stage") == "compile"
                      and e["event"] == "stage_finished"]
    assert len(compile_events) == 1
    assert not [e for e in run.events if e["event"] == "stage_finished" and e["stage"] == "run"]


def test_a_case_does_not_see_what_another_wrote(run_init):
    job = make_job(
        'ls; echo "$1" > "mark-$1"',
        compile_sh="touch built",
        tests=[case("", None, args=["one"]), case("", None, args=["two"])],
    )
    results = cases_of(run_init(job))
    assert results[0]["stdout"].split() == ["built"]
    assert results[1]["stdout"].split() == ["built"]
    assert all(r["verdict"] == "accepted" for r in results)


def test_stop_on_failure_skips_the_rest(run_init):
    job = make_job("echo no", stop_on_failure=True,
                   tests=[case("", "yes\n"), case("", "no\n"), case("", "no\n")])
    assert [r["verdict"] for r in cases_of(run_init(job))] == [
        "wrong_answer", "skipped", "skipped"]


def test_a_failed_compile_leaves_every_case_a_compile_error(run_init):
    job = make_job("true", compile_sh="exit 1", tests=[case("", "x"), case("", "y")])
    results = cases_of(run_init(job))
    assert [(r["status"], r["verdict"]) for r in results] == [
        ("skipped", "compile_error"), ("skipped", "compile_error")]


def test_checkers(run_init):
    tokens = {"kind": "tokens"}
    close = {"kind": "float", "abs_tol": 0.01, "rel_tol": 0}
    job = make_job("printf '%s' \"$1\"", tests=[
        case("", "1  2\n3", args=["1 2 3"], checker=tokens),
        case("", "1 2 4", args=["1 2 3"], checker=tokens),
        case("", "3.14159", args=["3.145"], checker=close),
        case("", "3.14159", args=["3.16"], checker=close),
        case("", "a b", args=["a b"], checker={"kind": "exact"}),
        case("", "a b\n", args=["a b"], checker={"kind": "exact"}),
    ])
    assert [r["verdict"] for r in cases_of(run_init(job))] == [
        "accepted", "wrong_answer", "accepted", "wrong_answer", "accepted", "wrong_answer"]


def test_a_custom_checker_decides_and_gives_its_message(run_init):
    check_sh = """\
read -r want < "$2"
read -r got < output
if [ "$got" -ge "$want" ]; then echo "at least $want"; exit 0; fi
echo "$got is below $want"; exit 1
"""
    broken = "echo cannot decide; exit 7"
    job = make_job("echo $1", tests=[
        case("", "10", args=["12"], checker={"kind": "custom", "check_sh": check_sh}),
        case("", "10", args=["8"], checker={"kind": "custom", "check_sh": check_sh}),
        case("", "10", args=["8"], checker={"kind": "custom", "check_sh": broken}),
    ])
    results = cases_of(run_init(job))
    assert [(r["verdict"], r["message"].strip()) for r in results[:2]] == [
        ("accepted", "at least 10"), ("wrong_answer", "8 is below 10")]
    assert results[2]["verdict"] == "checker_error"
    assert "cannot decide" in results[2]["message"]


def test_arguments_reach_run_sh_as_they_are(run_init):
    args = ["a b", "", "*", "$HOME", "new\nline", "-e"]
    run = run_init(make_job('for arg in "$@"; do printf "[%s]" "$arg"; done', args=args))
    assert run.result("run")["stdout"] == "".join(f"[{arg}]" for arg in args)


def test_binary_output_comes_back_as_base64_and_text_as_text(run_init):
    data = bytes(range(256))
    run = run_init(make_job("cat data; echo text >&2",
                            files={"data": {"content": base64.b64encode(data).decode(),
                                            "encoding": "base64"}}))
    result = run.result("run")
    assert result["stdout_encoding"] == "base64"
    assert base64.b64decode(result["stdout"]) == data
    assert (result["stderr"], result["stderr_encoding"]) == ("text\n", "utf-8")


def test_binary_stdin_and_base64_on_request(run_init):
    data = b"\xff\x00\xfe"
    run = run_init(make_job("cat", stdin={"content": base64.b64encode(data).decode(),
                                          "encoding": "base64"},
                            output_encoding="base64"))
    result = run.result("run")
    assert (result["stdout_encoding"], base64.b64decode(result["stdout"])) == ("base64", data)
    assert result["stderr_encoding"] == "base64"


def test_output_files_are_returned_and_nothing_outside_the_work_dir(run_init):
    job = make_job(
        "mkdir -p plots; printf 'PNG' > plots/a.png; printf 'x' > plots/b.txt;"
        " ln -s /etc/passwd plots/c.png; ln -s / plots/root; mkfifo plots/d.png;"
        " head -c 2000 /dev/zero > plots/big.png",
        output_files=["plots/*.png", "plots/root/*"], max_output_file_bytes=1000)
    result = run_init(job, timeout=30).result("run")
    files = result["files"]
    assert set(files) == {"plots/a.png"}
    assert base64.b64decode(files["plots/a.png"]["content"]) == b"PNG"
    assert "left out" in result["stderr"] and "plots/big.png" in result["stderr"]


def test_case_files_cannot_be_written_through_a_symlink(run_init, init_env):
    job = make_job("cat data/in", compile_sh="ln -s /tmp data",
                   tests=[case("", None, files={"data/in": "x"})])
    result = cases_of(run_init(job))[0]
    assert result["verdict"] == "error"
    assert "not a directory" in result["stderr"]
