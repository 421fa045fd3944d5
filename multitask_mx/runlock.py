"""The exclusive lock of a run folder (``RunDir.lock``): one writing process at a time.

An OS file lock (``flock`` on ``FOLDER/.lock``, which holds the holder's process id): the
kernel releases it when the process ends, however it ends, so a killed run never leaves
the folder locked, and a second writer is refused at once with the holder's id.
"""
import fcntl
import os

from .errors import UserInputError

LOCK_FILE = ".lock"


class RunLock:
    """The exclusive lock of one run folder (``RunDir.lock``); ``release`` or leaving the ``with`` frees it."""

    _held = {}  # real path -> [RunLock, depth]: one process may re-enter its own lock (the API trains twice)

    def __init__(self, folder):
        self.folder = folder
        self.key = os.path.realpath(folder)
        self.fd = None
        held = RunLock._held.get(self.key)
        if held is not None:
            held[1] += 1
            self.fd = held[0].fd
            return
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, LOCK_FILE)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = _read_pid(fd)
            os.close(fd)
            raise UserInputError("--save-result %s is in use by another multitask-mx train (process %s): two runs "
                                 "in one folder would overwrite each other's checkpoints. Wait for it to finish "
                                 "(or stop it), or give another --save-result." % (folder, holder or "unknown"))
        os.ftruncate(fd, 0)
        os.write(fd, b"%d\n" % os.getpid())
        self.fd = fd
        RunLock._held[self.key] = [self, 1]
        _close_in_children.add(fd)

    def release(self):
        """Free the lock (the last of nested holders does)."""
        held = RunLock._held.get(self.key)
        if held is None or self.fd is None:
            return
        held[1] -= 1
        if held[1] == 0:
            del RunLock._held[self.key]
            _close_in_children.discard(self.fd)
            try:
                os.ftruncate(self.fd, 0)
            except OSError:
                pass
            os.close(self.fd)
        self.fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()


# Forked children (loader workers) inherit the lock's descriptor; closing their copy keeps the
# lock with the training process alone (a worker outliving a killed trainer must not hold it).
_close_in_children = set()


def _close_lock_fds():
    for fd in list(_close_in_children):
        try:
            os.close(fd)
        except OSError:
            pass
    _close_in_children.clear()


os.register_at_fork(after_in_child=_close_lock_fds)


def _read_pid(fd):
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return text if text.isdigit() else None
