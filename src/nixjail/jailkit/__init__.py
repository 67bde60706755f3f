"""nixjail's jail kit: what every nsjail run of nixjail has in common.

Standard library only, relative imports only: the cache builder imports it as
`nixjail.jailkit`, and the runner image carries the same files as a top-level
package `jailkit` beside container init.

- seccomp: the system-call policies (the stages' allow-list, the nix-daemon's).
- nsjail: the common part of an nsjail command line; each caller adds its mounts.
- capture: capped output capture that also tells binary output from text.
- judge: a stage's status, exit code and signal by one precedence.
- cgroup: readers of the memory and CPU figures of a cgroup (v1 or v2).
"""
