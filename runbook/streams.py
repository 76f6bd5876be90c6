"""One-pass streams for backups: a subprocess's stdout, zstd compression, read-back checks.

    with ProcessStream(["pg_dump", "-Fc", "-Z0", ...], env=env, timeout=3600) as dump:
        encoder = ZstdEncoder(dump, level=3)
        storage.put(key, encoder)          # sha256/sizes in encoder after this returns
    report = read_back(storage.get(key))   # sha256 of the stored bytes + proof it decodes

Design (measured on 2 cores against `pg_dump -Fc -Z0 | zstd -1 -T0`, see
benchmarks/pipeline.py): a read-ahead thread fills a pool of reused 1 MiB buffers from a 1 MiB
pipe; the iterating thread hands each buffer to zstd, whose own worker threads (`threads`)
compress with the GIL released, then hashes the output and yields it to storage.
- Reused buffers instead of a fresh `bytes` per read: pg_dump writes 8 KiB at a time, and a
  new allocation per read cost ~300k page faults and ~2 s of CPU per GB on these cores.
- A 1 ms nap after a short read lets the pipe fill: ~10x fewer reads and wake-ups. pg_dump and
  its server backend need the same two cores, so CPU saved here is dump speed.
- The read-ahead thread keeps draining the pipe while zstd's compress() stalls (up to ~60 ms
  when its workers fall behind), so pg_dump does not block on a full pipe.
- Read-back decodes through zstd's stream writer (output in bounded 128 KiB pieces, whatever
  the compression ratio) in a helper thread while the caller hashes.

Every object here owns its state: instances can run side by side in a thread pool.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import queue
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import zstandard

CHUNK_SIZE = 1024 * 1024
STDERR_KEEP = 64 * 1024
# Lines of stderr quoted in a ProcessFailed message (the whole tail is in `stderr_tail`).
MESSAGE_LINES = 12
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
_F_GETPIPE_SZ = getattr(fcntl, "F_GETPIPE_SZ", 1032)
# After a read shorter than this, nap so the pipe fills up: fewer wake-ups on a busy machine.
_NAP_BELOW = 64 * 1024
_NAP_SECONDS = 0.001
# Only nap when the pipe holds enough to absorb a nap at ~500 MB/s without stalling the writer.
_NAP_MIN_PIPE = 512 * 1024


class ProcessFailed(Exception):
    """A streamed subprocess exited non-zero, was killed by a signal, or timed out."""

    def __init__(
        self,
        message: str,
        *,
        name: str,
        returncode: int | None,
        stderr_tail: str = "",
        timed_out: bool = False,
    ):
        super().__init__(message)
        self.name = name
        self.returncode = returncode
        self.stderr_tail = stderr_tail
        self.timed_out = timed_out


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


class _StderrTail:
    """Drains a pipe in a thread, keeping only its last `keep` bytes."""

    def __init__(self, pipe, keep: int = STDERR_KEEP):
        self._fd = pipe.fileno()
        self._pipe = pipe
        self._keep = keep
        self._buf = bytearray()
        self.truncated = False
        self._thread = threading.Thread(target=self._drain, name="stderr-tail", daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        try:
            while True:
                data = os.read(self._fd, 65536)
                if not data:
                    return
                self._buf += data
                if len(self._buf) > self._keep:
                    del self._buf[: len(self._buf) - self._keep]
                    self.truncated = True
        except OSError:
            return

    def text(self, redact: Sequence[str], wait: float) -> str:
        self._thread.join(wait)  # a grandchild may still hold stderr open: do not hang on it
        raw = bytes(self._buf)
        if self.truncated:
            # Drop the first, cut line: a secret cut in half there would escape redaction.
            raw = raw.partition(b"\n")[2]
        text = raw.decode("utf-8", errors="replace")
        for secret in redact:
            text = text.replace(secret, "[REDACTED]")
        return text

    def close(self) -> None:
        self._thread.join(1.0)
        if not self._thread.is_alive():
            self._pipe.close()


class ProcessStream:
    """Run `argv` (never a shell) and stream its stdout.

    Iterate for `bytes` chunks of up to `chunk_size`, or call `readinto(buffer)`. When stdout
    ends the process is reaped and a non-zero exit, a signal or the timeout raises
    `ProcessFailed` *before* the end of the stream is reported, so a consumer such as
    `Storage.put` never commits the output of a failed process. `timeout` bounds the whole
    run (seconds). `close()` (or leaving the `with` block, or closing the iterator) kills a
    process that is still running and reaps it. Strings in `redact` never appear in messages.

    The process runs in its own process group, so a timeout or close() also stops its
    children (a `sh -c 'a | b'` pipeline); a child that starts a new session escapes this.
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        env: dict[str, str] | None = None,
        name: str | None = None,
        timeout: float | None = None,
        redact: Sequence[str] = (),
        chunk_size: int = CHUNK_SIZE,
        cwd: str | None = None,
    ):
        if isinstance(argv, str | bytes):
            raise TypeError("argv must be a list of arguments, not a string")
        self.argv = list(argv)
        self.name = name or os.path.basename(self.argv[0])
        self.timeout = timeout
        self.chunk_size = chunk_size
        self._redact = [secret for secret in redact if secret]
        self._lock = threading.Lock()
        self._read_lock = threading.Lock()  # held while a thread is inside readinto()
        self._timed_out = False
        self._eof = False
        self._iterating = False
        self._failed: ProcessFailed | None = None
        self._timer: threading.Timer | None = None
        try:
            self._proc = subprocess.Popen(
                self.argv,
                env=env,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                bufsize=0,
                close_fds=True,
                process_group=0,
            )
        except OSError as exc:
            raise ProcessFailed(
                f"{self.name} could not start: {exc.strerror or exc}",
                name=self.name,
                returncode=None,
            ) from exc
        self.pid = self._proc.pid
        self._stdout = self._proc.stdout
        self._fd = self._stdout.fileno()
        self.pipe_size = _enlarge_pipe(self._fd, chunk_size)
        self._nap = self.pipe_size >= _NAP_MIN_PIPE
        self._stderr = _StderrTail(self._proc.stderr)
        self._started = time.monotonic()
        if timeout is not None:
            self._timer = threading.Timer(timeout, self._on_timeout)
            self._timer.daemon = True
            self._timer.start()

    # -- reading -----------------------------------------------------------------------------

    def readinto(self, buffer) -> int:
        """Fill `buffer` from stdout until it is full or stdout ends; 0 means a clean end.

        Raises ProcessFailed when stdout ends and the process did not exit with 0.
        """
        with self._read_lock:
            if self._failed is not None:
                raise self._failed
            if self._eof:
                return 0
            view = memoryview(buffer).cast("B")
            size = len(view)
            got = 0
            stdout = self._stdout
            nap = self._nap
            while got < size:
                try:
                    n = stdout.readinto(view[got:])
                except ValueError:  # closed by close()
                    n = 0
                if not n:
                    self._eof = True
                    self._finish()  # raises if the process failed: its last bytes never go on
                    break
                got += n
                if nap and n < _NAP_BELOW and got < size:
                    time.sleep(_NAP_SECONDS)
            return got

    def __iter__(self) -> Iterator[bytes]:
        if self._iterating:
            raise RuntimeError(f"{self.name}: a ProcessStream can be iterated only once")
        self._iterating = True
        return self._chunks()

    def _chunks(self) -> Iterator[bytes]:
        buffer = bytearray(self.chunk_size)
        view = memoryview(buffer)
        try:
            while True:
                n = self.readinto(view)
                if not n:
                    return
                yield bytes(view[:n])
        finally:
            view.release()
            self.close()

    # -- ending ------------------------------------------------------------------------------

    @property
    def returncode(self) -> int | None:
        return self._proc.returncode

    def _remaining(self) -> float | None:
        if self.timeout is None:
            return None
        return max(0.0, self.timeout - (time.monotonic() - self._started))

    def _finish(self) -> None:
        """Stdout ended: reap the process and raise ProcessFailed unless it exited with 0."""
        try:
            self._proc.wait(self._remaining())
        except subprocess.TimeoutExpired:
            self._timed_out = True
            self._kill()
            self._proc.wait()
        self._cancel_timer()
        rc = self._proc.returncode
        if rc == 0 and not self._timed_out:
            self._stderr.close()
            return
        tail = self._stderr.text(self._redact, wait=2.0)
        self._stderr.close()
        self._failed = self._failure(rc, tail)
        raise self._failed

    def _failure(self, rc: int, tail: str) -> ProcessFailed:
        lines = [line for line in tail.strip().splitlines() if line.strip()]
        quoted = " | ".join(lines[-MESSAGE_LINES:]) or "(no stderr output)"
        if self._timed_out:
            what = f"{self.name} timed out after {self.timeout:g}s and was killed"
        elif rc < 0:
            what = f"{self.name} was killed by {_signal_name(-rc)} (exit code {rc})"
        else:
            what = f"{self.name} exited with code {rc}"
        return ProcessFailed(
            f"{what}: {quoted}",
            name=self.name,
            returncode=rc,
            stderr_tail=tail,
            timed_out=self._timed_out,
        )

    def _on_timeout(self) -> None:
        with self._lock:
            if self._proc.poll() is None:
                self._timed_out = True
                self._kill()

    def _kill(self) -> None:
        # The group id is the leader's pid, which stays ours until the leader is reaped.
        try:
            os.killpg(self._proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()

    def close(self) -> None:
        """Kill the process if it still runs, reap it and release the pipes. Idempotent."""
        self._cancel_timer()
        with self._lock:
            if self._proc.poll() is None:
                self._kill()
        self._proc.wait()
        # A reader in another thread sees EOF now that the group is dead; closing the fd
        # under it could make it read a reused descriptor, so wait for it to leave.
        if self._read_lock.acquire(timeout=5.0):
            try:
                self._eof = True
                self._stdout.close()
            finally:
                self._read_lock.release()
        self._stderr.close()

    def __enter__(self) -> ProcessStream:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __del__(self) -> None:
        proc = getattr(self, "_proc", None)
        if proc is not None and proc.returncode is None:
            self.close()


def _enlarge_pipe(fd: int, wanted: int) -> int:
    """Ask for a `wanted`-byte pipe (fewer wake-ups, more slack); return the size we got."""
    try:
        fcntl.fcntl(fd, _F_SETPIPE_SZ, wanted)
    except OSError:
        pass  # over /proc/sys/fs/pipe-max-size or the user's pipe quota: keep the default
    try:
        return fcntl.fcntl(fd, _F_GETPIPE_SZ)
    except OSError:
        return 65536


# -- compression ---------------------------------------------------------------------------


@dataclass
class EncoderTimings:
    """Seconds spent in each stage by the thread that iterates the encoder."""

    read: float = 0.0  # waiting for and copying input (includes the producer's own pace)
    compress: float = 0.0  # handing input to zstd and collecting output
    hash: float = 0.0
    downstream: float = 0.0  # between yields: the consumer (storage) writing
    total: float = 0.0


class ZstdEncoder:
    """Compress a stream into one standard zstd frame, hashing the compressed bytes.

    `source` is an iterable of bytes, or anything with `readinto` (a ProcessStream, a raw
    file), which is read into reused buffers. Iterating yields compressed chunks. After the
    iterator is exhausted: `logical_bytes`, `stored_bytes`, `sha256` (hex digest of exactly
    the yielded bytes), `timings`. `threads` = zstd worker threads; 0 means one per core,
    like `zstd -T0`. The frame carries a content checksum (as the zstd CLI writes by default),
    so `zstd -d` and `read_back` also check the decompressed bytes.

    `read_ahead` pieces of `read_size` bytes are read by a helper thread ahead of compression
    (0: read in the iterating thread). With an iterable source that thread runs the iterator.
    An exception from the source (ProcessFailed) reaches the consumer before the end of the
    stream, so `Storage.put` does not commit.

    If iteration stops early (the consumer failed or closed it), the source is closed too, so
    a ProcessStream's process is killed rather than left blocked on a full pipe.
    """

    def __init__(
        self,
        source: Iterable[bytes],
        *,
        level: int = 3,
        threads: int = 0,
        read_size: int = CHUNK_SIZE,
        read_ahead: int = 8,
    ):
        if level > zstandard.MAX_COMPRESSION_LEVEL:
            raise ValueError(
                f"zstd level {level} is above the maximum {zstandard.MAX_COMPRESSION_LEVEL}"
            )
        if threads < 0:
            raise ValueError(f"threads must be 0 (one per core) or more, not {threads}")
        self.source = source
        self.level = level
        self.threads = threads or _cpu_count()
        self.read_size = read_size
        self.read_ahead = read_ahead
        self.logical_bytes = 0
        self.stored_bytes = 0
        self.sha256: str | None = None
        self.timings = EncoderTimings()
        self._started = False

    @property
    def done(self) -> bool:
        return self.sha256 is not None

    @property
    def ratio(self) -> float:
        return self.logical_bytes / self.stored_bytes if self.stored_bytes else 0.0

    def __iter__(self) -> Iterator[bytes]:
        if self._started:
            raise RuntimeError("a ZstdEncoder can be iterated only once")
        self._started = True
        return self._encode()

    def _inputs(self) -> Iterator[memoryview | bytes]:
        """The source in pieces of at most read_size; each is valid until the next one.

        Closing this generator before the end stops the source too (kills a ProcessStream).
        """
        ahead = None
        if self.read_ahead > 0:
            ahead = _ReadAhead(self.source, self.read_size, self.read_ahead)
            pieces: Iterator = iter(ahead)
        elif hasattr(self.source, "readinto"):
            pieces = _read_into_one_buffer(self.source, self.read_size)
        else:
            pieces = iter(self.source)
        finished = False
        try:
            for chunk in pieces:
                if len(chunk) <= self.read_size:
                    yield chunk
                else:  # bound zstd's output per call, whatever size the producer chose
                    big = memoryview(chunk)
                    for start in range(0, len(big), self.read_size):
                        yield big[start : start + self.read_size]
            finished = True
        finally:
            if ahead is not None:
                ahead.close(early=not finished)
            elif not finished:
                close = getattr(self.source, "close", None)
                if close is not None:
                    close()

    def _encode(self) -> Iterator[bytes]:
        clock = time.perf_counter
        timings = self.timings
        digest = hashlib.sha256()
        compressor = zstandard.ZstdCompressor(
            compression_params=compression_parameters(self.level, self.threads)
        ).compressobj()
        inputs = self._inputs()
        finished = False
        began = clock()
        try:
            while True:
                t0 = clock()
                chunk = next(inputs, None)
                t1 = clock()
                timings.read += t1 - t0
                if chunk is None:
                    out = compressor.flush()
                else:
                    self.logical_bytes += len(chunk)
                    out = compressor.compress(chunk)
                t2 = clock()
                timings.compress += t2 - t1
                if out:
                    digest.update(out)
                    self.stored_bytes += len(out)
                    t3 = clock()
                    timings.hash += t3 - t2
                    yield out
                    timings.downstream += clock() - t3
                if chunk is None:
                    break
            self.sha256 = digest.hexdigest()
            finished = True
        finally:
            timings.total = clock() - began
            if not finished:
                inputs.close()  # stops the source: a dump is killed, not left on a full pipe


# Multi-threaded zstd cuts its input into jobs of 4 windows by default (8 MiB at level 3,
# 32 MiB at level 9), and each worker holds a job's input and output: ~44 MB of a backup's
# memory at level 3 and ~100 MB at level 9 on 2 cores. 2 MiB jobs hold it to ~13 / ~32 MB
# at a ratio within 1-4 % (measured on a pg_dump -Fc -Z0 of pgbench data) and no slower.
# Levels above SMALL_JOBS_UP_TO keep zstd's default: whoever asks for them buys ratio.
JOB_SIZE = 2 << 20
SMALL_JOBS_UP_TO = 12


def compression_parameters(level: int, threads: int) -> zstandard.ZstdCompressionParameters:
    """The compressor's parameters: level, worker threads, content checksum, job size."""
    extra = {"job_size": JOB_SIZE} if level <= SMALL_JOBS_UP_TO else {}
    return zstandard.ZstdCompressionParameters.from_level(
        level, threads=threads, write_checksum=True, **extra
    )


def _read_into_one_buffer(source, size: int) -> Iterator[memoryview]:
    view = memoryview(bytearray(size))
    while n := source.readinto(view):
        # zstd copies the input before compress() returns, so the buffer is reusable.
        yield view[:n] if n < size else view


_END = object()
_STOP = object()


class _Failure:
    def __init__(self, exc: BaseException):
        self.exc = exc


class _ReadAhead:
    """Reads the source in a helper thread, up to `depth` pieces ahead of the consumer.

    zstd's compress() stalls now and then for tens of milliseconds while its workers catch up;
    without this, pg_dump would block on a full pipe meanwhile. Sources with `readinto` are
    read into a pool of `depth` reused buffers; a yielded view is valid until the next piece
    is requested. Anything the source raises (ProcessFailed) is raised in the consumer, after
    the pieces read before it.
    """

    def __init__(self, source, read_size: int, depth: int):
        self._source = source
        self._full: queue.SimpleQueue = queue.SimpleQueue()
        self._free: queue.SimpleQueue = queue.SimpleQueue()
        self._readinto = getattr(source, "readinto", None)
        for _ in range(depth):
            self._free.put(memoryview(bytearray(read_size)) if self._readinto else None)
        self._closed = False
        self._thread = threading.Thread(target=self._read, name="read-ahead", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        full, free, readinto = self._full, self._free, self._readinto
        try:
            if readinto is not None:
                while (view := free.get()) is not _STOP:
                    n = readinto(view)
                    if not n:
                        break
                    full.put((view, n))
            else:
                iterator = iter(self._source)
                try:
                    for chunk in iterator:
                        if free.get() is _STOP:
                            return
                        full.put((chunk, None))
                finally:
                    # Only this thread may close a generator it is running.
                    close = getattr(iterator, "close", None)
                    if close is not None:
                        close()
        except BaseException as exc:
            full.put(_Failure(exc))
            return
        full.put(_END)

    def __iter__(self) -> Iterator[memoryview | bytes]:
        full, free = self._full, self._free
        while (item := full.get()) is not _END:
            if isinstance(item, _Failure):
                raise item.exc
            piece, n = item
            if n is None:
                yield piece
                free.put(None)
            else:
                yield piece[:n] if n < len(piece) else piece
                free.put(piece)  # the consumer is done with it: the buffer is free again

    def close(self, early: bool) -> None:
        """Stop the helper thread; when `early`, stop the producer too (kill pg_dump)."""
        if self._closed:
            return
        self._closed = True
        if early and self._readinto is not None:
            close = getattr(self._source, "close", None)
            if close is not None:
                close()  # a reader blocked on the pipe then sees EOF
        self._free.put(_STOP)
        self._thread.join(5.0)


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


# -- read-back -----------------------------------------------------------------------------

_ZSTD_MAGIC = 0xFD2FB528
_SKIPPABLE_MASK = 0xFFFFFFF0
_SKIPPABLE_MAGIC = 0x184D2A50


class _FrameWalker:
    """Follows zstd frame and block headers (RFC 8878) to tell a complete stream from a cut one.

    The zstandard streaming decoders stop silently at the end of their input, so a truncated
    object would otherwise look fine. This reads only headers and skips block contents.
    """

    def __init__(self) -> None:
        self.offset = 0
        self.frames = 0
        self.error: str | None = None
        self._need = 4  # header bytes wanted before the next decision
        self._have = bytearray()
        self._skip = 0
        self._state = "magic"
        self._checksum = False

    def feed(self, data) -> None:
        if self.error:
            return
        view = memoryview(data)
        pos, end = 0, len(view)
        while pos < end:
            if self._skip:
                step = min(self._skip, end - pos)
                self._skip -= step
                pos += step
                if not self._skip and self._state == "after-skip":
                    self._state = "magic"
                    self._need = 4
                continue
            take = min(self._need - len(self._have), end - pos)
            self._have += view[pos : pos + take]
            pos += take
            if len(self._have) == self._need:
                self._decide(self.offset + pos)
                if self.error:
                    return
        self.offset += end

    def _decide(self, at: int) -> None:
        have = self._have
        state = self._state
        if state == "magic":
            magic = int.from_bytes(have[:4], "little")
            if magic == _ZSTD_MAGIC:
                self._state, self._need = "frame-header", 5
                return
            if magic & _SKIPPABLE_MASK == _SKIPPABLE_MAGIC:
                self._state, self._need = "skippable", 8
                return
            self.error = f"not a zstd frame at byte {at - 4}"
        elif state == "frame-header":
            fhd = have[4]
            if fhd & 0x08:
                self.error = f"reserved bit set in frame header at byte {at - 1}"
                return
            single = (fhd >> 5) & 1
            fcs = (1 if single else 0, 2, 4, 8)[fhd >> 6]
            size = 5 + (0 if single else 1) + (0, 1, 2, 4)[fhd & 3] + fcs
            self._checksum = bool(fhd & 0x04)
            if size > len(have):
                self._need = size  # window, dictionary and content-size fields
                self._state = "frame-header-rest"
                return
            self._start_blocks()
        elif state == "frame-header-rest":
            self._start_blocks()
        elif state == "skippable":
            self._skip = int.from_bytes(have[4:8], "little")
            self._have.clear()
            if self._skip:
                self._state = "after-skip"
            else:
                self._state, self._need = "magic", 4
        elif state == "block":
            header = int.from_bytes(have[:3], "little")
            last, kind, size = header & 1, (header >> 1) & 3, header >> 3
            if kind == 3:
                self.error = f"reserved block type at byte {at - 3}"
                return
            self._have.clear()
            self._skip = 1 if kind == 1 else size
            if last:
                self.frames += 1
                if self._checksum:
                    self._state, self._need = "checksum", 4
                    # The checksum is read as a header after the block content is skipped.
                else:
                    self._state, self._need = "magic", 4
            else:
                self._need = 3
        elif state == "checksum":
            self._have.clear()
            self._state, self._need = "magic", 4

    def _start_blocks(self) -> None:
        self._have.clear()
        self._state, self._need = "block", 3

    def finish(self) -> str | None:
        """None when the stream ended cleanly after at least one frame, else the problem."""
        if self.error:
            return self.error
        if self.offset == 0:
            return "empty: no zstd frame at all"
        if self._state != "magic" or self._have or self._skip:
            where = {
                "frame-header": "in a frame header",
                "frame-header-rest": "in a frame header",
                "skippable": "in a skippable frame",
                "after-skip": "in a skippable frame",
                "block": "in a block",
                "checksum": "before the frame's checksum",
            }.get(self._state, "in a frame")
            return f"truncated: the stream ends {where} after {self.offset} bytes (incomplete)"
        if self.frames == 0:
            return "no zstd frame, only skippable frames"
        return None


@dataclass
class ReadBackReport:
    """What reading a stored object back proved. `decode_error` None means it decodes fully."""

    stored_bytes: int = 0
    sha256: str = ""
    decoded_bytes: int = 0
    decode_error: str | None = None
    frames: int = 0
    consumer_stopped: bool = False
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.decode_error is None


class _DecodeSink:
    """The zstd writer's output: counts bytes and feeds the consumer until it declines."""

    def __init__(self, consumer: Callable[[bytes], object] | None):
        self.decoded = 0
        self.consumer = consumer
        self.consumer_stopped = False

    def write(self, data: bytes) -> int:
        self.decoded += len(data)
        if self.consumer is not None and self.consumer(data) is False:
            self.consumer = None
            self.consumer_stopped = True
        return len(data)


_DONE = object()


def read_back(
    chunks: Iterable[bytes],
    consumer: Callable[[bytes], object] | None = None,
    *,
    write_size: int = 128 * 1024,
    queue_depth: int = 8,
) -> ReadBackReport:
    """Hash and count stored (compressed) bytes and prove they decode, in one pass.

    `consumer(chunk)` receives each decompressed chunk (at most `write_size` bytes) until it
    returns False; decoding goes on without it. A corrupt or truncated stream sets
    `decode_error` instead of raising (hashing still covers every stored byte); exceptions
    from `chunks` or from `consumer` propagate. Hashing runs in the calling thread while a
    helper thread decodes, so the two overlap.
    """
    report = ReadBackReport()
    sink = _DecodeSink(consumer)
    walker = _FrameWalker()
    feed: queue.Queue = queue.Queue(queue_depth)
    failure: list[BaseException] = []
    decode_time = [0.0]

    def decode() -> None:
        writer = zstandard.ZstdDecompressor().stream_writer(
            sink, write_size=write_size, closefd=False
        )
        broken = False
        while (chunk := feed.get()) is not _DONE:
            if broken:
                continue  # keep draining so the reading thread never blocks
            t0 = time.perf_counter()
            try:
                walker.feed(chunk)
                if walker.error:  # clearer than the decoder's message for the same fault
                    report.decode_error = walker.error
                    broken = True
                    continue
                writer.write(chunk)
            except zstandard.ZstdError as exc:
                report.decode_error = f"corrupt: {exc}"
                broken = True
            except BaseException as exc:  # the consumer failed: hand it to the caller
                failure.append(exc)
                broken = True
            decode_time[0] += time.perf_counter() - t0

    began = time.perf_counter()
    digest = hashlib.sha256()
    worker = threading.Thread(target=decode, name="read-back-decode", daemon=True)
    worker.start()
    read_time = hash_time = 0.0
    try:
        iterator = iter(chunks)
        while True:
            t0 = time.perf_counter()
            chunk = next(iterator, None)
            t1 = time.perf_counter()
            read_time += t1 - t0
            if chunk is None:
                break
            digest.update(chunk)
            report.stored_bytes += len(chunk)
            hash_time += time.perf_counter() - t1
            feed.put(chunk)
    finally:
        feed.put(_DONE)
        worker.join()
    if failure:
        raise failure[0]
    if report.decode_error is None:
        report.decode_error = walker.finish()
    report.sha256 = digest.hexdigest()
    report.decoded_bytes = sink.decoded
    report.frames = walker.frames
    report.consumer_stopped = sink.consumer_stopped
    report.seconds = time.perf_counter() - began
    report.timings = {"read": read_time, "hash": hash_time, "decode": decode_time[0]}
    return report
