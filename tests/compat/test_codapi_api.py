"""The codapi front end's edges over plain HTTP: a real API on loopback around
a real spool, the test playing the worker (no container): runs and their
answers, sandboxes, versions and commands, files, refusals in codapi's shape,
CORS for the operator's origins, the bounded wait, anonymous callers."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
from compat_helpers import ALICE, CompatApi, fixture_environments, start_compat_api
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nixjail.models import StageResult, Submission, SubmissionStatus
from nixjail.spool import Queue

C = "/codapi"
EXEC = f"{C}/v1/exec"
# How long a request waits for its answer, and the test's worker for its job.
CLIENT_WAIT_S = 30
PAGE = "http://127.0.0.1:8123"
DOCS = "https://docs.example.org"
ELSEWHERE = "https://elsewhere.example.net"
REFUSAL_KEYS = {"id", "ok", "duration", "stdout", "stderr"}


@pytest.fixture
def make(compat_api: Callable[..., CompatApi]) -> Callable[..., CompatApi]:
    def start(*, codapi: dict[str, Any] | None = None, **kwargs: Any) -> CompatApi:
        front_end = {"enabled": True, "anonymous": True, "allowed_origins": [PAGE, DOCS],
                     **(codapi or {})}
        compat = {"codapi": front_end, **kwargs.pop("compat", {})}
        return compat_api(compat=compat, **kwargs)

    return start


@pytest.fixture
def api(make: Callable[..., CompatApi]) -> CompatApi:
    return make()


def post(api: CompatApi, body: Any, *, origin: str | None = None, token: str | None = None,
         **kwargs: Any) -> requests.Response:
    headers = kwargs.pop("headers", {})
    if origin is not None:
        headers["Origin"] = origin
    if "data" not in kwargs:
        # Serialised here: `json=None` would send no body at all.
        kwargs["data"] = json.dumps(body)
        headers.setdefault("Content-Type", "application/json")
    return api.request("POST", EXEC, token=token, headers=headers, **kwargs)


def exec_with_worker(api: CompatApi, body: dict[str, Any], *,
                     run: StageResult | None = None,
                     compile_result: StageResult | None = None,
                     **kwargs: Any) -> tuple[requests.Response, Submission]:
    """POST `body` while a worker takes its job as soon as it is queued and
    reports what the test chose."""
    taken: list[Submission] = []
    failures: list[BaseException] = []

    def worker() -> None:
        try:
            # As long as the client waits for its answer: on a loaded machine the
            # submission's creation (its fsyncs) can take seconds.
            lease = api.spool.lease(Queue.run, "codapi-test", wait_s=CLIENT_WAIT_S)
            assert lease is not None, "nothing was queued"
            if compile_result is not None:
                api.spool.report_stage(lease, "compile", compile_result)
            if run is not None:
                api.spool.report_stage(lease, "run", run)
            taken.append(api.spool.complete(lease))
        except BaseException as exc:  # handed to the test
            failures.append(exc)

    thread = threading.Thread(target=worker)
    thread.start()
    answer = post(api, body, timeout=CLIENT_WAIT_S, **kwargs)
    thread.join(CLIENT_WAIT_S + 5)
    assert not thread.is_alive()
    if failures:
        raise AssertionError(f"the worker: {failures[0]}; the answer: {answer.status_code} "
                             f"{answer.text[:500]}") from failures[0]
    return answer, taken[0]


def assert_refusal(answer: requests.Response, status: int, text: str) -> None:
    assert answer.status_code == status, answer.text
    body = answer.json()
    assert set(body) == REFUSAL_KEYS, body
    assert (body["id"], body["ok"], body["duration"], body["stdout"]) == ("-", False, 0, "")
    assert text in body["stderr"], body


def nothing_submitted(api: CompatApi) -> bool:
    return api.spool.list()[0] == []


def test_a_run_that_exits_0_is_ok(api: CompatApi) -> None:
    answer, submission = exec_with_worker(
        api, {"sandbox": "bash", "command": "run", "files": {"": "echo hello"}},
        run=StageResult(status="ok", exit_code=0, stdout="hello\n", stderr="note\n",
                        wall_time_ms=42))
    assert answer.status_code == 200, answer.text
    assert answer.headers["Content-Type"].startswith("application/json")
    assert answer.json() == {"id": submission.id, "ok": True, "duration": 42,
                             "stdout": "hello\n", "stderr": "note\n"}
    stored = api.spool.get(submission.id)
    assert stored.request.environment == "bash"
    assert stored.request.file_bytes() == {"main.sh": b"echo hello"}
    assert (stored.request.run_sh or "").endswith('bash main.sh "$@"')
    assert stored.owner == "anonymous"
    # A submission like any other: /v1 shows it to its tenant.
    assert api.request("GET", f"/v1/submissions/{submission.id}").status_code == 404


def test_a_failing_run_is_not_ok(api: CompatApi) -> None:
    answer, _ = exec_with_worker(
        api, {"sandbox": "bash", "files": {"": "echo boom >&2; exit 3"}},
        run=StageResult(status="nonzero_exit", exit_code=3, stderr="boom\n", wall_time_ms=7))
    assert answer.status_code == 200
    assert answer.json()["ok"] is False
    assert (answer.json()["stderr"], answer.json()["duration"]) == ("boom\n", 7)


@pytest.mark.parametrize(("run", "says"), [
    (StageResult(status="time_limit", stdout="partial"), "time limit (5 s wall, 5 s CPU)"),
    (StageResult(status="memory_limit"), "memory limit (256 MiB)"),
    (StageResult(status="output_limit", stdout="x" * 10), "output limit (64 KiB)"),
    (StageResult(status="signaled", signal=11), "killed by signal 11"),
])
def test_a_stopped_run_says_why_in_stderr(api: CompatApi, run: StageResult,
                                          says: str) -> None:
    answer, _ = exec_with_worker(api, {"sandbox": "bash", "files": {"": "x"}}, run=run)
    body = answer.json()
    assert body["ok"] is False and says in body["stderr"], body
    assert body["stdout"] == run.stdout


def test_undecodable_output_is_replaced_as_codapi_does(api: CompatApi) -> None:
    answer, _ = exec_with_worker(api, {"sandbox": "bash", "files": {"": "x"}},
                                 run=StageResult(status="ok", exit_code=0, stdout="/w==",
                                                 stdout_encoding="base64"))
    assert answer.json()["stdout"] == "\ufffd"


COMPILED = [{"name": "cc", "shell_nix": "{}: 1", "main_file": "main.c",
             "compile_sh": "cc $COMPILER_OPTIONS -o main main.c", "run_sh": "./main",
             "codapi": {"sandbox": "c", "commands": {
                 "run": {}, "test": {"compile_sh": "cc -DTEST -o main main.c",
                                     "run_sh": "./main --test"}}}}]


def test_a_compile_failure_puts_the_compilers_output_in_stderr(
        make: Callable[..., CompatApi]) -> None:
    api = make(environments=COMPILED)
    answer, submission = exec_with_worker(
        api, {"sandbox": "c", "files": {"": "int main("}},
        compile_result=StageResult(status="nonzero_exit", exit_code=1,
                                   stdout="In function main:\n",
                                   stderr="main.c:1: error: expected\n", wall_time_ms=30))
    assert answer.status_code == 200
    assert answer.json() == {"id": submission.id, "ok": False, "duration": 30, "stdout": "",
                             "stderr": "In function main:\nmain.c:1: error: expected\n"}
    assert api.spool.get(submission.id).status is SubmissionStatus.failed
    # The entry's compile script reads $COMPILER_OPTIONS: codapi gives none.
    assert "export COMPILER_OPTIONS=''\n" in (submission.request.compile_sh or "")


def test_a_compiled_run_counts_both_stages(make: Callable[..., CompatApi]) -> None:
    api = make(environments=COMPILED)
    answer, _ = exec_with_worker(
        api, {"sandbox": "c", "files": {"main.c": "int main(void) { return 0; }"}},
        compile_result=StageResult(status="ok", exit_code=0, wall_time_ms=300),
        run=StageResult(status="ok", exit_code=0, stdout="ran\n", wall_time_ms=5))
    assert answer.json()["ok"] is True
    assert (answer.json()["duration"], answer.json()["stdout"]) == (305, "ran\n")


def test_a_command_brings_its_own_scripts(make: Callable[..., CompatApi]) -> None:
    api = make(environments=COMPILED)
    answer, submission = exec_with_worker(
        api, {"sandbox": "c", "command": "test", "files": {"": "int main;"}},
        compile_result=StageResult(status="ok", exit_code=0),
        run=StageResult(status="ok", exit_code=0))
    assert answer.status_code == 200
    assert (submission.request.compile_sh or "").endswith("cc -DTEST -o main main.c")
    assert (submission.request.run_sh or "").endswith("./main --test")
    assert (submission.request.compile_sh or "").startswith("# codapi c:latest test\n")
    # Only the scripts change: the shell.nix is the entry's, so the catalog's
    # build at start is the one every command of the sandbox finds.
    assert submission.request.shell_nix == COMPILED[0]["shell_nix"]


def test_unknown_sandbox_and_command_are_404_and_submit_nothing(api: CompatApi) -> None:
    assert_refusal(post(api, {"sandbox": "cobol", "command": "run", "files": {"": "x"}}),
                   404, "unknown sandbox: cobol")
    assert_refusal(post(api, {"sandbox": "bash", "command": "lint", "files": {"": "x"}}),
                   404, "unknown command: lint (sandbox bash has run)")
    assert nothing_submitted(api)


VERSIONED = [
    {"name": "bash", "shell_nix": "{}: 1", "main_file": "main.sh", "run_sh": "bash main.sh",
     "codapi": {"sandbox": "bash"}},
    {"name": "bash52", "shell_nix": "{}: 2", "main_file": "main.sh",
     "run_sh": "bash main.sh", "codapi": {"sandbox": "bash", "version": "5.2"}},
]


@pytest.mark.parametrize(("version", "environment"), [
    (None, "bash"), ("", "bash"), ("latest", "bash"), ("5.2", "bash52")])
def test_a_version_names_its_entry_and_none_is_latest(
        make: Callable[..., CompatApi], version: str | None, environment: str) -> None:
    api = make(environments=VERSIONED)
    body: dict[str, Any] = {"sandbox": "bash", "files": {"": "echo"}}
    if version is not None:
        body["version"] = version
    answer, submission = exec_with_worker(api, body,
                                          run=StageResult(status="ok", exit_code=0))
    assert answer.status_code == 200
    assert submission.request.environment == environment


def test_an_unknown_version_names_the_ones_there_are(make: Callable[..., CompatApi]) -> None:
    api = make(environments=VERSIONED)
    assert_refusal(post(api, {"sandbox": "bash", "version": "3.0", "files": {"": "x"}}),
                   404, "bash has no version 3.0 (it has 5.2, latest)")


def test_other_files_lie_beside_the_main_one(api: CompatApi) -> None:
    files = {"": "cat data/in.txt", "lib.sh": "f() { :; }", "data/in.txt": "42\n"}
    answer, submission = exec_with_worker(api, {"sandbox": "bash", "files": files},
                                          run=StageResult(status="ok", exit_code=0))
    assert answer.status_code == 200
    assert submission.request.file_bytes() == {
        "main.sh": b"cat data/in.txt", "lib.sh": b"f() { :; }", "data/in.txt": b"42\n"}


def test_the_main_file_may_come_under_its_own_name(api: CompatApi) -> None:
    answer, submission = exec_with_worker(
        api, {"sandbox": "bash", "files": {"main.sh": "echo", "x.txt": ""}},
        run=StageResult(status="ok", exit_code=0))
    assert answer.status_code == 200
    assert submission.request.file_bytes() == {"main.sh": b"echo", "x.txt": b""}


@pytest.mark.parametrize(("files", "says"), [
    ({"": "echo", "main.sh": "echo"}, "the name the source file takes"),
    ({"": "echo", "../escape": "x"}, 'files["../escape"]: file name must not contain'),
    ({"": "echo", "/etc/passwd": "x"}, 'files["/etc/passwd"]: file name must be relative'),
    ({"": "echo", "a": "x", "a/b": "y"}, "files: 'a/b' lies under 'a', which is a file"),
    ({"": "echo", "\ud800": "x"}, "not valid Unicode"),
    ({"lib.sh": "x"}, 'the code is missing: give it as ""'),
    ({"": "  \n"}, "empty request"),
    ({}, "the code is missing"),
])
def test_bad_files_are_400_naming_them(api: CompatApi, files: dict[str, str],
                                       says: str) -> None:
    assert_refusal(post(api, {"sandbox": "bash", "files": files}), 400, says)
    assert nothing_submitted(api)


@pytest.mark.parametrize(("raw", "status", "says"), [
    (b"{", 400, "the body is not valid JSON"),
    (b"", 400, "the body is not valid JSON"),
    (b"[]", 400, "must be a JSON object"),
    (b"null", 400, "must be a JSON object"),
    (b'"bash"', 400, "must be a JSON object"),
    (b'{"files": {"": "x"}}', 400, "sandbox: is required"),
    (b'{"sandbox": 5, "files": {"": "x"}}', 400, "sandbox: must be a string"),
    (b'{"sandbox": "bash", "command": ["run"], "files": {"": "x"}}', 400,
     "command: must be a string"),
    (b'{"sandbox": "bash", "version": 5.2, "files": {"": "x"}}', 400,
     "version: must be a string"),
    (b'{"sandbox": "bash", "files": "echo"}', 400, "files: must be an object"),
    (b'{"sandbox": "bash", "files": {"": 5}}', 400, "the content of '' must be a string"),
    (b'{"sandbox": "bash", "files": {"": "\\ud800"}}', 400,
     "the content of '' is not valid Unicode"),
])
def test_malformed_bodies_and_bad_types_are_refused_in_codapis_shape(
        api: CompatApi, raw: bytes, status: int, says: str) -> None:
    answer = post(api, None, data=raw, headers={"Content-Type": "application/json"})
    assert_refusal(answer, status, says)
    assert nothing_submitted(api)


def test_a_body_that_is_not_json_by_its_type_is_415(api: CompatApi) -> None:
    answer = post(api, None, data=b'{"sandbox": "bash", "files": {"": "x"}}',
                  headers={"Content-Type": "text/plain"})
    assert_refusal(answer, 415, "application/json")


def test_preflight_from_an_allowed_origin_is_answered(make: Callable[..., CompatApi]) -> None:
    # Not anonymous, with a tokens file: a browser's preflight carries no
    # credentials, and is answered all the same.
    api = make(codapi={"anonymous": False})
    answer = api.request("OPTIONS", EXEC, token=None, headers={
        "Origin": PAGE, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "accept, content-type"})
    assert answer.status_code == 204, answer.text
    assert answer.headers["Access-Control-Allow-Origin"] == PAGE
    assert answer.headers["Access-Control-Allow-Methods"] == "POST"
    assert answer.headers["Access-Control-Allow-Headers"] == "content-type, accept"
    assert answer.headers["Access-Control-Max-Age"] == "3600"
    assert "Origin" in answer.headers["Vary"]
    # The same origin written with its default port and in capitals is the same.
    api2 = make(codapi={"allowed_origins": ["https://Docs.Example.org:443"]})
    other = api2.request("OPTIONS", EXEC, token=None, headers={
        "Origin": DOCS, "Access-Control-Request-Method": "POST"})
    assert other.status_code == 204
    assert other.headers["Access-Control-Allow-Origin"] == DOCS


@pytest.mark.parametrize(("headers", "says"), [
    ({"Origin": ELSEWHERE, "Access-Control-Request-Method": "POST"},
     "may not call this server (compat.codapi.allowed_origins"),
    ({"Origin": PAGE, "Access-Control-Request-Method": "DELETE"}, "only POST"),
    ({"Origin": PAGE, "Access-Control-Request-Method": "POST",
      "Access-Control-Request-Headers": "content-type, authorization"},
     "these headers may not be sent here: authorization"),
    ({"Access-Control-Request-Method": "POST"}, "must name its Origin"),
])
def test_a_refused_preflight_gets_no_cors_headers(api: CompatApi, headers: dict[str, str],
                                                  says: str) -> None:
    answer = api.request("OPTIONS", EXEC, token=None, headers=headers)
    assert answer.status_code in (400, 403)
    assert_refusal(answer, answer.status_code, says)
    assert not [name for name in answer.headers if name.lower().startswith("access-control")]


def test_no_origin_is_allowed_when_none_is_listed(make: Callable[..., CompatApi]) -> None:
    api = make(codapi={"allowed_origins": []})
    answer = api.request("OPTIONS", EXEC, token=None, headers={
        "Origin": PAGE, "Access-Control-Request-Method": "POST"})
    assert_refusal(answer, 403, "none is listed")


def test_post_from_an_allowed_origin_carries_allow_origin(api: CompatApi) -> None:
    answer, _ = exec_with_worker(api, {"sandbox": "bash", "files": {"": "echo"}},
                                 run=StageResult(status="ok", exit_code=0), origin=PAGE)
    assert answer.status_code == 200
    assert answer.headers["Access-Control-Allow-Origin"] == PAGE
    assert "Origin" in answer.headers["Vary"]
    # A refusal too, or the page could not read why.
    refused = post(api, {"sandbox": "cobol", "files": {"": "x"}}, origin=PAGE)
    assert refused.status_code == 404
    assert refused.headers["Access-Control-Allow-Origin"] == PAGE


def test_post_without_origin_runs_without_cors_headers(api: CompatApi) -> None:
    answer, _ = exec_with_worker(api, {"sandbox": "bash", "files": {"": "echo"}},
                                 run=StageResult(status="ok", exit_code=0))
    assert answer.status_code == 200 and answer.json()["ok"] is True
    assert "Access-Control-Allow-Origin" not in answer.headers


def test_post_from_another_origin_is_refused_and_runs_nothing(api: CompatApi) -> None:
    answer = post(api, {"sandbox": "bash", "files": {"": "echo"}}, origin=ELSEWHERE)
    assert_refusal(answer, 403, f"the origin {ELSEWHERE} may not call this server")
    assert "Access-Control-Allow-Origin" not in answer.headers
    assert nothing_submitted(api)


def test_cors_is_for_the_codapi_prefix_only(api: CompatApi) -> None:
    answer = api.request("OPTIONS", "/v1/submissions", token=None, headers={
        "Origin": PAGE, "Access-Control-Request-Method": "POST"})
    assert "Access-Control-Allow-Origin" not in answer.headers
    native = api.request("GET", "/v1/submissions", headers={"Origin": PAGE})
    assert native.status_code == 200
    assert "Access-Control-Allow-Origin" not in native.headers


def test_a_run_that_does_not_end_in_time_is_cancelled(make: Callable[..., CompatApi]) -> None:
    api = make(api={"max_wait_s": 0.3})
    answer = post(api, {"sandbox": "bash", "files": {"": "sleep 100"}})
    assert answer.status_code == 200
    body = answer.json()
    assert body["ok"] is False
    assert body["stderr"] == ("code execution timeout: bash:latest did not finish within "
                              "0.3 s, so nixjail cancelled it")
    assert api.spool.get(body["id"]).status is SubmissionStatus.cancelled


def test_the_wait_stays_below_the_widgets_10_s(make: Callable[..., CompatApi]) -> None:
    from nixjail.compat.codapi import EXEC_WAIT_S

    assert EXEC_WAIT_S < 10
    api = make(api={"max_wait_s": 60})
    answer = post(api, {"sandbox": "bash", "files": {"": "sleep 100"}}, timeout=10)
    assert answer.json()["stderr"].endswith(f"within {EXEC_WAIT_S:g} s, so nixjail "
                                            "cancelled it")


def test_a_server_that_waits_for_nothing_says_so(make: Callable[..., CompatApi]) -> None:
    api = make(api={"max_wait_s": 0})
    assert_refusal(post(api, {"sandbox": "bash", "files": {"": "x"}}), 503,
                   "api.max_wait_s is 0")
    assert nothing_submitted(api)


def test_a_full_queue_is_busy_with_retry_after(make: Callable[..., CompatApi]) -> None:
    api = make(api={"max_queued": 1})
    queued = api.request("POST", "/v1/submissions", json={
        "environment": "bash", "files": {"main.sh": "true"}})
    assert queued.status_code == 202, queued.text
    answer = post(api, {"sandbox": "bash", "files": {"": "x"}}, origin=PAGE)
    assert_refusal(answer, 429, "busy: the queue is full")
    assert int(answer.headers["Retry-After"]) > 0
    assert "Retry-After" in answer.headers["Access-Control-Expose-Headers"]


def test_with_every_wait_slot_taken_nothing_is_submitted(
        make: Callable[..., CompatApi]) -> None:
    api = make(api={"max_waiters": 1})
    first: list[requests.Response] = []
    waiting = threading.Thread(target=lambda: first.append(
        post(api, {"sandbox": "bash", "files": {"": "echo first"}})))
    waiting.start()
    # Its job is queued while it holds the one slot, waiting for the run.
    lease = api.spool.lease(Queue.run, "codapi-test", wait_s=10)
    assert lease is not None
    busy = post(api, {"sandbox": "bash", "files": {"": "echo second"}})
    assert_refusal(busy, 429, "busy: try again later")
    assert busy.headers["Retry-After"] == "1"
    assert len(api.spool.list()[0]) == 1
    api.spool.report_stage(lease, "run", StageResult(status="ok", exit_code=0,
                                                     stdout="first\n"))
    api.spool.complete(lease)
    waiting.join(15)
    assert first and first[0].json()["stdout"] == "first\n"


def test_callers_without_a_token_need_anonymous(make: Callable[..., CompatApi]) -> None:
    closed = make(codapi={"anonymous": False})
    assert_refusal(post(closed, {"sandbox": "bash", "files": {"": "x"}}), 401,
                   "Authorization: Bearer TOKEN")
    answer, submission = exec_with_worker(closed, {"sandbox": "bash", "files": {"": "x"}},
                                          run=StageResult(status="ok", exit_code=0),
                                          token=ALICE)
    assert answer.status_code == 200 and submission.owner == "alice"


def test_anonymous_callers_are_rate_limited(make: Callable[..., CompatApi]) -> None:
    api = make(compat={"anonymous_requests_per_minute": 1})
    first, _ = exec_with_worker(api, {"sandbox": "bash", "files": {"": "x"}},
                                run=StageResult(status="ok", exit_code=0))
    assert first.status_code == 200
    limited = post(api, {"sandbox": "bash", "files": {"": "x"}}, origin=PAGE)
    assert_refusal(limited, 429, "limited to 1 a minute")
    assert limited.headers["Access-Control-Allow-Origin"] == PAGE
    # A preflight is no submission: it is not counted.
    preflight = api.request("OPTIONS", EXEC, token=None, headers={
        "Origin": PAGE, "Access-Control-Request-Method": "POST"})
    assert preflight.status_code == 204


def test_without_a_tokens_file_no_token_is_needed(make: Callable[..., CompatApi]) -> None:
    api = make(auth=False, codapi={"anonymous": False})
    answer, submission = exec_with_worker(api, {"sandbox": "bash", "files": {"": "x"}},
                                          run=StageResult(status="ok", exit_code=0))
    assert answer.status_code == 200 and submission.owner is None


def test_unknown_routes_and_methods_answer_in_codapis_shape(api: CompatApi) -> None:
    assert_refusal(api.request("GET", f"{C}/v1/nothing", token=None), 404, "nothing at")
    assert_refusal(api.request("GET", EXEC, token=None), 405, "GET is not allowed")
    # Outside the prefix, nixjail's own shape.
    assert set(api.request("GET", "/nothing").json()) == {"title", "description", "errors"}


def test_disabled_front_end_has_no_routes(make: Callable[..., CompatApi]) -> None:
    api = make(codapi={"enabled": False})
    answer = post(api, {"sandbox": "bash", "files": {"": "x"}})
    assert answer.status_code == 404 and "errors" in answer.json()


def test_the_fixture_catalog_offers_bash() -> None:
    bash = [e for e in fixture_environments() if e.get("codapi")]
    assert [(e["codapi"]["sandbox"], e["codapi"].get("version", "latest")) for e in bash] == [
        ("bash", "latest")]


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=5)
FILES = st.dictionaries(st.sampled_from(["", "main.sh", "lib.sh", "a/b", "../x", "/x", "a//b",
                                         ".", "a\0b"]) | st.text(max_size=8),
                        st.text(max_size=20) | JSON_VALUES, max_size=4)
BODIES = st.fixed_dictionaries({}, optional={
    "sandbox": st.sampled_from(["bash", "", "cobol"]) | JSON_VALUES,
    "version": st.sampled_from(["latest", "", "5.2"]) | JSON_VALUES,
    "command": st.sampled_from(["run", "", "test"]) | JSON_VALUES,
    "files": FILES | JSON_VALUES,
    "id": JSON_VALUES,
}) | JSON_VALUES


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CompatApi]:
    # A short wait: every accepted body times out (no worker) and is cancelled.
    api, stop = start_compat_api(
        tmp_path_factory.mktemp("codapi-fuzz"), api={"max_wait_s": 0.05},
        compat={"codapi": {"enabled": True, "anonymous": True, "allowed_origins": [PAGE]},
                "anonymous_requests_per_minute": 100_000})
    yield api
    stop()


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=BODIES, origin=st.sampled_from([None, PAGE, ELSEWHERE]))
def test_no_body_gets_a_5xx(shared: CompatApi, body: Any, origin: str | None) -> None:
    answer = post(shared, body, origin=origin)
    assert answer.status_code in (200, 400, 403, 404), (body, answer.text)
    got = answer.json()
    assert set(got) == REFUSAL_KEYS, got
    assert isinstance(got["stderr"], str) and isinstance(got["ok"], bool)
    if answer.status_code != 200:
        assert got["stderr"], got
