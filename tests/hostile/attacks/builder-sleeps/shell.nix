{ pkgs ? import <nixpkgs> {} }:
let attack = derivation {
  name = "hostile-builder-sleeps";
  system = builtins.currentSystem;
  builder = "${pkgs.bash}/bin/bash";
  PATH = "${pkgs.busybox}/bin";
  nonce = "@NONCE@";
  args = [ "-c" ''
sleep 600
'' ];
};
in pkgs.mkShell { packages = [ attack ]; }
