"""Type stubs of the parts of the NixOS test driver that vm-tests/*.nix use,
with the signatures of nixpkgs' nixos/lib/test-driver (26.05), so that mypy
checks the test scripts as the driver's own type check does."""
