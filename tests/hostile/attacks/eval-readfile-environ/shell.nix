{ pkgs ? import <nixpkgs> {} }:

pkgs.mkShell { packages = [ pkgs.busybox ]; nonce = "@NONCE@"; LEAK = builtins.readFile "/proc/self/environ"; }
