{ pkgs ? import <nixpkgs> {} }:
let attack = derivation {
  name = "hostile-flood-no-newline-shell-nix";
  system = builtins.currentSystem;
  builder = "${pkgs.bash}/bin/bash";
  PATH = "${pkgs.busybox}/bin";
  nonce = "@NONCE@";
  args = [ "-c" ''
head -c 20000000 /dev/zero | tr '\0' x >&2
exit 1
'' ];
};
in pkgs.mkShell { packages = [ attack ]; }
