"""Handing tensors from a worker process to its consumer through reused shared memory.

Pickled by torch's reducers, every tensor of a message costs a descriptor hand-over (a
connection to the sender, an authentication, a ``recvmsg``): on small batches, most of the
consumer's time. Instead, each worker process gets one `Slab` of shared memory with no name
(an anonymous shared mapping under fork, else ``memfd_create`` or an unlinked temporary file),
made by the consumer *before* the worker starts and passed to it as a process argument
(inherited under fork, its descriptor sent by multiprocessing under spawn and forkserver).
Nothing can leak: it is freed when the last process mapping it ends, killed or not.

A slab is a row of flags followed by `SLOTS` slots of `SLOT_BYTES` (pages are only used once
touched). A worker's `HandOffEncoder` copies the plain CPU tensors of a message into a free
slot, contiguously, and pickles where they are instead of their data; `SlabReader.loads`, in
the consumer, makes those tensors views of the slot. A slot is busy from the moment the worker
takes it until every tensor of that message (and every view of them) is gone in the consumer:
then a weak reference's callback clears its flag, and the worker may reuse it. The worker only
sets flags, the consumer only clears them, each a one-byte store, so no lock and no message is
needed. A tensor that does not fit (no free slot, too large, needs grad, not a plain strided
CPU tensor) travels as torch pickles it; the worker never waits.
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import mmap
import os
import pickle
import tempfile
import threading
import weakref
from multiprocessing import reduction
from multiprocessing.reduction import ForkingPickler
from typing import Any

from .messages import Encoder, Reply

__all__ = ["SLOTS", "SLOT_BYTES", "HandOffEncoder", "Slab", "SlabReader", "make_slab"]

#: Slots per worker: messages whose tensors may be alive in the consumer at once.
SLOTS = 16
#: Bytes per slot: a message whose tensors need more goes (in part) through torch's pickling.
SLOT_BYTES = 16 << 20
#: Alignment of each tensor in a slot.
_ALIGN = 64
#: Where the slots begin (after the flags).
_HEADER = mmap.PAGESIZE


def _anonymous_file(size: int) -> int:
    """A descriptor of `size` bytes of shared memory with no name."""
    memfd_create = getattr(os, "memfd_create", None)
    if memfd_create is not None:
        try:
            fd: int = memfd_create("checkpointable-slab", os.MFD_CLOEXEC)
        except OSError:
            pass
        else:
            os.ftruncate(fd, size)
            return fd
    directory = "/dev/shm" if os.path.isdir("/dev/shm") else None
    with tempfile.TemporaryFile(dir=directory) as handle:  # unlinked at once (or O_TMPFILE)
        fd = os.dup(handle.fileno())
    os.ftruncate(fd, size)
    return fd


class Slab:
    """The shared memory of one worker process: `slots` flags, then `slots` slots.

    Made in the consumer; a process argument of its worker (pickled, it carries its descriptor,
    which only works while multiprocessing starts a process).
    """

    def __init__(
        self,
        slots: int = SLOTS,
        slot_bytes: int = SLOT_BYTES,
        fd: int = -1,
        inherited: bool = False,
    ) -> None:
        self.slots = slots
        self.slot_bytes = slot_bytes
        size = _HEADER + slots * slot_bytes
        if inherited:  # a forked worker inherits the mapping itself: no descriptor at all
            self.fd = -1
            self.memory = mmap.mmap(-1, size)  # MAP_SHARED | MAP_ANONYMOUS
        else:  # (the mapping keeps a duplicate of the descriptor while it lives)
            self.fd = _anonymous_file(size) if fd < 0 else fd
            self.memory = mmap.mmap(self.fd, size)
        self._leases: dict[int, Any] = {}  # slot -> weak reference of its lease (consumer)

    def __reduce__(self) -> tuple[Any, ...]:
        if self.fd < 0:
            raise TypeError("a Slab made for a forked worker cannot be pickled")
        return _open_slab, (reduction.DupFd(self.fd), self.slots, self.slot_bytes)

    def close_fd(self) -> None:
        """Close the descriptor (the mapping stays): after the worker started, or in it."""
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = -1

    def close(self) -> None:
        """Unmap, unless tensors still use the memory (then it goes with the last of them)."""
        self.close_fd()
        with contextlib.suppress(BufferError):
            self.memory.close()

    # The worker's side.
    def take(self) -> int:
        """A free slot, now marked busy, or -1 if there is none."""
        slot = self.memory.find(b"\x00", 0, self.slots)
        if slot >= 0:
            self.memory[slot] = 1
        return slot

    def give_back(self, slot: int) -> None:
        """Mark `slot` free again."""
        self.memory[slot] = 0

    # The consumer's side.
    def lease(self, slot: int) -> memoryview:
        """The memory of `slot`; the slot is given back when this view (and every tensor made
        from it) is gone."""
        start = _HEADER + slot * self.slot_bytes
        view = memoryview(self.memory)[start : start + self.slot_bytes]
        self._leases[slot] = weakref.ref(view, self._ended(slot))
        return view

    def _ended(self, slot: int) -> Any:
        memory = self.memory
        leases = self._leases

        def ended(_: Any) -> None:
            leases.pop(slot, None)
            with contextlib.suppress(ValueError):  # unmapped at shutdown
                memory[slot] = 0

        return ended


def _open_slab(handle: Any, slots: int, slot_bytes: int) -> Slab:
    slab = Slab(slots, slot_bytes, handle.detach())
    slab.close_fd()
    return slab


def make_slab(forked: bool) -> Slab | None:
    """A slab for a new worker process (`forked`: started by fork), or None where shared
    memory cannot be made."""
    try:
        return Slab(SLOTS, SLOT_BYTES, inherited=forked)
    except (OSError, ValueError):
        return None


class HandOffEncoder(Encoder):
    """`Encoder` of a worker process: plain CPU tensors go into a slot of `slab` (worker
    `key` of its group) instead of through torch's pickling.

    The pickler's own dispatch table sends tensors, and only them, to `reduce`; pickle's memo
    makes a tensor that appears twice in a message one tensor again in the consumer.
    """

    def __init__(self, slab: Slab, key: int) -> None:
        super().__init__()
        import torch
        from torch.multiprocessing.reductions import reduce_tensor

        slab.close_fd()  # a forked worker inherited the consumer's descriptor; the mapping stays
        self._torch = torch
        self._fallback = reduce_tensor
        self._slab = slab
        self._key = key
        self._whole = torch.frombuffer(slab.memory, dtype=torch.uint8)  # holds the mapping
        self._address = self._whole.data_ptr()
        self._slot = -1
        self._used = 0
        self._full = False

    def _make_pickler(self, buffer: io.BytesIO) -> Any:
        pickler = ForkingPickler(buffer, pickle.HIGHEST_PROTOCOL)
        pickler.dispatch_table[self._torch.Tensor] = self.reduce
        return pickler

    def __call__(self, message: Any) -> bytes:
        self._slot, self._used, self._full = -1, 0, False
        try:
            return super().__call__(message)
        except BaseException:
            if self._slot >= 0:
                self._slab.give_back(self._slot)
            raise

    def reduce(self, obj: Any) -> Any:
        """Copy tensor `obj` into this message's slot and return how to rebuild it there, or
        torch's reduction where it does not fit."""
        torch = self._torch
        dtype = obj.dtype
        if (
            self._full
            or type(obj) is not torch.Tensor
            or obj.requires_grad
            or not obj.is_cpu
            or obj.layout is not torch.strided
            or obj.is_quantized
            or (dtype.is_complex and (obj.is_conj() or obj.is_neg()))
        ):
            return self._fallback(obj)
        shape = tuple(obj.shape)
        size = obj.nbytes
        if size == 0:
            return _empty_tensor, (str(dtype), shape)
        slab = self._slab
        if self._slot < 0:
            self._slot = slab.take()
            if self._slot < 0:
                self._full = True
                return self._fallback(obj)
        offset = self._used
        if offset + size > slab.slot_bytes:
            return self._fallback(obj)
        source = obj if obj.is_contiguous() else obj.contiguous()
        start = self._address + _HEADER + self._slot * slab.slot_bytes + offset
        ctypes.memmove(start, source.data_ptr(), size)
        self._used = offset + (size + _ALIGN - 1) // _ALIGN * _ALIGN
        return _slab_tensor, (self._key, self._slot, offset, str(dtype), shape)


