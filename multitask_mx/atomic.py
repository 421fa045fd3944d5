"""Atomic file writes, the one home of temporary names, and output paths checked before the work.

Every file a later run reads is written under a temporary name in the same folder
(``PATH.tmp-PID`` or, for writers that add their own suffixes, the prefix
``.tmp-PID-NAME``), flushed, fsynced and renamed: a kill during a write never
leaves a half-written file under the real name. A failed write removes its
temporary files; a full disk becomes a ``DiskFullError`` (a UserInputError) that
names the folder. Temporary files of killed runs are removed by ``remove_stale_temps``.

A write never replaces what is not a regular file: a symlink, device node, FIFO or
folder under the target name is refused (as root, renaming over ``/dev/null`` would
replace the machine's own). User-named outputs are checked before the work by
``check_output_file``, which also refuses the command's own inputs and a run's files,
and written by ``write_output``, which takes ``-`` (and ``/dev/stdout``) as standard output.
"""
import contextlib
import errno
import glob
import json
import logging
import os
import re
import stat
import sys

from .errors import UserInputError, shorten

_logger = logging.getLogger(__name__)

_TEMP_NAME = re.compile(r"^\.tmp-(\d+)-|\.tmp-(\d+)$")


class DiskFullError(UserInputError):
    """A write failed because its file system is full; ``folder`` is where."""

    def __init__(self, folder, detail=""):
        self.folder = folder
        super().__init__("no space left on %s%s. Free some space (or point the output elsewhere) and run "
                         "again." % (folder, detail))


def is_disk_full(exc):
    """True if ``exc`` (OSError or MXNetError) reports a full file system."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(exc)
    return "No space left" in text or "Disk quota exceeded" in text


def _write_failed(exc, path):
    # MXNet's C++ writers report a full disk only as "FileStream.Write incomplete";
    # asking the file system (before the partial file is removed) tells a full disk
    # from other failures.
    if is_disk_full(exc):
        return True
    if isinstance(exc, OSError) or ("Write" not in str(exc) and "fwrite" not in str(exc)):
        return False
    try:
        fs = os.statvfs(os.path.dirname(os.path.abspath(path)))
        return fs.f_bavail * fs.f_frsize < 1 << 20
    except OSError:
        return False


def temp_path(path):
    """The temporary name ``path`` is written under before its rename."""
    return "%s.tmp-%d" % (path, os.getpid())


def temp_prefix(prefix):
    """A temporary prefix beside ``prefix``, for writers that append suffixes (net.export)."""
    return os.path.join(os.path.dirname(prefix), ".tmp-%d-%s" % (os.getpid(), os.path.basename(prefix)))


@contextlib.contextmanager
def written_as_temp(*temps):
    """Remove ``temps`` if the block fails; turn a full disk into DiskFullError."""
    try:
        yield
    except BaseException as exc:
        full = isinstance(exc, Exception) and _write_failed(exc, temps[0])
        for tmp in temps:
            for path in glob.glob(glob.escape(tmp) + "*") if tmp.endswith("-") else [tmp]:
                if os.path.exists(path):
                    os.remove(path)
        if full:
            raise DiskFullError(os.path.dirname(os.path.abspath(temps[0]))) from None
        raise


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path to write ``path`` with any writer (trainer.save_states); renamed on success."""
    refuse_non_regular(path)
    tmp = temp_path(path)
    with written_as_temp(tmp):
        yield tmp
        os.replace(tmp, path)


def atomic_write_bytes(path, data: bytes):
    """Write ``data`` to ``path`` via a temporary file, fsync and a rename."""
    refuse_non_regular(path)
    tmp = temp_path(path)
    with written_as_temp(tmp):
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)


def atomic_write_text(path, text):
    """Write UTF-8 ``text`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path, obj):
    """Write ``obj`` as strict, indented JSON (NaN and infinities become null), atomically."""
    text = json.dumps(finite_or_none(obj), indent=2, sort_keys=False, allow_nan=False)
    atomic_write_text(path, text + "\n")


def finite_or_none(obj):
    """A copy of ``obj`` with NaN and infinite floats replaced by None (strict JSON has no NaN)."""
    if isinstance(obj, float):
        return obj if obj == obj and obj not in (float("inf"), float("-inf")) else None
    if isinstance(obj, dict):
        return {k: finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_or_none(v) for v in obj]
    return obj


@contextlib.contextmanager
def atomic_prefix(prefix, suffixes):
    """Yield a temporary prefix; on success rename ``tmp + suffix`` to ``prefix + suffix`` for each suffix.

    For writers that name their own files from a prefix (``net.export``,
    ``mx.model.save_checkpoint``). ``suffixes`` maps the writer's suffix to the final
    path (or is a list of suffixes kept as they are).
    """
    tmp = temp_prefix(prefix)
    targets = suffixes if isinstance(suffixes, dict) else {s: prefix + s for s in suffixes}
    for target in targets.values():
        refuse_non_regular(target)
    with written_as_temp(tmp + "-"):
        yield tmp
        for suffix, target in targets.items():
            os.replace(tmp + suffix, target)


def remove_stale_temps(folder):
    """Delete temporary files that killed processes left in ``folder``; returns their names."""
    removed = []
    try:
        names = os.listdir(folder)
    except OSError:
        return removed
    for name in names:
        pid = is_temp_name(name)
        if not pid or _alive(pid):
            continue
        try:
            os.remove(os.path.join(folder, name))
            removed.append(name)
        except OSError:
            pass
    if removed:
        _logger.info("removed %d temporary file(s) that a killed run left in %s", len(removed), folder)
    return removed


def is_temp_name(name):
    """The process id in a temporary file's name (``.tmp-PID-NAME``, ``NAME.tmp-PID``), else None."""
    match = _TEMP_NAME.search(name)
    return int(match.group(1) or match.group(2)) if match else None


