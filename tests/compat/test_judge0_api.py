"""The Judge0 front end's edges over plain HTTP: a real API on loopback around
a real spool, the test playing the worker (no container): languages and
configuration, field filters, base64, refusals in Judge0's shape, tenancy,
delete, X-Auth-Token and anonymous callers."""

from __future__ import annotations

import base64
import io
import threading
import zipfile
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from compat_helpers import ALICE, BOB, CompatApi, start_compat_api
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nixjail.compat.judge0_fields import ALL_FIELDS, DEFAULT_FIELDS
from nixjail.models import CaseResult, StageResult
from nixjail.spool import Queue

J = "/judge0"
BASH = 46


def b64(data: bytes | str) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


def zipped(files: dict[str, bytes], *, modes: dict[str, int] | None = None) -> str:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in files.items():
            info = zipfile.ZipInfo(name)
            info.compress_type = zipfile.ZIP_DEFLATED
            if modes and name in modes:
                info.external_attr = modes[name] << 16
            archive.writestr(info, content)
    return b64(buffer.getvalue())


@pytest.fixture
def make(compat_api: Callable[..., CompatApi]) -> Callable[..., CompatApi]:
    def start(*, judge0: dict[str, Any] | None = None, **kwargs: Any) -> CompatApi:
        compat = {"judge0": {"enabled": True, **(judge0 or {})}, **kwargs.pop("compat", {})}
        return compat_api(compat=compat, **kwargs)

    return start


@pytest.fixture
def api(make: Callable[..., CompatApi]) -> CompatApi:
    return make()


def create(api: CompatApi, body: dict[str, Any], *, query: str = "?base64_encoded=false",
           token: str | None = ALICE, **kwargs: Any) -> Any:
    return api.request("POST", f"{J}/submissions{query}", json=body, token=token, **kwargs)


def test_languages_statuses_about_and_config(api: CompatApi) -> None:
    languages = api.request("GET", f"{J}/languages").json()
    assert languages == [{"id": BASH, "name": "Bash (5.0.0)"}]
    one = api.request("GET", f"{J}/languages/{BASH}").json()
    assert (one["id"], one["source_file"], one["run_cmd"]) == (BASH, "main.sh",
                                                               'bash main.sh "$@"')
    missing = api.request("GET", f"{J}/languages/999")
    assert missing.status_code == 404 and missing.json() == {"error": "Not Found"}
    statuses = api.request("GET", f"{J}/statuses").json()
    assert [s["id"] for s in statuses] == list(range(1, 15))
    assert statuses[3] == {"id": 4, "description": "Wrong Answer"}
    assert api.request("GET", f"{J}/about").json()["version"] == "1.13.1"
    config = api.request("GET", f"{J}/config_info").json()
    run_default, run_max = api.settings.limits_default.run, api.settings.limits_max.run
    assert config["cpu_time_limit"] == run_default.cpu_time_s
    assert config["max_wall_time_limit"] == run_max.wall_time_s
    assert config["max_memory_limit"] == run_max.memory_mib * 1024
    assert config["enable_submission_delete"] is False
    assert config["enable_network"] is False and config["allow_enable_network"] is False


def test_about_reports_the_version_the_operator_chose(make: Callable[..., CompatApi]) -> None:
    api = make(judge0={"version": "1.14.0"})
    assert api.request("GET", f"{J}/about").json()["version"] == "1.14.0"


def test_config_info_has_every_key_the_python_client_requires(api: CompatApi) -> None:
    judge0 = pytest.importorskip("judge0")
    config = api.request("GET", f"{J}/config_info").json()
    required = {name for name, spec in judge0.base_types.Config.model_fields.items()
                if spec.is_required()}
    assert required <= set(config), required - set(config)
    judge0.base_types.Config(**config)


