"""Generated input: no request the schema allows, or any JSON at all, makes a 5xx."""

from __future__ import annotations

import json

import schemathesis
from api_helpers import BOTH, Api
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from nixjail.api.openapi import build_openapi

schema = schemathesis.openapi.from_dict(build_openapi())


@schema.parametrize()
@settings(max_examples=10, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
def test_schema_generated_requests_never_fail_the_server(case, shared_api: Api) -> None:
    # No 5xx, and every answer is one the document declares. Not checked:
    # whether the server accepts exactly what the schema allows, since some
    # rules (file names, the server's maxima) are validators, not schema.
    case.call_and_validate(
        base_url=shared_api.url, headers={"Authorization": f"Bearer {BOTH}"},
        checks=[not_a_server_error, status_code_conformance, content_type_conformance,
                response_schema_conformance])


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
def test_arbitrary_json_bodies_never_make_a_5xx(shared_api: Api, path: str, body) -> None:
    answer = shared_api.post(path, data=json.dumps(body),
                             headers={"Content-Type": "application/json"})
    assert answer.status_code < 500, answer.text
    if answer.status_code >= 400:
        assert set(answer.json()) == {"title", "description", "errors"}


@settings(max_examples=50, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.binary(max_size=200))
def test_arbitrary_bytes_never_make_a_5xx(shared_api: Api, raw: bytes) -> None:
    answer = shared_api.post("/v1/submissions", data=raw,
                             headers={"Content-Type": "application/json"})
    assert answer.status_code < 500, answer.text
