#!/bin/sh
# Greets whoever standard input names.
read -r name || true  # a last line without a newline still sets name
echo "Hello, ${name:-world}!"