def test_a_submission_comes_back_with_judge0_fields_only(api: CompatApi) -> None:
    created = create(api, {"source_code": b64("echo hi"), "language_id": BASH,
                           "stdin": b64("in\n")}, query="?base64_encoded=true")
    assert created.status_code == 201, created.text
    token = created.json()["token"]
    assert created.json() == {"token": token}
    queued = api.request("GET", f"{J}/submissions/{token}").json()
    assert set(queued) == set(DEFAULT_FIELDS)
    assert queued["status"] == {"id": 1, "description": "In Queue"}
    api.finish(token, run=StageResult(status="ok", exit_code=0, stdout="hi\n",
                                      cpu_time_ms=12, wall_time_ms=30, memory_kib=2048))
    done = api.request("GET", f"{J}/submissions/{token}?fields=*&base64_encoded=true").json()
    assert list(done) == list(ALL_FIELDS)
    assert done["status"] == {"id": 3, "description": "Accepted"}
    assert base64.b64decode(done["stdout"]) == b"hi\n"
    assert base64.b64decode(done["source_code"]) == b"echo hi"
    assert base64.b64decode(done["stdin"]) == b"in\n"
    assert (done["time"], done["wall_time"], done["memory"]) == ("0.012", "0.030", 2048)
    assert done["language_id"] == BASH and done["exit_code"] == 0
    assert done["created_at"].endswith("Z") and len(done["created_at"]) == 24
    plain = api.request("GET", f"{J}/submissions/{token}?fields=stdout,status_id").json()
    assert plain == {"stdout": "hi\n", "status_id": 3}
    # The token is a nixjail submission id like any other.
    native = api.request("GET", f"/v1/submissions/{token}").json()
    assert (native["status"], native["request"]["environment"]) == ("done", "bash")


def test_statuses_follow_the_run(api: CompatApi) -> None:
    outcomes = [
        (StageResult(status="nonzero_exit", exit_code=3), 11, "Exited with error status 3"),
        (StageResult(status="signaled", signal=11), 7, "Caught fatal signal 11"),
        (StageResult(status="signaled", signal=8), 9, "Caught fatal signal 8"),
        (StageResult(status="signaled", signal=6), 10, "Caught fatal signal 6"),
        (StageResult(status="signaled", signal=9), 12, "Caught fatal signal 9"),
        (StageResult(status="time_limit"), 5, "Time limit exceeded"),
        (StageResult(status="output_limit"), 8, "Output limit exceeded"),
        (StageResult(status="memory_limit"), 12, "Memory limit exceeded"),
        (StageResult(status="nonzero_exit", exit_code=126,
                     stderr="main.sh: line 1: ./prog: cannot execute binary file: Exec "
                     "format error\n"), 14, "Exec format error"),
    ]
    for run, status_id, message in outcomes:
        token = create(api, {"source_code": "x", "language_id": BASH}).json()["token"]
        api.finish(token, run=run)
        got = api.request("GET", f"{J}/submissions/{token}?fields=status,message").json()
        assert (got["status"]["id"], got["message"]) == (status_id, message), run


def test_nixjails_own_failures_are_internal_errors(api: CompatApi) -> None:
    token = create(api, {"source_code": "x", "language_id": BASH}).json()["token"]
    lease = api.spool.lease(Queue.run, "compat-test", wait_s=5)
    assert lease is not None
    api.spool.complete(lease, error="the container could not start")
    got = api.request("GET", f"{J}/submissions/{token}?fields=status,message,stdout").json()
    assert got == {"status": {"id": 13, "description": "Internal Error"},
                   "message": "the container could not start", "stdout": None}
    cancelled = create(api, {"source_code": "x", "language_id": BASH}).json()["token"]
    api.spool.cancel(cancelled)
    got = api.request("GET", f"{J}/submissions/{cancelled}?fields=status_id,message").json()
    assert got == {"status_id": 13, "message": "cancelled"}


