"""The OpenAPI document is exactly as strict as the validation.

Each body schema of the document, read by a JSON Schema validator, accepts
exactly the bodies the server accepts (but for the rules docs/api.md lists as
beyond JSON Schema), and the limits' maxima are the server's own settings.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

import falcon.testing
import jsonschema_rs
import pytest
from api_helpers import Api, sample_request
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from nixjail.api import create_app
from nixjail.api.openapi import build_openapi
from nixjail.api.schemas import LeaseCompletion, LeaseRelease, LeaseRequest, StageReport
from nixjail.models import MAX_PATH_BYTES, FileContent, ResolvedLimits, ResolvedStageLimits
from nixjail.settings import Settings
from nixjail.spool import Spool

DOCUMENT = build_openapi(Settings())


def validator(name: str, document: dict[str, Any] = DOCUMENT) -> Callable[[Any], bool]:
    """Whether a JSON value satisfies the document's component `name`."""
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema",
              "$ref": f"#/components/schemas/{name}",
              "components": document["components"]}
    return jsonschema_rs.Draft202012Validator(schema).is_valid


def accepted(validate: Callable[[bytes], Any], body: Any) -> bool:
    try:
        validate(json.dumps(body).encode())
    except ValidationError:
        return False
    return True


def beyond_json_schema(body: Any) -> bool:
    """The rules docs/api.md names as ones JSON Schema cannot state."""
    files = body.get("files") if isinstance(body, dict) else None
    if not isinstance(files, dict):
        return False
    return any(len(name.encode()) > MAX_PATH_BYTES or any(
        str(parent) in files for parent in PurePosixPath(name).parents if str(parent) != ".")
        for name in files)


# -- strategies that reach each rule's edges --------------------------------------

name_parts = st.text(alphabet="a.é/\\\x00\n ", max_size=6)
file_names = (name_parts | st.lists(st.sampled_from(["a", ".", "..", "...", ".a", "b\\c", ""]),
                                    min_size=1, max_size=4).map("/".join)
              | st.integers(250, 260).map(lambda n: "x" * n)
              | st.integers(120, 130).map(lambda n: "é" * n))
base64ish = st.text(alphabet="AQz09+/=-_ \n", max_size=10)
file_values = (st.text(max_size=3) | st.integers() | st.none()
               | st.fixed_dictionaries({"content": base64ish | st.integers()},
                                       optional={"encoding": st.sampled_from(
                                           ["base64", "utf-8", "hex", 1])}))
# Numbers at a limit's edges: zero, the maximum, just above, whole floats,
# and the strings and booleans strict validation refuses.
limit_values = st.sampled_from([0, -1, 1, 1.0, 0.5, 60, 60.0, 60.5, 61, 256, 2048, 2048.0,
                                2049, 65536, 65537, 10**400, True, False, "1", None, [1]])
limit_fields = st.sampled_from(["wall_time_s", "cpu_time_s", "memory_mib", "processes",
                                "output_kib", "file_size_kib", "other"])
stage_limits = st.dictionaries(limit_fields, limit_values, max_size=3) | st.integers()
limits = st.dictionaries(st.sampled_from(["dependencies", "compile", "run", "test"]),
                         stage_limits, max_size=3)
texts = st.text(alphabet="ab\x00 é", max_size=4) | st.none() | st.integers() | st.booleans()
submission_bodies = st.fixed_dictionaries(
    {"shell_nix": texts, "run_sh": texts},
    optional={"files": st.dictionaries(file_names, file_values, max_size=4),
              "compile_sh": texts, "stdin": texts, "limits": limits,
              "cache": st.booleans() | st.integers(0, 1) | st.none(), "other": st.just(1)})

tokens = st.text(alphabet="t\x00", max_size=3) | st.sampled_from(["t" * 256, "t" * 257, 1])
whole_ints = st.sampled_from([0, -1, 3, 3.0, 3.5, -2.0, 1e20, True, "3", None])
stage_results = st.fixed_dictionaries(
    {"status": st.sampled_from(["ok", "skipped", "bogus", 1])},
    optional={"exit_code": whole_ints, "signal": whole_ints, "wall_time_ms": whole_ints,
              "cpu_time_ms": whole_ints, "memory_kib": whole_ints, "stdout": texts,
              "stdout_truncated": st.booleans() | st.integers(0, 1),
              "cached": st.booleans() | st.none() | st.just("yes"), "extra": st.just(1)})
