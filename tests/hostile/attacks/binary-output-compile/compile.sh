printf 'a\0b\033[2J\n' >&2
echo clean
