"""Errors of the artifact store; each message names the root, artifact or lock concerned."""


class StoreError(OSError):
    """A store-level failure; the message names the root or artifact concerned."""


class LockTimeout(StoreError, TimeoutError):
    """Raised by `Store.lock` when `timeout` passes while another holder keeps the lock."""


class OutOfSpace(StoreError):
    """A write failed for lack of disk space or quota. ``path`` is the file being written, ``needed`` the
    bytes that write needed (None where unknown) and ``free`` the bytes free on its filesystem then."""

    def __init__(self, message: str, path: str | None = None, needed: int | None = None,
                 free: int | None = None) -> None:
        import errno

        super().__init__(errno.ENOSPC, message)
        self.path, self.needed, self.free = path, needed, free

    def __str__(self) -> str:
        return str(self.strerror)
