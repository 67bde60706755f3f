{ pkgs ? import <nixpkgs> {} }:
let attack = derivation {
  name = "hostile-builder-big-output";
  system = builtins.currentSystem;
  builder = "${pkgs.bash}/bin/bash";
  PATH = "${pkgs.busybox}/bin";
  nonce = "@NONCE@";
  args = [ "-c" ''
head -c 25165824 /dev/zero > "$out"
'' ];
};
in pkgs.mkShell { packages = [ attack ]; }