class _Decoding(threading.local):
    """What `SlabReader.loads` is decoding, in this thread: the reader, the leases taken."""

    reader: SlabReader | None = None
    leases: dict[tuple[int, int], memoryview] | None = None


_decoding = _Decoding()


def _slab_tensor(key: int, slot: int, offset: int, name: str, shape: tuple[int, ...]) -> Any:
    """Rebuild a tensor placed by `HandOffEncoder.reduce`: a view of its slot."""
    import torch

    reader, leases = _decoding.reader, _decoding.leases
    if reader is None or leases is None:
        raise RuntimeError("a tensor placed in a worker's slab is decoded by its SlabReader only")
    view = leases.get((key, slot))
    if view is None:
        view = leases[key, slot] = reader.slabs[key].lease(slot)
    count = 1
    for length in shape:
        count *= length
    tensor = torch.frombuffer(view, dtype=_dtype(name), count=count, offset=offset)
    return tensor if len(shape) == 1 else tensor.view(shape)


def _empty_tensor(name: str, shape: tuple[int, ...]) -> Any:
    import torch

    return torch.empty(shape, dtype=_dtype(name))


_DTYPES: dict[str, Any] = {}


def _dtype(name: str) -> Any:
    """The torch dtype named `name` ("torch.float32")."""
    dtype = _DTYPES.get(name)
    if dtype is None:
        import torch

        dtype = _DTYPES[name] = getattr(torch, name.removeprefix("torch."))
    return dtype


class SlabReader:
    """The consumer's side: decodes messages whose tensors were placed in its slabs."""

    def __init__(self) -> None:
        self.slabs: dict[int, Slab] = {}

    def add(self, key: int, slab: Slab) -> None:
        self.slabs[key] = slab

    def loads(self, raw: bytes) -> Any:
        """Unpickle a worker's message (a `Reply` sent as its `Reply.wire` tuple is a `Reply`
        again), its placed tensors made views of their slot."""
        if not self.slabs:
            return Reply.unwire(pickle.loads(raw))
        decoding = _decoding
        decoding.reader, decoding.leases = self, {}
        try:
            return Reply.unwire(pickle.loads(raw))
        finally:
            decoding.reader = decoding.leases = None

    def close(self) -> None:
        for slab in self.slabs.values():
            slab.close()
