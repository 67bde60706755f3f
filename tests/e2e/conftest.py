from e2e_stack import stack  # noqa: F401 - the fixture every end-to-end test uses
