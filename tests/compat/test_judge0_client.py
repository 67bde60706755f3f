"""Judge0's own Python client (the `judge0` package) against the whole stack:
the API on waitress, the runner, dockerd and the fixture nixpkgs, with the
fixture catalog's bash as Judge0 language 46."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import judge0
import pytest
from compat_helpers import start_compat_stack
from e2e_stack import Stack

pytestmark = [pytest.mark.docker, pytest.mark.nix]

COMPAT = """
[compat.judge0]
enabled = true
"""


@pytest.fixture(scope="module")
def judge0_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    yield from start_compat_stack(tmp_path_factory.mktemp("judge0"), COMPAT)


@pytest.fixture(scope="module")
def client(judge0_stack: Stack) -> judge0.Client:
    # The constructor reads /languages and /config_info, and fails on a missing key.
    return judge0.Client(f"{judge0_stack.url}/judge0",
                         {"Authorization": f"Bearer {judge0_stack.token}"},
                         retry_strategy=judge0.MaxWaitTime(180))


def test_a_bash_program_runs_and_its_output_comes_back(client: judge0.Client) -> None:
    assert client.version == "1.13.1"
    # The alias goes through the client's table for the version /about reports.
    submission = judge0.run(client=client, source_code='read name; echo "hello $name $1"',
                            language=judge0.BASH, stdin="world\n",
                            command_line_arguments="'from nixjail'")
    assert submission.status == judge0.Status.ACCEPTED, submission
    assert submission.stdout == "hello world from nixjail\n"
    assert submission.exit_code == 0
    assert submission.time is not None and submission.memory is not None
    assert submission.finished_at is not None and submission.created_at is not None
    assert submission.finished_at >= submission.created_at


def test_a_different_output_is_a_wrong_answer(client: judge0.Client) -> None:
    accepted = judge0.run(client=client, source_code="echo 5", language=46,
                          expected_output="5  \n\n")
    assert accepted.status == judge0.Status.ACCEPTED, accepted
    wrong = judge0.run(client=client, source_code="echo 4", language=46,
                       expected_output="5\n")
    assert wrong.status == judge0.Status.WRONG_ANSWER, wrong
    assert wrong.stdout == "4\n"


def test_a_time_limit_gives_status_5(client: judge0.Client) -> None:
    submission = judge0.run(client=client, source_code="while :; do :; done", language=46,
                            cpu_time_limit=1, wall_time_limit=10)
    assert submission.status == judge0.Status.TIME_LIMIT_EXCEEDED, submission
    assert submission.time is not None and submission.time >= 1


def test_a_batch_of_three_comes_back_in_order(client: judge0.Client) -> None:
    submissions = [judge0.Submission(source_code=f"echo {n}", language=46) for n in (1, 2, 3)]
    done = judge0.run(client=client, submissions=submissions)
    assert [s.status for s in done] == [judge0.Status.ACCEPTED] * 3, done
    assert [s.stdout for s in done] == ["1\n", "2\n", "3\n"]
    assert len({str(s.token) for s in done}) == 3


def test_a_nonzero_exit_is_nzec(client: judge0.Client) -> None:
    submission = judge0.run(client=client, source_code="echo oops >&2; exit 3", language=46)
    assert submission.status == judge0.Status.RUNTIME_ERROR_NZEC, submission
    assert (submission.exit_code, submission.stderr) == (3, "oops\n")


def test_additional_files_lie_beside_the_source(client: judge0.Client) -> None:
    files = judge0.Filesystem(content=[judge0.File(name="data/numbers.txt", content="2 3\n")])
    submission = judge0.run(client=client, language=46, additional_files=files,
                            source_code="read a b < data/numbers.txt; echo $((a + b))")
    assert submission.status == judge0.Status.ACCEPTED, submission
    assert submission.stdout == "5\n"


def test_a_refusal_reaches_the_client_as_judge0s(client: judge0.Client) -> None:
    with pytest.raises(httpx.HTTPStatusError) as refused:
        judge0.run(client=client, source_code="true", language=46, enable_network=True)
    assert refused.value.response.status_code == 422
    assert refused.value.response.json() == {
        "enable_network": ["is not allowed: nixjail runs every submission without a network"]}


def test_the_token_may_come_as_x_auth_token(judge0_stack: Stack) -> None:
    client = judge0.Client(f"{judge0_stack.url}/judge0", {"X-Auth-Token": judge0_stack.token},
                           retry_strategy=judge0.MaxWaitTime(180))
    submission = judge0.run(client=client, source_code="echo via x-auth-token", language=46)
    assert submission.stdout == "via x-auth-token\n", submission


def test_without_a_token_the_client_cannot_start(judge0_stack: Stack) -> None:
    with pytest.raises(RuntimeError, match="Authentication failed"):
        judge0.Client(f"{judge0_stack.url}/judge0")
