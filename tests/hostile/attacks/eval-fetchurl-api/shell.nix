{ pkgs ? import <nixpkgs> {} }:

pkgs.mkShell { packages = [ pkgs.busybox ]; nonce = "@NONCE@"; LEAK = builtins.readFile (builtins.fetchurl "http://127.0.0.1:@API_PORT@/healthz"); }
