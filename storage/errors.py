"""Errors of the artifact store; each message names the root, artifact or lock concerned."""


class StoreError(OSError):
    """A store-level failure; the message names the root or artifact concerned."""


class LockTimeout(StoreError, TimeoutError):
    """Raised by `Store.lock` when `timeout` passes while another holder keeps the lock."""
