"""nixjail's benchmarks (issue 11): every figure measured against its baseline
in the same run, against the real stack (`nixjail serve`, dockerd, Nix, the
runner image). Run from the repository root:

    .venv/bin/python -m bench            # the full run
    .venv/bin/python -m bench --quick    # a small one
    .venv/bin/python -m bench --json -   # the same as JSON

See docs/performance.md.
"""