store_paths = st.sampled_from([
    "/nix/store/" + "a" * 32 + "-env", "/nix/store/" + "e" * 32 + "-env", "/tmp/x", 1])
environments = st.none() | st.fixed_dictionaries(
    {"key": st.sampled_from(["0" * 64, "0" * 63, "G" * 64]),
     "inputs": store_paths, "script": store_paths})
worker_bodies: dict[type[BaseModel], st.SearchStrategy[Any]] = {
    LeaseRequest: st.fixed_dictionaries(
        {"queue": st.sampled_from(["run", "dependencies", "build", None])},
        optional={"holder": tokens, "wait_s": st.sampled_from(
            [0, 0.5, -0.5, 10**400, 2.0**1000, "1", True, None])}),
    StageReport: st.fixed_dictionaries({"token": tokens, "result": stage_results}),
    LeaseCompletion: st.fixed_dictionaries(
        {"token": tokens},
        optional={"error": texts | st.just("e" * 4097), "environment": environments}),
    LeaseRelease: st.fixed_dictionaries({"token": tokens},
                                        optional={"reason": texts | st.just("")}),
}


# -- the equivalence ----------------------------------------------------------------

@settings(max_examples=1500, deadline=None)
@given(body=submission_bodies)
@example(body=sample_request(limits={"run": {"memory_mib": 256.0}}))
@example(body=sample_request(files={"a": "", "a/b": ""}))
def test_submission_schema_accepts_exactly_what_the_server_accepts(body: Any) -> None:
    server = Settings()
    by_server = accepted(lambda raw: server.validate_request(raw, strict=True), body)
    by_document = validator("SubmissionRequest")(body)
    if beyond_json_schema(body):
        # The document allows it; the server refuses it, and says why.
        assert by_document or not by_server
        assert not by_server
    else:
        assert by_server == by_document, body


