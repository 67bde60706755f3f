{ pkgs ? import <nixpkgs> {} }:
let fetched = import <nix/fetchurl.nix> {
  url = "http://127.0.0.1:@API_PORT@/healthz?@NONCE@";
  sha256 = "0000000000000000000000000000000000000000000000000000";
};
in pkgs.mkShell { packages = [ pkgs.busybox fetched ]; }
