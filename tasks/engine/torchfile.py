"""Read a user's torch file safely and boundedly, and say honestly why it failed.

Safe: ``torch.load(weights_only=True)``, which cannot run code from the file.  A file that
the safe loader refuses is not "corrupt": it holds Python objects outside the allowlist,
and the user needs to hear that (and that the file was *not* loaded) rather than delete a
good file.

Bounded: before torch allocates anything, what the file *declares* is compared with what it
can hold.  ``torch.save`` stores its records uncompressed, so a record that inflates far
beyond its packed size (an 8 MB file declaring 8 GiB), a tensor that claims more bytes than
its record holds, or a total larger than the memory this process may still use is refused
by name.  Files of torch's legacy (pre-1.6) format, such as published SimpleBaseline
weights, are walked the same way: the storages their pickle and their raw section declare
must fit in the file.
"""
from __future__ import annotations

import io
import os
import pickle
import re
import resource
import warnings
import zipfile
from pathlib import Path

import torch

from .errors import UserError
from .io import input_file

_UNSUPPORTED = re.compile(r"Unsupported global: GLOBAL (\S+)")
#: A torch archive's records may unpack to at most this multiple of the file's size (plus
#: :data:`SLACK`): torch stores them uncompressed; a re-zipped file of weights packs ~1.1x.
MAX_INFLATION = 4
SLACK = 1 << 20
#: The number torch's legacy format opens with.
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


def read(path: str | Path, what: str, hint: str = ""):
    """``torch.load(path, weights_only=True)`` on the CPU once :func:`check_declared` passed,
    or a one-line :class:`UserError` (``hint``: what to do when the file is not there)."""
    size = input_file(path, what, hint)
    check_declared(path, what, size)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except OSError as err:
        raise UserError(f"cannot read {what} {path}: {err.strerror or err}") from None
    except pickle.UnpicklingError as err:
        text = str(err)
        if "Weights only load failed" in text:
            found = _UNSUPPORTED.search(text)
            name = found.group(1) if found else text.strip().splitlines()[-1][:160]
            raise UserError(f"{what} {path} holds Python objects that safe loading refuses "
                            f"({name}); it was not loaded: save plain tensors and containers "
                            "(e.g. a state_dict)") from None
        raise UserError(_corrupt(path, what, err)) from None
    except Exception as err:  # truncated zip, not a torch file at all ...
        raise UserError(_corrupt(path, what, err)) from None


def check_declared(path, what: str, size: int) -> int:
    """The bytes loading ``path`` (``size`` bytes long) will allocate, from what the file
    declares, or :class:`UserError` when that is implausible or more than memory allows."""
    try:
        if zipfile.is_zipfile(path):
            needed = _zip_bytes(path, what, size)
        else:
            needed = _legacy_bytes(path, what, size)
    except UserError:
        raise
    except Exception as err:  # a broken directory or pickle: torch would fail on it too
        raise UserError(_corrupt(path, what, err)) from None
    budget = memory_budget()
    if needed > budget:
        raise UserError(f"{what} {path} needs {_size(needed)} of memory to load, more than the "
                        f"{_size(budget)} this process may still use; it was not loaded (load it "
                        "on a machine with more memory)")
    return needed


def _zip_bytes(path, what: str, size: int) -> int:
    with zipfile.ZipFile(path) as archive:
        records = {info.filename: info.file_size for info in archive.infolist()}
        total = sum(records.values())
        if total > MAX_INFLATION * size + SLACK:
            raise UserError(f"{what} {path} declares {_size(total)} of records in a file of "
                            f"{_size(size)}; torch stores its records uncompressed, so it was not "
                            "loaded (the file was not written by torch.save, or was tampered with)")
        pickles = [name for name in records if name.endswith("data.pkl")]
        if len(pickles) != 1:
            raise UserError(_corrupt(path, what, ValueError("no single data.pkl record")))
        prefix = pickles[0][: -len("data.pkl")]
        scan = _StorageScan(io.BytesIO(archive.read(pickles[0])))
        scan.load()
    for key, nbytes in scan.storages.items():
        held = records.get(f"{prefix}data/{key}")
        if held is None or nbytes > held:
            raise UserError(f"{what} {path}: a tensor declares {_size(nbytes)} but its record "
                            f"holds {_size(held or 0)}; the file is corrupt or was tampered with "
                            "and was not loaded")
    return total


