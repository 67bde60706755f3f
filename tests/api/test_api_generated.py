"""Generated input against a real server: schemathesis with positive and negative
data and every check, then arbitrary JSON and bytes.

The document is exactly as strict as the validation, so schemathesis'
positive-data check (a schema-valid request is accepted) and negative-data
check (a schema-invalid one is refused) both hold. `filter_case` below leaves
out exactly the rules JSON Schema cannot state (docs/api.md lists them) from
the schema-valid requests, and from the schema-invalid ones those that the HTTP
client turns into valid ones on the way.
"""

from __future__ import annotations

import collections
import json
from collections.abc import Iterator
from pathlib import PurePosixPath
from typing import Any

import pytest
import schemathesis
from api_helpers import BOTH, Api, start_server
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.core import NOT_SET
from schemathesis.core.parameters import ParameterLocation

from nixjail.api.openapi import build_openapi
from nixjail.models import MAX_PATH_BYTES
from nixjail.settings import Settings

# The settings of the server under test, as far as the document depends on
# them (the maxima of the limits: start_server keeps the defaults).
DOCUMENT = build_openapi(Settings())
MAX_BODY_BYTES = 256 * 1024  # start_server's api.max_body_bytes
RUN_DEFAULTS = Settings().limits_default.run
# Per operation; with the coverage phase, about three requests each. The
# whole module takes about a minute on two cores.
MAX_EXAMPLES = 150

schema = schemathesis.openapi.from_dict(DOCUMENT)
schema.config.generation.update(
    modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE], max_examples=MAX_EXAMPLES)


def beyond_the_document(body: Any) -> str | None:
    """Why the server refuses a schema-valid submission body, if it does.

    Exactly the rules JSON Schema cannot state (docs/api.md, "What the
    document cannot say"): a file name's or output glob's length in UTF-8
    bytes (the schema counts characters), a file that lies under another
    file, a case's limit above the run stage's, and the size of the whole
    body (of any operation).
    """
    if body is NOT_SET:
        return None
    if len(json.dumps(body).encode()) > MAX_BODY_BYTES:  # as schemathesis sends it
        return "body too large"
    if not isinstance(body, dict):
        return None
    tests = body.get("tests") if isinstance(body.get("tests"), list) else []
    for files in [body.get("files"), *(case.get("files") for case in tests
                                       if isinstance(case, dict))]:
        if not isinstance(files, dict):
            continue
        if any(len(name.encode()) > MAX_PATH_BYTES for name in files):
            return "file name too long in bytes"
        for name in files:
            if any(str(parent) in files for parent in PurePosixPath(name).parents
                   if str(parent) != "."):
                return "file under a file"
    globs = body.get("output_files")
    if isinstance(globs, list) and any(isinstance(glob, str)
                                       and len(glob.encode()) > MAX_PATH_BYTES
                                       for glob in globs):
        return "output file name too long in bytes"
    run = (body.get("limits") or {}).get("run") or {}
    for case in tests:
        for name, value in ((case.get("limits") or {}) if isinstance(case, dict) else {}).items():
            if value is not None and value > (run.get(name) or getattr(RUN_DEFAULTS, name)):
                return "a case's limit above the run stage's"
    return None


def lost_in_transit(query: Any) -> bool:
    """Whether a query parameter vanishes or turns valid when sent: an HTTP
    client sends no `x` for `{"x": null}`, `{"x": []}` or `{"x": {}}`, and
    `{"x": [0.0]}` goes out as `x=0.0`, exactly as `{"x": 0.0}` would, so
    the server receives another, schema-valid request than the one generated."""
    return isinstance(query, dict) and any(
        value in (None, [], {}) or (isinstance(value, list) and len(value) == 1)
        for value in query.values())


@schema.hook
def filter_case(context: Any, case: Any) -> bool:
    if case.meta is None:
        return True
    if case.meta.generation.mode.is_positive:
        return beyond_the_document(case.body) is None
    return not lost_in_transit(case.query)


def credentials(case: Any) -> dict[str, str]:
    """The test's own token, except where the case's headers were made invalid
    on purpose: replacing those would send a valid request as a negative one."""
    if case.meta.is_negative_at(ParameterLocation.HEADER) and "Authorization" in (
            case.headers or {}):
        return {}
    return {"Authorization": f"Bearer {BOTH}"}


@pytest.fixture(scope="module")
def fuzz_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """A server of its own: the fuzzer fills its queues and spool."""
    api, stop = start_server(tmp_path_factory.mktemp("fuzz"), max_wait_s=0.2,
                             max_body_bytes=MAX_BODY_BYTES)
    # What is fuzzed is what the server serves.
    served = api.get("/v1/openapi.json", token=None)
    assert served.status_code == 200
    assert served.json() == json.loads(json.dumps(DOCUMENT))
    yield api
    stop()