@pytest.mark.parametrize("model", list(worker_bodies), ids=lambda m: m.__name__)
def test_worker_schemas_accept_exactly_what_the_server_accepts(model: type[BaseModel]) -> None:
    is_valid = validator(model.__name__)

    @settings(max_examples=400, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(body=worker_bodies[model])
    def check(body: Any) -> None:
        by_server = accepted(lambda raw: model.model_validate_json(raw, strict=True), body)
        assert by_server == is_valid(body), body

    check()


@settings(max_examples=2000, deadline=None)
@given(name=file_names)
def test_file_name_pattern_is_the_validators_rule(name: str) -> None:
    names = validator("SubmissionRequest")
    body = {"shell_nix": "x", "run_sh": "y", "files": {name: ""}}
    by_server = accepted(lambda raw: Settings().validate_request(raw, strict=True), body)
    if len(name.encode()) > MAX_PATH_BYTES >= len(name):
        assert names(body) and not by_server  # the one length the schema counts apart
    else:
        assert names(body) == by_server, name


@settings(max_examples=2000, deadline=None)
@given(content=base64ish)
@example(content="AAAA=")  # Python's own decoder would take it
@example(content="AAAA\n")
def test_base64_pattern_is_the_validators_rule(content: str) -> None:
    body = {"content": content, "encoding": "base64"}
    by_server = accepted(lambda raw: FileContent.model_validate_json(raw, strict=True), body)
    assert validator("FileContent")(body) == by_server, content


# -- the document follows the server's settings ---------------------------------------

def test_the_served_document_carries_the_servers_maxima(tmp_path: Path) -> None:
    maxima = ResolvedStageLimits(
        dependencies=ResolvedLimits(wall_time_s=7.5, cpu_time_s=7, memory_mib=700,
                                    processes=70, output_kib=77, file_size_kib=777),
        compile=ResolvedLimits(wall_time_s=8, cpu_time_s=8, memory_mib=800,
                               processes=80, output_kib=88, file_size_kib=888),
        run=ResolvedLimits(wall_time_s=9, cpu_time_s=9.5, memory_mib=900,
                           processes=90, output_kib=99, file_size_kib=999),
    )
    server = Settings(spool_dir=tmp_path / "spool", run_dir=tmp_path / "run",
                      limits_max=maxima)
    spool = Spool(server.spool_dir, server.run_dir)
    client = falcon.testing.TestClient(create_app(spool, server, kick=lambda: None))
    document = client.simulate_get("/v1/openapi.json").json
    assert document == json.loads(json.dumps(build_openapi(server)))
    schemas = document["components"]["schemas"]
    request_limits = schemas["SubmissionRequest"]["properties"]["limits"]["$ref"]
    assert request_limits == "#/components/schemas/RequestLimits"
    for stage, allowed in maxima:
        ref = schemas["RequestLimits"]["properties"][stage]["$ref"]
        properties = schemas[ref.rsplit("/", 1)[1]]["properties"]
        for field, maximum in allowed:
            number = properties[field]["anyOf"][0]
            assert (number["maximum"], number["exclusiveMinimum"]) == (maximum, 0)
    # An accepted submission is shown without today's maxima: it was accepted
    # under those of its day.
    assert schemas["Submission"]["properties"]["request"]["$ref"] == \
        "#/components/schemas/AcceptedRequest"
    assert "maximum" not in json.dumps(schemas["StageLimits"])

    is_valid = validator("SubmissionRequest", document)
    at_most = sample_request(limits={"run": {"memory_mib": 900, "cpu_time_s": 9.5}})
    above = sample_request(limits={"compile": {"processes": 81}})
    assert is_valid(at_most) and not is_valid(above)
    assert client.simulate_post("/v1/submissions", json=at_most).status_code == 202
    refused = client.simulate_post("/v1/submissions", json=above)
    assert refused.status_code == 422
    assert refused.json["errors"] == [{"field": "limits.compile.processes",
                                       "reason": "81 is above the maximum 80"}]


# -- over HTTP: what the document promises, the real server does ------------------------

def test_whole_numbers_are_integers_and_nothing_else_is(api: Api) -> None:
    whole = api.post("/v1/submissions", json=sample_request(
        limits={"run": {"memory_mib": 256.0, "processes": 1e1}}))
    assert whole.status_code == 202, whole.text
    assert whole.json()["limits"]["run"]["memory_mib"] == 256
    assert whole.json()["limits"]["run"]["processes"] == 10
    for value in ("256", True, 2.5):
        refused = api.post("/v1/submissions",
                           json=sample_request(limits={"run": {"memory_mib": value}}))
        assert refused.status_code == 422, value
        assert refused.json()["errors"][0]["field"] == "limits.run.memory_mib"


@pytest.mark.parametrize(("body", "field"), [
    (sample_request(shell_nix="a\x00b"), "shell_nix"),
    (sample_request(run_sh="\x00"), "run_sh"),
    (sample_request(compile_sh="x\x00"), "compile_sh"),
    (sample_request(files={"a\\b": ""}), 'files["a\\\\b"]'),
    (sample_request(files={"a/./b": ""}), 'files["a/./b"]'),
    (sample_request(files={"x" * 256: ""}), f'files["{"x" * 256}"]'),
    (sample_request(files={"b": {"content": "AAAA=", "encoding": "base64"}}), 'files["b"]'),
    (sample_request(files={"a": "", "a/b": ""}), "files"),
])
def test_each_rule_the_document_states_is_refused_with_its_field(
        api: Api, body: dict[str, Any], field: str) -> None:
    refused = api.post("/v1/submissions", json=body)
    assert refused.status_code == 422, refused.text
    assert refused.json()["errors"][0]["field"] == field
    # and the document says so too, but for the file under a file
    assert validator("SubmissionRequest")(body) is (field == "files")


def test_a_repeated_nameless_parameter_names_the_query(api: Api) -> None:
    answer = api.get("/v1/submissions?=a&=b")
    assert answer.status_code == 400
    assert answer.json()["errors"] == [{"field": "query", "reason": "given more than once"}]


@pytest.mark.parametrize("query", ["bogus=", "bogus", "wait=", "status=", "cursor=", "limit="])
def test_a_blank_parameter_is_still_a_parameter(api: Api, query: str) -> None:
    path = "/v1/submissions" if not query.startswith("wait") else "/v1/submissions/0"
    answer = api.get(f"{path}?{query}")
    assert answer.status_code == 400, answer.text
    assert answer.json()["errors"][0]["field"].startswith(query.partition("=")[0])  # status[0]