def test_a_callback_url_under_an_allowed_prefix_is_kept(
        make: Callable[..., CompatApi]) -> None:
    api = make(callbacks={"allowed_prefixes": ["http://127.0.0.1:9/hooks/"]})
    token = create(api, {"source_code": "x", "language_id": BASH,
                         "callback_url": "http://127.0.0.1:9/hooks/judge0"}).json()["token"]
    assert api.spool.get(token).request.callback_url == "http://127.0.0.1:9/hooks/judge0"
    got = api.request("GET", f"{J}/submissions/{token}?fields=callback_url").json()
    assert got == {"callback_url": "http://127.0.0.1:9/hooks/judge0"}
    assert api.request("GET", f"{J}/config_info").json()["enable_callbacks"] is True


def test_expected_output_is_compared_as_judge0_does(api: CompatApi) -> None:
    created = create(api, {"source_code": "echo 5", "language_id": BASH,
                           "stdin": "2 3", "expected_output": "5\n"})
    token = created.json()["token"]
    stored = api.spool.get(token)
    assert stored.request.tests is not None and stored.request.checker.kind == "lines"
    assert stored.request.tests[0].expected_output == "5\n"
    assert stored.request.tests[0].stdin == "2 3"
    api.finish(token, case=CaseResult(status="ok", exit_code=0, stdout="4\n",
                                      verdict="wrong_answer",
                                      message="line 1: expected '5', got '4'"))
    got = api.request("GET", f"{J}/submissions/{token}?fields=status,stdout,"
                      "expected_output").json()
    assert got == {"status": {"id": 4, "description": "Wrong Answer"}, "stdout": "4\n",
                   "expected_output": "5\n"}


def test_compilation_error_reports_compile_output(make: Callable[..., CompatApi]) -> None:
    catalog = [{"name": "cc", "shell_nix": "{}: 1", "main_file": "main.c",
                "compile_sh": "cc $COMPILER_OPTIONS main.c", "run_sh": "./a.out",
                "judge0": {"ids": [50], "name": "C (GCC 9.2.0)"}}]
    api = make(environments=catalog)
    token = create(api, {"source_code": "int main(", "language_id": 50,
                         "compiler_options": "-O2 -Wall"}).json()["token"]
    compile_sh = api.spool.get(token).request.compile_sh or ""
    assert "export COMPILER_OPTIONS='-O2 -Wall'\n" in compile_sh
    api.finish(token, compile_result=StageResult(status="nonzero_exit", exit_code=1,
                                                 stderr="main.c:1: error\n"))
    got = api.request("GET", f"{J}/submissions/{token}?fields=status,compile_output,"
                      "compiler_options").json()
    assert got == {"status": {"id": 6, "description": "Compilation Error"},
                   "compile_output": "main.c:1: error\n", "compiler_options": "-O2 -Wall"}


def test_limits_arguments_and_files_map_onto_the_submission(api: CompatApi) -> None:
    archive = zipped({"data/in.txt": b"42\n", "bin.dat": b"\xff\x00"})
    token = create(api, {"source_code": "cat data/in.txt", "language_id": BASH,
                         "cpu_time_limit": 1.5, "wall_time_limit": "3", "memory_limit": 65536,
                         "max_processes_and_or_threads": 8, "max_file_size": 512,
                         "command_line_arguments": "a 'b c'", "additional_files": archive,
                         "redirect_stderr_to_stdout": True, "cpu_extra_time": 0,
                         "stack_limit": 64000, "number_of_runs": 1,
                         "enable_network": False}).json()["token"]
    stored = api.spool.get(token)
    run = stored.limits.run
    assert (run.cpu_time_s, run.wall_time_s, run.memory_mib, run.processes,
            run.file_size_kib) == (1.5, 3, 64, 8, 512)
    assert stored.request.args == ["a", "b c"]
    assert stored.request.file_bytes() == {"main.sh": b"cat data/in.txt",
                                           "data/in.txt": b"42\n", "bin.dat": b"\xff\x00"}
    assert "exec 2>&1\n" in (stored.request.run_sh or "")
    got = api.request("GET", f"{J}/submissions/{token}?fields=command_line_arguments,"
                      "memory_limit,redirect_stderr_to_stdout,cpu_time_limit").json()
    assert got == {"command_line_arguments": "a 'b c'", "memory_limit": 65536,
                   "redirect_stderr_to_stdout": True, "cpu_time_limit": "1.5"}


