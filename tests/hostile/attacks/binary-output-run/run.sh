printf 'text\0nul \033[31mred\033[0m \033]0;title\007 \377\376\n'
printf 'plain text\n' >&2
