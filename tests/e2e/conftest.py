from e2e_stack import (  # noqa: F401 - the end-to-end fixtures
    builderless_stack,
    cached_stack,
    remote_stack,
    stack,
    wrong_key_stack,
)
