{ pkgs ? import <nixpkgs> {} }:
let spin = n: if n == 0 then 0 else spin (n - 1 + 1); in
pkgs.mkShell { packages = [ pkgs.busybox ]; nonce = "@NONCE@"; LEAK = toString (spin 1); }
