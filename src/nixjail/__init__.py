"""nixjail: runs untrusted submissions that bring their own Nix toolchain."""

__version__ = "0.1.0"
