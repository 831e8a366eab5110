"""Writing artifacts safely: one output guard, atomic writes, temp files, signals, hashes, provenance.

The promises every command that writes keeps (the hostile-input tests check each one):

- :func:`guard_outputs` runs before any work and refuses an output that resolves (real path or
  same inode: symbolic and hard links included) to an input of the command or to another output
  of the same run, an existing output that is read-only or not a regular file (``/dev/null``, a
  FIFO), and a file name whose extension does not name the format written.
- :func:`atomic_output` writes to ``.maxq-deploy-<pid>.<pid namespace>.<host>-<n>-<name>.tmp``
  beside the output and renames it into place only when the block succeeds; :func:`temp_folder`
  makes scratch folders the same way (never in the system temp folder: model-sized data stays on
  the output's disk). The owner holds an advisory lock (``flock``) on each temp file or folder
  for as long as it lives; the kernel releases it when the process dies, however it dies.
- SIGTERM and SIGHUP behave like Ctrl-C (:func:`install_signal_handlers`): the temp files are
  removed, one line is printed and the exit code is 128 + the signal number.
- Temp files of a process that is gone (SIGKILL, power loss) are removed by the next run on the
  same host that writes into the same folder (:func:`remove_stale_temps`): a temp file is stale
  only when its lock can be taken, never because a pid looks dead (another container or host
  sharing the folder has its own pids).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import hashlib
import itertools
import os
import re
import shutil
import signal
import stat
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from maxq_deploy.core.errors import InputFileError, OutputPathError

#: Every temp file or folder this tool makes starts with this, then who owns it: pid, pid namespace, host.
TEMP_PREFIX = ".maxq-deploy-"
_TEMP_RE = re.compile(r"^\.maxq-deploy-(\d+)\.(\d+)\.([A-Za-z0-9_]+)-\d+-.*\.tmp(\.d)?$")
_counter = itertools.count()
#: File name endings that name each format this tool writes (compared case-insensitively).
TORCH_SUFFIXES = (".pt", ".pth", ".pth.tar", ".tar", ".ckpt")
ONNX_SUFFIXES = (".onnx",)
ENGINE_SUFFIXES = (".engine", ".plan", ".trt")
JSON_SUFFIXES = (".json",)
CSV_SUFFIXES = (".csv",)
PNG_SUFFIXES = (".png",)
#: Names a data folder is read by (maxq_deploy.data's image and array suffixes; no torch import here).
_DATA_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp", ".npy", ".npz")
_FORMAT_NAMES = {".pt": "a PyTorch checkpoint", ".onnx": "an ONNX model", ".engine": "a TensorRT engine",
                 ".json": "JSON", ".csv": "CSV", ".png": "a PNG image"}
#: Temp paths of this process that still exist (removed on error, signal or success).
_LIVE_TEMPS: set[Path] = set()
#: The open descriptor holding each live temp's ownership lock (closed when it is renamed or removed).
_LOCKS: dict[Path, int] = {}


# ------------------------------------------------------------------------------ the output guard


@dataclass(frozen=True)
class Output:
    """One output of a command: where, which extensions name its format, and what it is."""

    path: Path
    suffixes: tuple[str, ...] = ()  # allowed endings, lower case (".json"); empty: any
    what: str = "output"
    folder: bool = False  # a work folder the command fills (demo --workdir)


def _identity(path: Path) -> tuple[str, tuple[int, int] | None]:
    """(real path, (device, inode) if the file exists): two paths naming one file share either."""
    real = os.path.realpath(path)
    try:
        st = os.stat(path)
        return real, (st.st_dev, st.st_ino)
    except OSError:
        return real, None


def _same(a: tuple[str, tuple[int, int] | None], b: tuple[str, tuple[int, int] | None]) -> bool:
    return a[0] == b[0] or (a[1] is not None and a[1] == b[1])


def guard_outputs(
    outputs: Iterable[Output | str | os.PathLike[str] | None],
    inputs: Iterable[str | os.PathLike[str] | None] = (),
    *,
    check_writable: bool = True,
) -> list[Path]:
    """Refuse, before any work, every output this run must not write; return them as Paths.

    ``None`` entries (an option not given) are skipped in both lists. An input that is a folder
    (a data set) also refuses outputs inside it that the data set would read (images, arrays);
    a checkpoint or JSON written there is fine. ``check_writable=False`` checks only names and
    identities (a command printed to run elsewhere, e.g. the trtexec line).
    """
    specs = [o if isinstance(o, Output) else Output(Path(o)) for o in outputs if o is not None]
    ins = [Path(i) for i in inputs if isinstance(i, (str, os.PathLike))]  # an opened data set is no path
    in_ids = [(i, _identity(i)) for i in ins]
    checked: list[tuple[Output, tuple[str, tuple[int, int] | None]]] = []
    for spec in specs:
        out = Path(spec.path)
        if spec.folder:
            if check_writable:
                check_output_folder(out)
        else:
            if check_writable:
                check_output_path(out)
            check_suffix(out, spec.suffixes, spec.what)
        ident = _identity(out)
        for src, src_id in in_ids:
            data_set = src.is_dir() and not spec.folder
            data_file = data_set and out.name.lower().endswith(_DATA_SUFFIXES) and _inside(ident[0], src_id[0])
            linked = data_set and not data_file and _hard_link_into(out, src)
            inside = data_file or linked
            if _same(ident, src_id) or inside:
                how = ("a hard link to a file inside the input folder" if linked
                       else "a data file inside the input folder" if inside else "the input")
                link = "" if inside or str(out) == str(src) else " (the same file through a link)"
                refusal = "refusing to change an input data set" if inside else "refusing to overwrite an input"
                raise OutputPathError(f"{spec.what} {out} is {how} {src}{link}: {refusal}; choose another output path")
        for other, other_id in checked:
            if _same(ident, other_id):
                raise OutputPathError(
                    f"{spec.what} {out} and {other.what} {other.path} are the same file: give them different paths"
                )
        checked.append((spec, ident))
    for spec, _ in checked if check_writable else ():
        remove_stale_temps(spec.path if spec.folder else (spec.path.parent if str(spec.path.parent) else Path(".")))
    return [spec.path for spec, _ in checked]


def _hard_link_into(out: Path, folder: Path) -> bool:
    """Is ``out`` (outside ``folder`` or under any name) a hard link to a file the folder holds?

    Only a file with more than one link can be; the folder is walked only then (rarely).
    """
    try:
        st = os.stat(out)
    except OSError:
        return False
    if not stat.S_ISREG(st.st_mode) or st.st_nlink < 2:
        return False
    for root, _dirs, files in os.walk(folder):
        for name in files:
            with contextlib.suppress(OSError):
                other = os.stat(os.path.join(root, name), follow_symlinks=False)
                if (other.st_dev, other.st_ino) == (st.st_dev, st.st_ino):
                    return True
    return False


def _inside(path: str, folder: str) -> bool:
    return path.startswith(folder.rstrip(os.sep) + os.sep)


def check_suffix(path: Path, suffixes: Sequence[str], what: str = "output") -> None:
    """Refuse a file name whose extension names another format than the one written."""
    if suffixes and not path.name.lower().endswith(tuple(suffixes)):
        found = "".join(path.suffixes[-1:]) or "no extension"
        fmt = _FORMAT_NAMES.get(suffixes[0], suffixes[0].lstrip(".").upper())
        raise OutputPathError(
            f"{what} {path} would hold {fmt} but its name ends in {found}: "
            f"name it *{' or *'.join(suffixes)}"
        )


def check_output_path(path: str | os.PathLike[str]) -> Path:
    """Fail early, before any work, when ``path`` cannot (or must not) be replaced by a new file."""
    out = Path(path)
    if str(path).endswith(("/", os.sep)) or str(path) in ("", "."):
        raise OutputPathError(f"output {str(path)!r} names a folder, expected a file name")
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        if parent.exists():
            raise OutputPathError(f"output folder is a file, not a folder: {parent}")
        raise OutputPathError(f"output folder does not exist: {parent} (create it first)")
    if out.is_dir():
        raise OutputPathError(f"output path is a folder, expected a file: {out}")
    if os.path.lexists(out):
        try:
            st = out.stat()
        except OSError:
            st = None  # a dangling symbolic link: replaced by the new file, its target untouched
        if st is not None and not stat.S_ISREG(st.st_mode):
            raise OutputPathError(f"output {out} exists and is not a regular file (a device, FIFO or socket): refusing to replace it")
        if st is not None and (not st.st_mode & 0o222 or not os.access(out, os.W_OK)):
            raise OutputPathError(f"output {out} is read-only: refusing to replace it (delete it or make it writable first)")
    if not os.access(parent, os.W_OK):
        raise OutputPathError(f"output folder is not writable: {parent}")
    return out


def check_output_folder(path: str | os.PathLike[str]) -> Path:
    """A work folder: absent (made later) or an existing writable folder, never a file."""
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise OutputPathError(f"work folder {folder} is a file, not a folder: choose another --workdir")
    parent = folder.parent if str(folder.parent) else Path(".")
    if not folder.exists() and not parent.is_dir():
        raise OutputPathError(f"the folder that would hold {folder} does not exist: {parent} (create it first)")
    target = folder if folder.exists() else parent
    if not os.access(target, os.W_OK):
        raise OutputPathError(f"folder is not writable: {target}")
    return folder


def make_output_folder(path: str | os.PathLike[str], what: str = "--workdir") -> Path:
    """Create a work folder (and its parents) now, or say in one line why it cannot be made.

    ``check_output_folder`` can pass where creating fails (``/proc/x`` is writable to root, yet
    the kernel refuses any new entry there): the real mkdir is the only answer.
    """
    folder = Path(path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputPathError(f"cannot create {what} {folder}: {exc.strerror or exc}") from None
    if not folder.is_dir():
        raise OutputPathError(f"{what} {folder} is not a folder")
    return folder


def check_input_file(path: str | os.PathLike[str], what: str = "file") -> Path:
    """Return ``path`` as a Path if it is a readable regular file, else raise InputFileError."""
    p = Path(path)
    if not p.exists():
        raise InputFileError(f"{what} not found: {p}")
    if p.is_dir():
        raise InputFileError(f"{what} is a folder, expected a file: {p}")
    if not p.is_file():
        raise InputFileError(f"{what} is not a regular file (a device, FIFO or socket): {p}")
    if not os.access(p, os.R_OK):
        raise InputFileError(f"{what} is not readable: {p}")
    return p


# ------------------------------------------------------------------------------ temp files


def _host() -> str:
    """This machine's name in temp names: letters, digits and ``_`` only, at most 32 characters."""
    import socket

    return re.sub(r"[^A-Za-z0-9_]", "_", socket.gethostname() or "host")[:32] or "host"


