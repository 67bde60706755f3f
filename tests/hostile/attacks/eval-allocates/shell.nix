{ pkgs ? import <nixpkgs> {} }:
let big = builtins.genList (x: x) 2000000000; in
pkgs.mkShell { packages = [ pkgs.busybox ]; nonce = "@NONCE@"; LEAK = toString (builtins.foldl' (a: b: a + b) 0 big); }
