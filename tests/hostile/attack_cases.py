"""The attack directories under `attacks/`: each one's submission and how its
outcome is judged.

A directory holds `attack.json` and, where the attack needs them, `shell.nix`
(else a busybox shell), `compile.sh`, `run.sh` (else `true`), `stdin` and
`files/` (sent as the submission's files; bytes that are not UTF-8 go as
base64). `attack.json`:

- `attack`, `class`, `where` (run, compile, shell.nix, request): what the
  table in docs/security.md says of it; `outcome`: the expected outcome in
  words, for the same table.
- `cache`: the values of `cache` it runs with (default both); `alone`: run
  it with no other case beside it (its leftovers would be host-wide).
- `open`: `{"reason": ..., "cache": [...]}` while the hole it shows is not
  closed yet (for those values of `cache`, default both): the case is a
  strict xfail, which fails as soon as the attack is held.
- `limits`, `stdin`: as in the request; `request`: fields laid over the
  request as given (names no directory can hold); `generate_files`:
  `{"count": N, "content": "..."}` (or `"size": BYTES` of "x") adds N files
  `f0`, `f1`, ...
- `expect`: `status` of the submission (a list: any of them); `error` (exact,
  or `error_has`); `http` and `fields` for a request the API must refuse (the
  status, and the fields its errors name); `stages`: per stage, any field of
  the stage result (exact, or a list of allowed values), and `FIELD_has`,
  `FIELD_lacks` (lists of substrings), `FIELD_min`, `FIELD_max` (numbers;
  `stdout_len_max` bounds the length of stdout).
  `when_cache` and `when_no_cache` lay a stage's expectations over `stages`
  for one value of `cache`. `cases`: the same, per test case, in order (for
  a `request` with `tests`).

`probes`: files of `probes/` sent with it (`abi-probe`, a static program
making raw system calls, for a jail with no compiler); `victim`: fields of
a submission made (with the same `cache`) and ended before the attack.

Every text of the submission and of `expect` may say `@NONCE@` (fresh for
each case: a shell.nix with it is built anew every time, and what the attack
leaves can be told by it), `@API_PORT@` (the API's loopback port),
`@STATE_DIR@` and `@RUN_DIR@` (the stack's), `@HOST_BOOT_ID@` and
`@HOST_CMDLINE@` (the host kernel's, which the jail must not learn).
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from serve_stack import SHELL_NIX

ATTACKS_DIR = Path(__file__).parent / "attacks"
PROBES_DIR = Path(__file__).parent / "probes"
STAGE_NAMES = ("dependencies", "compile", "run")
# Beyond the stages' own wall times: building, containers, a loaded machine.
WAIT_SLACK_S = 120


def _substitute(value: Any, marks: dict[str, str]) -> Any:
    if isinstance(value, str):
        for mark, text in marks.items():
            value = value.replace(mark, text)
        return value
    if isinstance(value, list):
        return [_substitute(item, marks) for item in value]
    if isinstance(value, dict):
        return {_substitute(k, marks): _substitute(v, marks) for k, v in value.items()}
    return value


def _file_content(data: bytes) -> str | dict[str, str]:
    try:
        return data.decode()
    except UnicodeDecodeError:
        return {"content": base64.b64encode(data).decode(), "encoding": "base64"}


@dataclass
class Attack:
    name: str
    path: Path
    spec: dict

    @property
    def caches(self) -> list[bool]:
        return list(self.spec.get("cache", [True, False]))

    @property
    def wait_s(self) -> float:
        limits = self.spec.get("limits", {})
        return WAIT_SLACK_S + sum(limits.get(stage, {}).get("wall_time_s", 30)
                                  for stage in STAGE_NAMES)

    def _text(self, name: str) -> str | None:
        file = self.path / name
        return file.read_text() if file.exists() else None

    def request(self, *, cache: bool, marks: dict[str, str]) -> dict:
        files: dict[str, Any] = {}
        if (self.path / "files").is_dir():
            for file in sorted((self.path / "files").rglob("*")):
                if file.is_file() and not file.is_symlink():
                    files[str(file.relative_to(self.path / "files"))] = \
                        _file_content(file.read_bytes())
        for probe in self.spec.get("probes", []):
            files[probe] = _file_content((PROBES_DIR / probe).read_bytes())
        generate = self.spec.get("generate_files")
        if generate:
            content = generate.get("content", "x" * generate.get("size", 0))
            files.update({f"f{i}": content for i in range(generate["count"])})
        body: dict[str, Any] = {
            "shell_nix": self._text("shell.nix") or SHELL_NIX,
            "run_sh": self._text("run.sh") or "true",
            "files": files,
            "limits": self.spec.get("limits", {}),
            "cache": cache,
        }
        if (compile_sh := self._text("compile.sh")) is not None:
            body["compile_sh"] = compile_sh
        stdin = self._text("stdin")
        if stdin is not None or "stdin" in self.spec:
            body["stdin"] = stdin if stdin is not None else self.spec["stdin"]
        body.update(self.spec.get("request", {}))
        return _substitute(body, marks)

    def victim(self, *, cache: bool, marks: dict[str, str]) -> dict | None:
        """A submission made and ended before the attack, for it to go after."""
        victim = self.spec.get("victim")
        return None if victim is None else _substitute({**victim, "cache": cache}, marks)

    def expect(self, *, cache: bool, marks: dict[str, str]) -> dict:
        expect = json.loads(json.dumps(self.spec["expect"]))
        over = expect.pop("when_cache" if cache else "when_no_cache", {})
        expect.pop("when_no_cache" if cache else "when_cache", None)
        stages = expect.setdefault("stages", {})
        for stage, fields in over.get("stages", {}).items():
            stages[stage] = {**stages.get(stage, {}), **fields}
        expect.update({k: v for k, v in over.items() if k != "stages"})
        return _substitute(expect, marks)


def all_attacks() -> list[Attack]:
    return [Attack(path.name, path, json.loads((path / "attack.json").read_text()))
            for path in sorted(ATTACKS_DIR.iterdir()) if (path / "attack.json").exists()]


def _one_of(value: Any, allowed: Any) -> bool:
    return value in allowed if isinstance(allowed, list) else value == allowed


def _short(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 300 else text[:300] + "..."


def _around(text: str, found: str) -> str:
    """The lines of `text` that hold `found`."""
    lines = [line for line in text.splitlines() if found in line]
    return _short("\n".join(lines[:5]))


def _judge_stage(stage: str, expect: dict, result: dict | None) -> list[str]:
    if result is None:
        return [f"{stage}: no result, expected {_short(expect)}"]
    problems = []
    for key, wanted in expect.items():
        field, _, test = key.rpartition("_")
        measured = field.removesuffix("_len")
        if test in ("has", "lacks", "min", "max") and measured in result:
            value = result[measured] if field == measured else len(result[measured])
            if test == "has":
                problems += [f"{stage}.{field} lacks {text!r}: {_short(value)}"
                             for text in wanted if text not in value]
            elif test == "lacks":
                problems += [f"{stage}.{field} has {text!r}: {_around(value, text)}"
                             for text in wanted if text in value]
            elif test == "min" and value < wanted:
                problems.append(f"{stage}.{field} is {value}, below {wanted}")
            elif test == "max" and value > wanted:
                problems.append(f"{stage}.{field} is {value}, above {wanted}")
        elif key not in result:
            problems.append(f"{stage}.{key} missing from the result (expected {wanted!r})")
        elif not _one_of(result[key], wanted):
            problems.append(f"{stage}.{key} is {_short(result[key])}, expected {wanted!r}"
                            + ("" if key != "status" else
                               f" (stdout {_short(result.get('stdout', ''))[:200]}, "
                               f"stderr {_short(result.get('stderr', ''))[-300:]})"))
    return problems


def judge(expect: dict, submission: dict) -> list[str]:
    """What in the submission (or the API's refusal) differs from `expect`."""
    if "http_status" in submission:
        if "http" not in expect:
            return [f"the API refused it: {submission['http_status']} "
                    f"{_short(submission['body'])}"]
        problems = []
        if submission["http_status"] != expect["http"]:
            problems.append(f"the API answered {submission['http_status']}, "
                            f"expected {expect['http']}")
        named = {error.get("field", "") for error in submission["body"].get("errors", [])}
        problems += [f"the refusal does not name {field!r}: {_short(submission['body'])}"
                     for field in expect.get("fields", [])
                     if not any(name == field or name.startswith((f"{field}.", f"{field}["))
                                for name in named)]
        return problems
    if "http" in expect:
        return [f"the API accepted it (expected {expect['http']}); it ended "
                f"{submission['status']}"]
    problems = []
    if "status" in expect and not _one_of(submission["status"], expect["status"]):
        problems.append(f"the submission ended {submission['status']}, expected "
                        f"{expect['status']!r} (error: {submission.get('error')})")
    if "error" in expect and submission.get("error") != expect["error"]:
        problems.append(f"its error is {submission.get('error')!r}, expected "
                        f"{expect['error']!r}")
    for text in expect.get("error_has", []):
        if text not in (submission.get("error") or ""):
            problems.append(f"its error {submission.get('error')!r} lacks {text!r}")
    for stage, fields in expect.get("stages", {}).items():
        problems += _judge_stage(stage, fields, submission["stages"].get(stage))
    cases = submission.get("tests") or []
    for index, fields in enumerate(expect.get("cases", [])):
        problems += _judge_stage(f"tests[{index}]", fields,
                                 cases[index] if index < len(cases) else None)
    return problems


def observed(submission: dict) -> str:
    """The outcome in a few words, for the table."""
    if "http_status" in submission:
        fields = sorted({e.get("field", "") for e in submission["body"].get("errors", [])})
        return f"refused {submission['http_status']} ({', '.join(fields)})"
    stages = ", ".join(f"{stage} {result['status']}"
                       for stage in STAGE_NAMES
                       if (result := submission["stages"].get(stage))
                       and result["status"] != "skipped")
    return f"{submission['status']}" + (f"; {stages}" if stages else "")