def _legacy_bytes(path, what: str, size: int) -> int:
    """Walk a legacy-format file: magic, protocol, system info, the object pickle, the
    storage keys, then each storage as an 8-byte element count and its bytes."""
    data = Path(path).read_bytes()  # bounded: input_file saw a regular file of this size
    stream = io.BytesIO(data)
    if _StorageScan(stream).load() != LEGACY_MAGIC:
        raise UserError(f"{what} {path} is not a torch file (neither a zip archive nor torch's "
                        "legacy format)")
    _StorageScan(stream).load(), _StorageScan(stream).load()  # protocol, system info
    scan = _StorageScan(stream)
    scan.load()
    declared = sum(scan.storages.values())
    keys = _StorageScan(stream).load()
    position = stream.tell()
    for key in keys if isinstance(keys, list) else []:
        count = int.from_bytes(data[position:position + 8], "little")
        position += 8 + count * scan.element_bytes.get(key, 1)
    if declared > size or position > size:
        raise UserError(f"{what} {path} declares {_size(max(declared, position))} of tensors in a "
                        f"file of {_size(size)}; the file is corrupt or was tampered with and was "
                        "not loaded")
    return 2 * size


class _Stub:
    """Stands for any object a scanned pickle builds: nothing of the file's is ever run."""

    origin = ("", "")

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        pass

    def __setitem__(self, key, value):
        pass

    def append(self, item):
        pass

    def extend(self, items):
        pass


class _StorageScan(pickle.Unpickler):
    """Unpickles with every global replaced by a :class:`_Stub` and records the storages the
    pickle declares (persistent ids ``('storage', type, key, location, numel, ...)``)."""

    def __init__(self, stream):
        super().__init__(stream)
        self.storages: dict[str, int] = {}
        self.element_bytes: dict[str, int] = {}
        self._stubs: dict[tuple, type] = {}

    def find_class(self, module, name):
        if (module, name) not in self._stubs:
            self._stubs[module, name] = type(name, (_Stub,), {"origin": (module, name)})
        return self._stubs[module, name]

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise ValueError(f"unexpected persistent id {str(pid)[:60]}")
        _, kind, key, _, numel = pid[:5]
        element = _ELEMENT_BYTES.get(getattr(kind, "origin", ("", ""))[1])
        if element is None or not isinstance(numel, int) or numel < 0:
            raise ValueError(f"storage {str(key)[:40]} of unknown type or size")
        self.element_bytes[str(key)] = element
        self.storages[str(key)] = max(self.storages.get(str(key), 0), numel * element)
        return None


def _element_bytes() -> dict[str, int]:
    with warnings.catch_warnings():  # typed storage classes warn that they are deprecated
        warnings.simplefilter("ignore")
        sizes = {c.__name__: c.dtype.itemsize for c in torch._storage_classes
                 if isinstance(getattr(c, "dtype", None), torch.dtype)}
    return {**sizes, "UntypedStorage": 1}


_ELEMENT_BYTES = _element_bytes()


def memory_budget() -> int:
    """Bytes this process may still allocate: the memory the kernel reports available, and
    no more than the address-space limit (``ulimit -v``) leaves."""
    budget = _meminfo_available()
    limit = resource.getrlimit(resource.RLIMIT_AS)[0]
    if limit != resource.RLIM_INFINITY:
        budget = min(budget, max(limit - _address_space_used(), 0))
    return budget


def _meminfo_available() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def _address_space_used() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _size(nbytes: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if nbytes >= scale:
            return f"{nbytes / scale:.1f} {unit}"
    return f"{nbytes} bytes"


def _corrupt(path, what, err) -> str:
    first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
    return f"cannot read {what} {path}: truncated or corrupt ({first})"