@pytest.mark.parametrize(("body", "field", "reason"), [
    ({"source_code": "x", "language_id": 999}, "language_id", "doesn't exist"),
    ({"source_code": "x"}, "language_id", "can't be blank"),
    ({"language_id": BASH}, "source_code", "can't be blank"),
    ({"source_code": "x", "language_id": "bash"}, "language_id", "integer"),
    ({"source_code": "x", "language_id": BASH, "enable_network": True}, "enable_network",
     "without a network"),
    ({"source_code": "x", "language_id": BASH, "cpu_time_limit": 10_000}, "cpu_time_limit",
     "less than or equal to"),
    ({"source_code": "x", "language_id": BASH, "memory_limit": -1}, "memory_limit",
     "greater than 0"),
    ({"source_code": "x", "language_id": BASH, "memory_limit": 0}, "memory_limit",
     "greater than 0"),
    ({"source_code": "x", "language_id": BASH, "cpu_extra_time": -0.5}, "cpu_extra_time",
     "greater than or equal to 0"),
    ({"source_code": "x", "language_id": BASH, "wall_time_limit": "soon"}, "wall_time_limit",
     "not a number"),
    ({"source_code": "x", "language_id": BASH, "number_of_runs": 3}, "number_of_runs",
     "less than or equal to 1"),
    ({"source_code": "x", "language_id": BASH, "command_line_arguments": "'open"},
     "command_line_arguments", "cannot be split"),
    ({"source_code": "x", "language_id": BASH, "compiler_options": "-O2"},
     "compiler_options", "not compiled"),
    ({"source_code": "x", "language_id": BASH, "callback_url": "http://elsewhere/"},
     "callback_url", "not under a prefix"),
    ({"source_code": "x", "language_id": BASH, "stdin": 5}, "stdin", "string"),
    ({"source_code": "x", "language_id": BASH,
      "enable_per_process_and_thread_time_limit": True},
     "enable_per_process_and_thread_time_limit", "not allowed"),
])
def test_refusals_name_the_field_as_judge0_does(api: CompatApi, body: dict[str, Any],
                                                field: str, reason: str) -> None:
    answer = create(api, body)
    assert answer.status_code == 422, answer.text
    refusal = answer.json()
    assert field in refusal, refusal
    assert any(reason in text for text in refusal[field]), refusal


def test_bad_base64_is_refused_by_field(api: CompatApi) -> None:
    answer = create(api, {"source_code": "not base64!", "language_id": BASH,
                          "stdin": b64("ok")}, query="?base64_encoded=true")
    assert answer.status_code == 422
    assert answer.json() == {"source_code": ["is not valid base64 (base64_encoded=true)"]}


@pytest.mark.parametrize(("files", "modes", "reason"), [
    ({"../escape": b"x"}, None, "'..'"),
    ({"/etc/passwd": b"x"}, None, "relative"),
    ({"a\\b": b"x"}, None, "relative"),
    ({"link": b"/etc/passwd"}, {"link": 0o120777}, "links are refused"),
    ({"main.sh": b"replaced"}, None, "the name the source file takes"),
    ({"bomb": b"\0" * (32 * 1024 * 1024)}, None, "extracts to more than"),
])
def test_hostile_zips_are_refused(api: CompatApi, files: dict[str, bytes],
                                  modes: dict[str, int] | None, reason: str) -> None:
    answer = create(api, {"source_code": "x", "language_id": BASH,
                          "additional_files": zipped(files, modes=modes)})
    assert answer.status_code == 422, answer.text
    assert any(reason in text for text in answer.json()["additional_files"]), answer.json()


def test_not_a_zip_and_too_many_files(api: CompatApi) -> None:
    answer = create(api, {"source_code": "x", "language_id": BASH,
                          "additional_files": b64("plain text")})
    assert answer.json() == {"additional_files": ["is not a zip archive"]}
    many = zipped({f"f{i}": b"" for i in range(300)})
    answer = create(api, {"source_code": "x", "language_id": BASH, "additional_files": many})
    assert "holds more than" in answer.json()["additional_files"][0]


