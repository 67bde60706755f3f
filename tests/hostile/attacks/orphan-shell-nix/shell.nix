{ pkgs ? import <nixpkgs> {} }:
let attack = derivation {
  name = "hostile-orphan-shell-nix";
  system = builtins.currentSystem;
  builder = "${pkgs.bash}/bin/bash";
  PATH = "${pkgs.busybox}/bin";
  nonce = "@NONCE@";
  args = [ "-c" ''
setsid sh -c 'sleep 300' </dev/null >/dev/null 2>&1 &
nohup sleep 300 </dev/null >/dev/null 2>&1 &

mkdir -p "$out"
'' ];
};
in pkgs.mkShell { packages = [ attack ]; }
