from tests.client.conftest import watchdog

__all__ = ["watchdog"]