def test_fields_filter_refuses_unknown_names(api: CompatApi) -> None:
    token = create(api, {"source_code": "x", "language_id": BASH}).json()["token"]
    answer = api.request("GET", f"{J}/submissions/{token}?fields=stdout,bogus,owner")
    assert answer.status_code == 400
    assert answer.json() == {"error": "invalid fields: [bogus, owner]"}


def test_text_that_is_not_utf8_needs_base64(api: CompatApi) -> None:
    token = create(api, {"source_code": "x", "language_id": BASH}).json()["token"]
    api.finish(token, run=StageResult(status="ok", exit_code=0, stdout=b64(b"\xff\xfe"),
                                      stdout_encoding="base64"))
    refused = api.request("GET", f"{J}/submissions/{token}?fields=stdout")
    assert refused.status_code == 400 and "base64_encoded=true" in refused.json()["error"]
    got = api.request("GET", f"{J}/submissions/{token}?fields=stdout&base64_encoded=true")
    assert base64.b64decode(got.json()["stdout"]) == b"\xff\xfe"


def test_batches_keep_their_order_and_refuse_per_item(api: CompatApi) -> None:
    items = [{"source_code": "echo 1", "language_id": BASH},
             {"source_code": "echo 2", "language_id": 999},
             {"source_code": "echo 3", "language_id": BASH}]
    answer = api.request("POST", f"{J}/submissions/batch", json={"submissions": items})
    assert answer.status_code == 201, answer.text
    first, refused, third = answer.json()
    assert refused == {"language_id": ["language with id 999 doesn't exist"]}
    tokens = f"{first['token']},unknowntoken,{third['token']}"
    got = api.request("GET", f"{J}/submissions/batch?tokens={tokens}&fields=token,"
                      "source_code").json()
    assert got == {"submissions": [{"token": first["token"], "source_code": "echo 1"}, None,
                                   {"token": third["token"], "source_code": "echo 3"}]}
    empty = api.request("POST", f"{J}/submissions/batch", json={"submissions": []})
    assert empty.status_code == 400 and "at least one" in empty.json()["error"]
    many = api.request("POST", f"{J}/submissions/batch",
                       json={"submissions": [items[0]] * 21})
    assert many.status_code == 400 and "less than or equal to 20" in many.json()["error"]


def test_a_tenant_sees_only_its_own(api: CompatApi) -> None:
    token = create(api, {"source_code": "x", "language_id": BASH}, token=ALICE).json()["token"]
    assert api.request("GET", f"{J}/submissions/{token}", token=ALICE).status_code == 200
    theirs = api.request("GET", f"{J}/submissions/{token}", token=BOB)
    assert theirs.status_code == 404 and theirs.json() == {"error": "Not Found"}
    batch = api.request("GET", f"{J}/submissions/batch?tokens={token}", token=BOB).json()
    assert batch == {"submissions": [None]}
    assert api.spool.get(token).owner == "alice"


def test_x_auth_token_is_taken_and_no_token_is_refused(api: CompatApi) -> None:
    answer = create(api, {"source_code": "x", "language_id": BASH}, token=BOB,
                    header="X-Auth-Token")
    assert answer.status_code == 201
    assert api.spool.get(answer.json()["token"]).owner == "bob"
    anonymous = api.request("GET", f"{J}/languages", token=None)
    assert anonymous.status_code == 401
    assert "X-Auth-Token" in anonymous.json()["error"]
    unknown = api.request("GET", f"{J}/languages", token="nobody", header="X-Auth-Token")
    assert unknown.status_code == 401 and unknown.json() == {"error": "the token is not known"}
    # /v1 keeps to its own contract: Bearer only, nixjail's error shape.
    v1 = api.request("GET", "/v1/submissions", token=ALICE, header="X-Auth-Token")
    assert v1.status_code == 401 and "errors" in v1.json()