def _alive(pid):
    if pid == os.getpid():
        return False  # ours from a killed earlier process with a recycled id, or a failed write
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def check_output_dir(folder, flag):
    """Refuse, before any work, an output folder that cannot be created or written."""
    path = os.path.abspath(folder)
    if os.path.exists(path) and not os.path.isdir(path):
        raise UserInputError("%s %s is a file, not a folder: give a folder path." % (flag, folder))
    parent = path
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise UserInputError("%s %s: %s is a file, so the folder cannot be created there." % (flag, folder, parent))
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserInputError("%s %s: %s is not writable by this user." % (flag, folder, parent))


STDOUT_NAMES = ("-", "/dev/stdout")


def is_stdout(path):
    """True for the names that mean standard output: ``-`` and ``/dev/stdout``."""
    return str(path) in STDOUT_NAMES


def _kind_of(mode):
    for test, name in ((stat.S_ISLNK, "a symbolic link"), (stat.S_ISDIR, "a folder"), (stat.S_ISCHR, "a device"),
                       (stat.S_ISBLK, "a device"), (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def refuse_non_regular(path, flag=None):
    """UserInputError if ``path`` exists and is not a regular file: a write renames a new file over it."""
    try:
        mode = os.lstat(path).st_mode
    except OSError:  # not there (the usual case), or not reachable: the write itself reports that
        return
    if stat.S_ISREG(mode):
        return
    raise UserInputError("%s%s is %s; multitask-mx writes a new regular file under that name, which would replace "
                         "it. Give another path (or remove it first)."
                         % ("%s " % flag if flag else "", shorten(path), _kind_of(mode)))


def _same_file(a, b):
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)


def check_output_file(path, flag, inputs=(), run=None):
    """Refuse, before any work, an output file that cannot be written or must not be replaced.

    ``inputs``: (flag, path) pairs the command reads (its lists, images, config); ``run``: a RunDir whose
    own files (checkpoints, config.json, history, ...) the output must not replace. ``-`` and
    ``/dev/stdout`` (standard output) are always accepted. Temporary files that a killed earlier
    write of this output left are removed.
    """
    if is_stdout(path):
        return
    if os.path.isdir(path):
        raise UserInputError("%s %s is a folder: give a file path." % (flag, shorten(path)))
    refuse_non_regular(path, flag)
    for input_flag, input_path in inputs:
        if input_path and not is_stdout(input_path) and os.path.exists(input_path) and _same_file(path, input_path):
            raise UserInputError("%s %s is this command's input (%s): writing it would destroy it. Give another "
                                 "output path." % (flag, shorten(path), input_flag))
    if run is not None and any(_same_file(path, own) for own in run.own_files()):
        raise UserInputError("%s %s is a file of the run in %s, which later commands read: writing it would "
                             "damage the run. Give a path outside the run's own files." % (flag, shorten(path),
                                                                                          run.save_dir))
    check_output_dir(os.path.dirname(os.path.abspath(path)), "%s %s: the folder" % (flag, shorten(path)))
    _remove_stale_temps_of(path)


def _remove_stale_temps_of(path):
    folder, name = os.path.split(os.path.abspath(path))
    try:
        names = os.listdir(folder)
    except OSError:
        return
    for other in names:
        if other.startswith(name + ".tmp-") and is_temp_name(other) and not _alive(is_temp_name(other)):
            try:
                os.remove(os.path.join(folder, other))
            except OSError:
                pass


def write_output(path, data):
    """Write a user-named output (bytes or text): standard output for ``-``/``/dev/stdout``, else atomically."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    if is_stdout(path):
        sys.stdout.flush()
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        return
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    atomic_write_bytes(path, data)
    _logger.info("wrote %s", path)
