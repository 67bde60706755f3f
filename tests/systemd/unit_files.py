"""nixjail's unit templates as data, and what every deployment of them must keep.

Shared by tests/systemd (which boots the templates under systemd) and
tests/nixos (which evaluates the NixOS module that enables them and adds
drop-ins): both check the same properties of the same templates, so a unit
on NixOS is the unit booted here.
"""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
UNITS_DIR = REPO / "nixos" / "units"

# What a drop-in may not change: how the unit starts, as whom, where it keeps
# its state, and its hardening. Checked for every [Service] key of a template
# but these, which hosts may set.
HOST_KEYS = frozenset({"Environment", "LoadCredential"})

# The commands each service runs from its PATH (besides the nixjail command).
REQUIRED_TOOLS = {
    "nixjail-cache-builder.service": {"nix-build", "nix", "nix-daemon", "nsjail", "bash",
                                     "mount", "umount"},
    "nixjail-runner.service": {"nix"},
    "nixjail-gc.service": {"nix-store"},
}

# The directories every unit that declares them must declare alike (systemd
# chowns and chmods them to the unit's user and modes at each start).
DIRECTORIES = {
    "StateDirectory": "nixjail",
    "StateDirectoryMode": "0750",
    "RuntimeDirectory": "nixjail",
    "RuntimeDirectoryMode": "0711",
    "RuntimeDirectoryPreserve": "yes",
}


def parse(text: str) -> dict[str, dict[str, list[str]]]:
    """Sections of a unit file, each key with its values in order (an empty
    value resets the list, as systemd does for list-valued keys)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"a key outside a section: {raw!r}"
        key, _, value = line.partition("=")
        key, value = key.strip(), value.strip()
        if value == "":
            current[key] = []
        else:
            current.setdefault(key, []).append(value)
    return sections


def template(unit: str, nixjail: str = "@nixjail@") -> dict[str, dict[str, list[str]]]:
    text = (UNITS_DIR / f"{unit}.in").read_text()
    return parse(text.replace("@nixjail@", nixjail))


def shipped_units() -> list[str]:
    return sorted(path.name.removesuffix(".in") for path in UNITS_DIR.glob("*.in")
                  if path.name.endswith((".service.in", ".socket.in", ".timer.in")))


def with_drop_in(base: dict[str, dict[str, list[str]]],
                 drop_in: dict[str, dict[str, list[str]]]) -> dict[str, dict[str, list[str]]]:
    """The unit as systemd sees it with a drop-in: list keys append (an empty
    value resets them), any other key takes the drop-in's value."""
    merged = {section: {key: list(values) for key, values in keys.items()}
              for section, keys in base.items()}
    for section, keys in drop_in.items():
        target = merged.setdefault(section, {})
        for key, values in keys.items():
            for value in values:
                if value == "":
                    target[key] = []
                elif key in LIST_KEYS:
                    target.setdefault(key, []).append(value)
                else:
                    target[key] = [value]
    return merged


# Keys whose assignments accumulate; any other key's last assignment wins.
LIST_KEYS = frozenset({
    "Environment", "LoadCredential", "ListenStream", "After", "Wants", "Requires", "Before",
    "WantedBy", "OnFailure", "OnSuccess", "SystemCallFilter", "SupplementaryGroups",
    "ReadWritePaths", "ExecStartPre", "ExecStartPost",
})


def single(unit: dict[str, dict[str, list[str]]], section: str, key: str) -> str | None:
    values = unit.get(section, {}).get(key)
    return values[-1] if values else None


def service_contract(unit: str) -> dict[str, list[str]]:
    """Every [Service] key of the template that no host may change."""
    return {key: values for key, values in template(unit).get("Service", {}).items()
            if key not in HOST_KEYS}