def test_anonymous_callers_when_allowed_are_rate_limited(
        make: Callable[..., CompatApi]) -> None:
    api = make(judge0={"anonymous": True},
               compat={"anonymous_requests_per_minute": 2})
    body = {"source_code": "x", "language_id": BASH}
    tokens = [create(api, body, token=None).json()["token"] for _ in range(2)]
    assert {api.spool.get(token).owner for token in tokens} == {"anonymous"}
    limited = create(api, body, token=None)
    assert limited.status_code == 429
    assert int(limited.headers["Retry-After"]) > 0
    assert "limited to 2 a minute" in limited.json()["error"]
    # Reads are not counted; a token is not limited; anonymous sees only anonymous'.
    assert api.request("GET", f"{J}/submissions/{tokens[0]}", token=None).status_code == 200
    assert create(api, body, token=ALICE).status_code == 201
    alices = create(api, body, token=ALICE).json()["token"]
    assert api.request("GET", f"{J}/submissions/{alices}", token=None).status_code == 404
    # A wrong token is refused, not taken as anonymous.
    assert create(api, body, token="forged").status_code == 401


def test_delete_only_when_allowed(make: Callable[..., CompatApi]) -> None:
    off = make()
    token = create(off, {"source_code": "x", "language_id": BASH}).json()["token"]
    refused = off.request("DELETE", f"{J}/submissions/{token}")
    assert refused.status_code == 400 and refused.json() == {"error": "delete not allowed"}
    on = make(judge0={"allow_delete": True})
    token = create(on, {"source_code": "echo", "language_id": BASH}).json()["token"]
    running = on.request("DELETE", f"{J}/submissions/{token}")
    assert running.status_code == 400 and "status is 1 (In Queue)" in running.json()["error"]
    on.finish(token, run=StageResult(status="ok", exit_code=0, stdout="bye\n"))
    assert on.request("DELETE", f"{J}/submissions/{token}", token=BOB).status_code == 404
    deleted = on.request("DELETE", f"{J}/submissions/{token}?fields=stdout,token")
    assert deleted.status_code == 200
    assert deleted.json() == {"stdout": b64("bye\n"), "token": token}
    assert on.request("GET", f"{J}/submissions/{token}").status_code == 404
    assert token not in {s.id for s in on.spool.list()[0]}


def test_queue_full_is_judge0s_503(make: Callable[..., CompatApi]) -> None:
    api = make(api={"max_queued": 1})
    body = {"source_code": "x", "language_id": BASH}
    assert create(api, body).status_code == 201
    full = create(api, body)
    assert full.status_code == 503 and full.json() == {"error": "queue is full"}
    assert full.headers["Retry-After"] == "5"
    batch = api.request("POST", f"{J}/submissions/batch", json={"submissions": [body]})
    assert batch.status_code == 503


@pytest.mark.parametrize("raw", [b"{", b"[]", b'"x"', b"null", b'{"language_id": null}',
                                 b'{"source_code": {"a": 1}, "language_id": [46]}',
                                 b'{"source_code": "\\ud800", "language_id": 46}',
                                 b'{"source_code": "x", "language_id": 46, "memory_limit": 1'
                                 + b"0" * 400 + b"}",
                                 b'{"source_code": "x", "language_id": 1' + b"0" * 400 + b"}",
                                 b'{"source_code": "x", "language_id": 46, '
                                 b'"wall_time_limit": 1e999}',
                                 b'{"source_code": "x", "language_id": 46, '
                                 b'"command_line_arguments": "a\\u0000b"}',
                                 b'{"source_code": "x", "language_id": 46, '
                                 b'"command_line_arguments": "' + b"a " * 100 + b'"}',
                                 b'{"source_code": "x", "language_id": 46, '
                                 b'"additional_files": 7}'])
def test_hostile_bodies_never_get_a_500(api: CompatApi, raw: bytes) -> None:
    for path in ("/submissions", "/submissions/batch"):
        answer = api.request("POST", f"{J}{path}?base64_encoded=true", data=raw,
                             headers={"Content-Type": "application/json"})
        assert 400 <= answer.status_code < 500, (path, raw, answer.text)
        assert isinstance(answer.json(), dict | list)


