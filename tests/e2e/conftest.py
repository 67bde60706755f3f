from e2e_stack import remote_stack, stack  # noqa: F401 - the end-to-end fixtures
