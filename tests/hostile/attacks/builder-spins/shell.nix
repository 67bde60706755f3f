{ pkgs ? import <nixpkgs> {} }:
let attack = derivation {
  name = "hostile-builder-spins";
  system = builtins.currentSystem;
  builder = "${pkgs.bash}/bin/bash";
  PATH = "${pkgs.busybox}/bin";
  nonce = "@NONCE@";
  args = [ "-c" ''
while :; do :; done
'' ];
};
in pkgs.mkShell { packages = [ attack ]; }
