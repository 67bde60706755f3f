# Refuse a program with a syntax error before it runs, then "build" it.
sh -n main.sh && cp main.sh hello && chmod +x hello