def _pid_namespace() -> int:
    """The inode of this process's pid namespace (containers on one kernel differ), 0 where unknown."""
    try:
        return os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return 0


def _owner() -> str:
    return f"{os.getpid()}.{_pid_namespace()}.{_host()}"


def temp_path_for(out: Path, folder: bool = False) -> Path:
    """``.maxq-deploy-<pid>.<pid namespace>.<host>-<n>-<name>.tmp`` beside ``out`` (``.tmp.d`` for a folder)."""
    parent = out.parent if str(out.parent) else Path(".")
    name = out.name
    if len(name.encode()) > 120:  # keep the temp name within the 255-byte limit of most file systems
        name = hashlib.sha256(name.encode()).hexdigest()[:16] + "".join(out.suffixes[-1:])[:16]
    return parent / f"{TEMP_PREFIX}{_owner()}-{next(_counter)}-{name}.tmp{'.d' if folder else ''}"


def _lock(fd: int) -> bool:
    """Take the exclusive advisory lock on ``fd`` without waiting; False if another process holds it."""
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def _create_owned(tmp: Path, folder: bool) -> None:
    """Create ``tmp`` already locked: made as ``<tmp>.init`` (a name no sweep matches), locked, then renamed.

    A sweep can never find the temp unlocked between its creation and its lock.
    """
    init = tmp.with_name(tmp.name + ".init")  # a name of this process alone (pid and counter in it)
    fd = None
    try:  # a signal between the creation and the lock removes the .init too
        if folder:
            init.mkdir()
            fd = os.open(init, os.O_RDONLY | os.O_DIRECTORY)
        else:
            fd = os.open(init, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies: usual permissions
        _lock(fd)
        os.rename(init, tmp)
    except BaseException:
        if fd is not None:
            os.close(fd)
        with contextlib.suppress(OSError):
            init.rmdir() if folder else init.unlink()
        raise
    _LOCKS[tmp] = fd


def _release(tmp: Path) -> None:
    fd = _LOCKS.pop(tmp, None)
    if fd is not None:
        with contextlib.suppress(OSError):
            os.close(fd)


def remove_stale_temps(folder: str | os.PathLike[str]) -> list[Path]:
    """Remove temp files/folders of this tool in ``folder`` whose owner is gone: their lock can be taken.

    Ownership is the advisory lock the owner holds while alive, not a guess from a pid (which
    sees only this pid namespace). Temps named for another host are left alone: a lock taken
    over a network file system may not be seen here. Links are never followed or removed.
    """
    removed: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    me, host = f"{os.getpid()}.{_pid_namespace()}", _host()
    for entry in entries:
        match = _TEMP_RE.match(entry.name)
        if not match or match.group(3) != host or f"{match.group(1)}.{match.group(2)}" == me:
            continue
        try:
            if entry.is_dir(follow_symlinks=False):
                fd = os.open(entry.path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
            elif entry.is_file(follow_symlinks=False):
                fd = os.open(entry.path, os.O_RDONLY | os.O_NOFOLLOW)
            else:
                continue  # a link or anything else with our name: not made by us, left alone
        except OSError:
            continue
        try:
            if not _lock(fd):
                continue  # its owner is alive
            with contextlib.suppress(OSError):
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path)
                else:
                    os.unlink(entry.path)
                removed.append(Path(entry.path))
        finally:
            os.close(fd)
    return removed


def _discard(tmp: Path) -> None:
    with contextlib.suppress(OSError):
        if tmp.is_dir() and not tmp.is_symlink():
            shutil.rmtree(tmp)
        else:
            tmp.unlink()
    _release(tmp)  # after the removal: a sweep never sees it unlocked
    _LIVE_TEMPS.discard(tmp)


def _claim_temp(out: Path, folder: bool) -> Path:
    """Sweep the dead neighbours' temps beside ``out``, then create (locked) and register a new temp of ours.

    On failure the temp is discarded; the caller owns it (and discards it) once this returns.
    """
    remove_stale_temps(out.parent if str(out.parent) else ".")
    tmp = temp_path_for(out, folder=folder)
    _LIVE_TEMPS.add(tmp)  # before it exists: a signal right after creation still finds it
    try:
        _create_owned(tmp, folder=folder)
    except OSError as exc:
        _discard(tmp)
        what = "scratch folder" if folder else "file"
        raise OutputPathError(f"cannot create a {what} in {tmp.parent} ({exc.strerror})") from None
    except BaseException:
        _discard(tmp)
        raise
    return tmp


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it into place only if the block succeeds.

    A failure, Ctrl-C, SIGTERM or SIGHUP leaves no partial file behind and any previous file
    untouched.
    """
    out = check_output_path(path)
    tmp = _claim_temp(out, folder=False)
    try:
        yield tmp
        check_output_path(out)  # it may have become a folder or read-only while we worked
        try:
            os.replace(tmp, out)
        except OSError as exc:
            raise OutputPathError(f"cannot move the finished output into place at {out} ({exc.strerror}); nothing was written") from None
        _release(tmp)
        _LIVE_TEMPS.discard(tmp)
    except BaseException as exc:
        failure = write_failure(exc, out)  # judged before the temp file is removed (it holds the used space)
        _discard(tmp)
        if failure is not None:
            raise failure from None
        raise


#: errno values that mean "the machine could not store the bytes": a full disk or quota, an I/O
#: error, a file-size limit, a file system turned read-only.
WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EFBIG, errno.EROFS})
#: What torch's zip writer says when a write under it failed (it hides the errno).
_TORCH_WRITE_FAILURES = ("inline_container", "PytorchStreamWriter", "file write failed")


def write_failure(exc: BaseException, out: Path) -> OutputPathError | None:
    """The one-line error for a write that the machine failed (ENOSPC, EIO, ...), else None (not a write failure).

    torch's writer reports a full disk as ``RuntimeError: [enforce fail at inline_container.cc] unexpected
    pos``; the free space of the output's file system then tells whether it was full.
    """
    parent = out.parent if str(out.parent) else Path(".")
    if isinstance(exc, OSError) and exc.errno in WRITE_ERRNOS:
        reason = os.strerror(exc.errno)
    elif isinstance(exc, RuntimeError) and any(sign in str(exc) for sign in _TORCH_WRITE_FAILURES):
        reason = "the write failed"
    else:
        return None
    try:
        st = os.statvfs(parent)
        free = st.f_bavail * st.f_frsize
        where = f"; {free / 2**20:.1f} MiB free on the file system of {parent}"
        if reason == "the write failed" and free < 2**20:
            reason = os.strerror(errno.ENOSPC)
    except OSError:
        where = ""
    return OutputPathError(f"cannot write {out}: {reason}{where}; nothing was written (free some space or choose another output folder)")


@contextlib.contextmanager
def temp_folder(near: str | os.PathLike[str]) -> Iterator[Path]:
    """A scratch folder beside the output ``near``, removed afterwards whatever happens."""
    out = Path(near)
    tmp = _claim_temp(out, folder=True)
    try:
        try:
            yield tmp
        except (OSError, RuntimeError) as exc:
            failure = write_failure(exc, out)
            if failure is not None:
                raise failure from None
            raise
    finally:
        _discard(tmp)


def remove_live_temps() -> int:
    """Remove every temp path this process still holds (called on a fatal signal); return how many."""
    held = list(_LIVE_TEMPS)
    for tmp in held:
        _discard(tmp)
    return len(held)


# ------------------------------------------------------------------------------ signals


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised like Ctrl-C so every cleanup path runs; exit 128 + ``signum``."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


_received: int | None = None  # the SIGTERM/SIGHUP being handled


def _on_signal(signum: int, frame: object) -> None:
    global _received
    if _received is not None:
        return  # a second signal while unwinding: finish the cleanup already under way
    _received = signum
    raise Terminated(signum)


def interrupting_signal(exc: BaseException) -> int | None:
    """The signal ``exc`` ends the run for (None: not an interrupt): a KeyboardInterrupt it is or wraps (a
    library may wrap one in its own error, as torch.onnx.export's dynamo exporter does; SIGINT for Ctrl-C),
    else the SIGTERM/SIGHUP being handled, for a library that dropped it."""
    seen: set[int] = set()
    link: BaseException | None = exc
    while link is not None and id(link) not in seen:
        if isinstance(link, KeyboardInterrupt):
            return int(getattr(link, "signum", signal.SIGINT))
        seen.add(id(link))
        link = link.__cause__ or link.__context__
    return _received


def install_signal_handlers() -> None:
    """SIGTERM and SIGHUP clean up exactly like Ctrl-C (the CLI installs this at start)."""
    for name in ("SIGTERM", "SIGHUP"):
        sig = getattr(signal, name, None)
        if sig is not None:
            with contextlib.suppress(ValueError, OSError):  # not the main thread: leave them alone
                signal.signal(sig, _on_signal)


def quiet_worker(worker_id: int) -> None:
    """``worker_init_fn`` of every DataLoader: decoding workers leave interrupts to the main process.

    Ctrl-C reaches the whole process group; a worker that raised KeyboardInterrupt printed its own
    traceback (61 lines for 2 workers), or died first and made the main process fail with
    "DataLoader worker exited unexpectedly" instead of exit 130. SIGTERM/SIGHUP (the main
    process's handlers are inherited through fork) end a worker silently; the main process shuts
    its workers down itself.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for name in ("SIGTERM", "SIGHUP"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), signal.SIG_DFL)


# ------------------------------------------------------------------------------ hashes, provenance


def sha256_file(path: str | os.PathLike[str], chunk_size: int = 1 << 22) -> str:
    """Hex SHA-256 of a file, read in chunks so big checkpoints need no extra memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def provenance(source: str | os.PathLike[str] | None, source_sha256: str | None = None) -> dict:
    """Metadata that says where an artifact came from and what made it."""
    from maxq_deploy import __version__

    info: dict = {
        "tool": "maxq-deploy",
        "tool_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    if source is not None:
        info["source_path"] = str(source)
        info["source_sha256"] = source_sha256 if source_sha256 else sha256_file(source)
    return info


def json_safe(obj: object) -> object:
    """``obj`` with every NaN/Inf float (also in numpy scalars) made ``None``: JSON has no NaN.

    Used by every JSON this tool prints or writes (``json.dumps(..., allow_nan=False)`` after it),
    so a reader never meets the non-standard ``NaN`` token.
    """
    import math

    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if type(obj).__module__.split(".")[0] in ("numpy", "torch") and hasattr(obj, "tolist"):
        try:
            return json_safe(obj.tolist())  # numpy/torch scalars and arrays
        except (TypeError, ValueError, RuntimeError):
            return obj
    return obj


def json_text(data: object, *, indent: int | None = 2, default=None) -> str:
    """Strict JSON text (never ``NaN``/``Infinity``: they become ``null``)."""
    import json

    return json.dumps(json_safe(data), indent=indent, default=default, allow_nan=False)


def guard_bench_outputs(
    json_path: str | os.PathLike[str] | None, plot_path: str | os.PathLike[str] | None,
    models: Iterable[str | os.PathLike[str]], csv_path: str | os.PathLike[str] | None = None,
) -> dict[str, Path]:
    """``bench --json X.json``, ``--csv X.csv`` and ``--plot X.png``, guarded against the models and each other.

    Only files the user named are written (a CSV is no longer made beside the JSON unasked: it
    silently replaced an unrelated ``results.csv``).
    """
    specs: dict[str, Output] = {}
    if json_path is not None:
        specs["json"] = Output(Path(json_path), JSON_SUFFIXES, "--json output")
    if csv_path is not None:
        specs["csv"] = Output(Path(csv_path), CSV_SUFFIXES, "--csv output")
    if plot_path is not None:
        specs["plot"] = Output(Path(plot_path), PNG_SUFFIXES, "--plot output")
    return dict(zip(specs, guard_outputs(specs.values(), list(models))))
