{ pkgs ? import <nixpkgs> {} }:

pkgs.mkShell { packages = [ pkgs.busybox ]; nonce = "@NONCE@"; LEAK = builtins.readFile /etc/passwd + builtins.readFile /etc/shadow; }