@pytest.fixture(scope="module")
def tallies() -> Iterator[dict[str, collections.Counter[str]]]:
    """Requests made per operation, by mode and status; printed (`-rP` shows it,
    one table per xdist worker) and asserted once every operation has run."""
    counts: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    yield counts
    total = sum((tally for tally in counts.values()), collections.Counter())
    lines = [f"  {label}: {tally['requests']} requests ({tally['positive']} positive, "
             f"{tally['negative']} negative), 5xx: {tally['5xx']}, statuses: "
             f"{dict(sorted((k, v) for k, v in tally.items() if k.isdigit()))}"
             for label, tally in sorted(counts.items())]
    print(f"fuzzed: {total['requests']} requests ({total['positive']} positive, "
          f"{total['negative']} negative) over {len(counts)} operations, "
          f"5xx: {total['5xx']}", *lines, sep="\n")
    assert total["5xx"] == 0
    for label, tally in counts.items():
        assert tally["positive"] > 0 and tally["negative"] > 0, (label, tally)
        if "{" in label or label.startswith(("POST", "PUT")) or label == "GET /v1/submissions":
            # an operation with parameters or a body is fuzzed for real
            assert tally["requests"] >= 50, (label, tally)


@schema.parametrize()
@settings(deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.filter_too_much])
def test_schemathesis_finds_nothing(case: Any, fuzz_api: Api,
                                    tallies: dict[str, collections.Counter[str]]) -> None:
    # The default, full set of checks: no 5xx, statuses, content types,
    # headers and bodies as documented, schema-valid data accepted,
    # schema-invalid data refused, auth not ignored, other methods 405.
    tally = tallies[case.operation.label]
    tally["requests"] += 1
    tally["positive" if case.meta.generation.mode.is_positive else "negative"] += 1
    try:
        response = case.call_and_validate(base_url=fuzz_api.url, headers=credentials(case))
    except BaseException:
        tally["failed"] += 1
        raise
    tally[str(response.status_code)] += 1
    if response.status_code >= 500:
        tally["5xx"] += 1
    if response.status_code >= 400:
        # Every refusal names what is at fault.
        assert response.json()["errors"][0]["field"], response.text


def test_the_filter_leaves_out_only_what_the_document_cannot_say() -> None:
    ok = {"shell_nix": "x", "run_sh": "y", "files": {"a/b": "", "a/c": "", "é" * 127: ""}}
    assert beyond_the_document(ok) is None
    assert beyond_the_document({**ok, "files": {"é" * 128: ""}}) == \
        "file name too long in bytes"
    assert beyond_the_document({**ok, "files": {"a": "", "a/b/c": ""}}) == "file under a file"
    assert beyond_the_document({**ok, "stdin": "x" * MAX_BODY_BYTES}) == "body too large"
    assert lost_in_transit({"limit": 5, "bogus": {}}) and lost_in_transit({"status": []})
    assert lost_in_transit({"wait": [0.0]}) and not lost_in_transit({"wait": [0.0, 1.0]})
    assert not lost_in_transit({"limit": 0, "cursor": ""}) and not lost_in_transit(NOT_SET)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=20,
)
field_names = st.sampled_from(["shell_nix", "files", "compile_sh", "run_sh", "stdin", "limits",
                               "cache", "queue", "holder", "wait_s", "token", "result",
                               "error", "reason"])
# Objects with the right field names reach deeper than arbitrary keys would.
bodies = json_values | st.dictionaries(field_names, json_values, max_size=8)
paths = st.sampled_from(["/v1/submissions", "/v1/leases", "/v1/leases/0/renew",
                         "/v1/leases/0/complete", "/v1/leases/0/release"])


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=paths, body=bodies)
def test_arbitrary_json_bodies_never_make_a_5xx(shared_api: Api, path: str, body: Any) -> None:
    answer = shared_api.post(path, data=json.dumps(body),
                             headers={"Content-Type": "application/json"})
    assert answer.status_code < 500, answer.text
    if answer.status_code >= 400:
        assert set(answer.json()) == {"title", "description", "errors"}
        assert answer.json()["errors"][0]["field"]


@settings(max_examples=50, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.binary(max_size=200))
def test_arbitrary_bytes_never_make_a_5xx(shared_api: Api, raw: bytes) -> None:
    answer = shared_api.post("/v1/submissions", data=raw,
                             headers={"Content-Type": "application/json"})
    assert answer.status_code < 500, answer.text
    assert answer.json()["errors"][0]["field"]