def test_unknown_routes_and_methods_answer_in_judge0s_shape(api: CompatApi) -> None:
    missing = api.request("GET", f"{J}/nothing")
    assert missing.status_code == 404 and set(missing.json()) == {"error"}
    wrong = api.request("PUT", f"{J}/languages")
    assert wrong.status_code == 405 and set(wrong.json()) == {"error"}
    # Outside the prefix, nixjail's own shape.
    assert set(api.request("GET", "/nothing").json()) == {"title", "description", "errors"}


def test_wait_true_answers_when_the_submission_ends(api: CompatApi) -> None:
    def worker() -> None:
        # Takes the job as soon as it is queued (the lease waits on the queue).
        lease = api.spool.lease(Queue.run, "compat-test", wait_s=10)
        assert lease is not None
        api.spool.report_stage(lease, "run", StageResult(status="ok", exit_code=0,
                                                         stdout="waited\n"))
        api.spool.complete(lease)

    thread = threading.Thread(target=worker)
    thread.start()
    answer = create(api, {"source_code": "x", "language_id": BASH},
                    query="?wait=true&base64_encoded=false")
    thread.join(10)
    assert answer.status_code == 201
    assert answer.json()["status"] == {"id": 3, "description": "Accepted"}
    assert answer.json()["stdout"] == "waited\n"
    assert set(answer.json()) == set(DEFAULT_FIELDS)


def test_disabled_front_end_has_no_routes(make: Callable[..., CompatApi]) -> None:
    api = make(judge0={"enabled": False})
    answer = api.request("GET", f"{J}/languages")
    assert answer.status_code == 404 and "errors" in answer.json()


def test_no_token_may_take_the_anonymous_tenant(make: Callable[..., CompatApi]) -> None:
    api = make(judge0={"anonymous": True})
    tokens_file = api.settings.api.tokens_file
    assert tokens_file is not None
    # A token named into the anonymous tenant would read every anonymous caller's.
    tokens_file.write_text(tokens_file.read_text() + "submitter sneaky-token anonymous\n")
    anonymous = create(api, {"source_code": "x", "language_id": BASH}, token=None)
    assert anonymous.status_code == 201
    token = anonymous.json()["token"]
    sneaky = api.request("GET", f"{J}/submissions/{token}", token="sneaky-token")
    assert sneaky.status_code == 401 and sneaky.json() == {"error": "the token is not known"}


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=5)
REQUEST_FIELDS = ["source_code", "language_id", "stdin", "expected_output", "cpu_time_limit",
                  "cpu_extra_time", "wall_time_limit", "memory_limit", "stack_limit",
                  "max_processes_and_or_threads", "enable_per_process_and_thread_time_limit",
                  "max_file_size", "redirect_stderr_to_stdout", "enable_network",
                  "number_of_runs", "callback_url", "additional_files", "compiler_options",
                  "command_line_arguments"]


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CompatApi]:
    api, stop = start_compat_api(tmp_path_factory.mktemp("fuzz"),
                                 compat={"judge0": {"enabled": True}})
    yield api
    stop()


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.dictionaries(st.sampled_from(REQUEST_FIELDS), JSON_VALUES, max_size=8),
       language=st.sampled_from([BASH, None]), encoded=st.booleans())
def test_any_body_gets_an_answer_never_a_500(shared: CompatApi, body: dict[str, Any],
                                             language: int | None, encoded: bool) -> None:
    if language is not None:
        body.setdefault("language_id", language)
    answer = shared.request("POST", f"{J}/submissions?base64_encoded={str(encoded).lower()}",
                            json=body)
    assert answer.status_code in (201, 400, 422), (body, answer.text)
    refusal = answer.json()
    if answer.status_code == 422:
        # Each refusal names fields the client sent or must send, with reasons.
        assert refusal and all(isinstance(r, list) and r for r in refusal.values()), refusal
