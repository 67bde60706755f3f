{ pkgs ? import <nixpkgs> {} }:

pkgs.mkShell { packages = [ pkgs.busybox ]; nonce = "@NONCE@"; LEAK = builtins.getEnv "NIXJAIL_TEST_SERVE_MARK" + builtins.getEnv "NIXJAIL_RUNNER_NAME" + builtins.getEnv "NIX_REMOTE"; }
