"""Redis: facts from INFO, and an RDB snapshot taken over the network as `redis-cli --rdb` does.

The snapshot speaks the replication protocol with stdlib sockets (no redis-py):
`AUTH`, `REPLCONF capa eof`, `REPLCONF rdb-only 1`, `SYNC`, then the master sends the RDB as
either `$<length>\\r\\n<length bytes>` (disk-based) or `$EOF:<40-byte mark>\\r\\n<data><mark>`
(diskless). Bare `\\n` keep-alives may come first while the master prepares the snapshot.

Latency: `capa eof` (what redis-cli sends) lets the master stream the snapshot without touching
its disk, but then `repl-diskless-sync-delay` (5 s by default in Redis 7) applies: the master
waits for more replicas before it forks, checking once a second, so even a tiny dataset takes
4-6 s (measured on 7.0.15; `rdb-only` alone does not cause it). No client command avoids that
wait without changing where the snapshot goes: `diskless=False` leaves out `capa eof`, so the
master starts a disk-based BGSAVE at once (~0.1 s for a small dataset) but writes the snapshot
to its own `dir/dbfilename`, which a server run without persistence would load on restart.
Even then, a SYNC that arrives while another snapshot child still runs waits for the next one,
and that start is delayed the same 5 s.

A throwaway redis-server that loads an RDB (`scratch_redis`) serves DR drills.
"""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Iterable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from runbook.config import RedisTarget
from runbook.errors import PermanentError, TransientError

RDB_EOF_MARK_SIZE = 40  # length of the random mark that ends a diskless transfer


CRC_VERIFY_LIMIT = 64 << 20  # pure-Python CRC-64 runs at ~6-10 MB/s: verify only up to this


_MAX_LINE = 64 << 10  # no reply header is longer; protects against a peer that is not Redis


_RECV_SIZE = 64 << 10


class RedisUnavailable(TransientError):
    """Connection refused, reset or timed out, or closed before a reply."""


class RedisSnapshotIncomplete(TransientError):
    """The RDB stream ended before the announced length or the end-of-snapshot mark."""


class RedisAuthError(PermanentError):
    """The server rejected the credentials in the target's url (or needs some)."""


class ErrorReply(Exception):
    """A `-ERR ...` reply; mapped to a runbook error by the caller, who knows the command."""


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int
    tls: bool
    username: str | None
    password: str | None
    timeout: float

    @property
    def where(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def endpoint_of(target: RedisTarget) -> Endpoint:
    parts = urlsplit(target.url.get_secret_value())
    password = unquote(parts.password) if parts.password is not None else None
    return Endpoint(
        host=parts.hostname or "localhost",
        port=parts.port or 6379,
        tls=parts.scheme == "rediss",
        username=unquote(parts.username) if parts.username else None,
        password=password,
        timeout=target.timeout.total_seconds(),
    )


class Connection:
    """A socket with a read buffer and just enough RESP2 for the commands used here."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.where = endpoint.where
        sock = socket.create_connection((endpoint.host, endpoint.port), timeout=endpoint.timeout)
        if endpoint.tls:
            try:
                context = ssl.create_default_context()
                sock = context.wrap_socket(sock, server_hostname=endpoint.host)
            except BaseException:
                sock.close()
                raise
        sock.settimeout(endpoint.timeout)  # a limit on each read, not on the whole transfer
        self._sock = sock
        self._buffer = bytearray()

    def close(self) -> None:
        self._sock.close()

    def send(self, *args: str | bytes) -> None:
        encoded = [arg if isinstance(arg, bytes) else arg.encode() for arg in args]
        frame = b"*%d\r\n" % len(encoded) + b"".join(
            b"$%d\r\n%s\r\n" % (len(arg), arg) for arg in encoded
        )
        self._sock.sendall(frame)

    def _fill(self) -> bool:
        data = self._sock.recv(_RECV_SIZE)
        self._buffer += data
        return bool(data)

    def readline(self) -> bytes:
        """One line without its `\\r\\n` or bare `\\n`."""
        while (end := self._buffer.find(b"\n")) < 0:
            if len(self._buffer) > _MAX_LINE:
                raise PermanentError(f"redis target at {self.where} sent a malformed reply")
            if not self._fill():
                raise RedisUnavailable(f"redis target at {self.where} closed the connection")
        line = bytes(self._buffer[:end]).removesuffix(b"\r")
        del self._buffer[: end + 1]
        return line

    def read_exact(self, size: int) -> bytes:
        while len(self._buffer) < size:
            if not self._fill():
                raise RedisUnavailable(f"redis target at {self.where} closed the connection")
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data

    def read_some(self, limit: int) -> bytes:
        """Up to `limit` bytes: what is buffered, else one recv. b"" at end of stream."""
        if self._buffer:
            data = bytes(self._buffer[:limit])
            del self._buffer[:limit]
            return data
        return self._sock.recv(limit)

    def reply(self) -> Any:
        """A simple, integer, bulk or array reply (a list of those); raises ErrorReply for
        `-...`."""
        line = self.readline()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest
        if kind == b"-":
            raise ErrorReply(rest.decode(errors="replace"))
        try:
            if kind == b":":
                return int(rest)
            if kind == b"$":
                size = int(rest)
                return None if size < 0 else self.read_exact(size + 2)[:-2]
            if kind == b"*":  # SCAN, CONFIG GET (maintenance)
                count = int(rest)
                return None if count < 0 else [self.reply() for _ in range(count)]
        except ValueError:
            pass
        raise PermanentError(f"redis target at {self.where} sent an unexpected reply {line[:40]!r}")


@contextmanager
def connect(endpoint: Endpoint) -> Iterator[Connection]:
    """Open, authenticate, close; network faults become runbook errors naming host:port."""
    where = endpoint.where
    try:
        with closing(Connection(endpoint)) as conn:
            _authenticate(conn, endpoint)
            yield conn
    except ConnectionRefusedError:
        raise RedisUnavailable(f"connection refused by redis target at {where}") from None
    except TimeoutError:
        raise RedisUnavailable(
            f"redis target at {where} did not answer within {endpoint.timeout:g}s"
        ) from None
    except ssl.SSLCertVerificationError as exc:
        raise PermanentError(
            f"TLS certificate of redis target at {where} failed verification: {exc.verify_message}"
        ) from None
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise RedisUnavailable(f"network error with redis target at {where}: {reason}") from None


def _authenticate(conn: Connection, endpoint: Endpoint) -> None:
    if endpoint.password is None:
        return
    if endpoint.username:
        conn.send("AUTH", endpoint.username, endpoint.password)
    else:
        conn.send("AUTH", endpoint.password)
    try:
        conn.reply()
    except ErrorReply as exc:
        code = str(exc).split(" ", 1)[0]
        raise RedisAuthError(
            f"authentication failed for redis target at {conn.where} ({code}): "
            "check the user and password in the target's url"
        ) from None


def command_error(conn: Connection, command: str, message: str) -> Exception:
    """Map an error reply to a command other than AUTH."""
    if message.startswith(("NOAUTH", "WRONGPASS", "ERR invalid password")):
        return RedisAuthError(
            f"authentication failed for redis target at {conn.where}: "
            "the server needs a password (redis://user:password@host:port)"
        )
    if message.startswith("NOPERM"):
        return PermanentError(
            f"redis target at {conn.where} does not allow {command} for this user: {message}"
        )
    if message.startswith("ERR unknown command"):
        return PermanentError(
            f"redis target at {conn.where} does not offer {command} "
            f"(managed services often disable it): {message}"
        )
    return TransientError(f"redis target at {conn.where} refused {command}: {message}")


def redis_facts(target: RedisTarget) -> dict[str, Any]:
    """Version, role, memory and keys per database from INFO.

    Returns {"redis_version", "role", "used_memory", "maxmemory", "keys_per_db": {"db0": 123, ...},
    "expires_per_db": {"db0": 7, ...}} (keys, and keys with a TTL, per database) and
    "rdb_last_save_time" when the server reports it. Databases without keys are not listed.
    """
    endpoint = endpoint_of(target)
    with connect(endpoint) as conn:
        conn.send("INFO")
        try:
            info = conn.reply()
        except ErrorReply as exc:
            raise command_error(conn, "INFO", str(exc)) from None
    if not isinstance(info, bytes):
        raise PermanentError(f"redis target at {endpoint.where} sent no INFO text")
    fields = parse_info(info.decode(errors="replace"))
    facts: dict[str, Any] = {
        "redis_version": fields.get("redis_version"),
        "role": fields.get("role"),
        "used_memory": int_or_none(fields.get("used_memory")),
        "maxmemory": int_or_none(fields.get("maxmemory")),  # 0: no limit
        "keys_per_db": _keyspace(fields, "keys"),
        "expires_per_db": _keyspace(fields, "expires"),
    }
    if "rdb_last_save_time" in fields:
        facts["rdb_last_save_time"] = int_or_none(fields["rdb_last_save_time"])
    return facts


def parse_info(text: str) -> dict[str, str]:
    fields = {}
    for line in text.splitlines():
        if line and not line.startswith("#") and ":" in line:
            key, value = line.split(":", 1)
            fields[key] = value.strip()
    return fields


def _keyspace(fields: dict[str, str], stat: str) -> dict[str, int]:
    """One figure (`keys` or `expires`) of the `db0:keys=1,expires=0,avg_ttl=0` lines of the
    keyspace section, per database; zeros left out."""
    counts = {}
    for name, value in fields.items():
        if name.startswith("db") and name[2:].isdigit():
            stats = dict(item.split("=", 1) for item in value.split(",") if "=" in item)
            count = int_or_none(stats.get(stat))
            if count:
                counts[name] = count
    return counts


def int_or_none(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def stream_rdb(
    target: RedisTarget, chunk_size: int = 1 << 20, *, diskless: bool = True
) -> Iterator[bytes]:
    """Yield an RDB snapshot of the whole server in chunks of at most `chunk_size` bytes.

    Nothing happens until the first chunk is asked for. The connection is closed after the
    payload (the master would go on streaming replication commands) or when the consumer stops.
    `target.timeout` limits each read; the master sends a keep-alive every second while it
    prepares the snapshot, so the timeout must be longer than that.

    Raises RedisUnavailable (transient) on refused / timed out / reset connections,
    RedisSnapshotIncomplete (transient) when the stream ends early - a truncated snapshot is
    never returned as complete - and RedisAuthError (permanent) for rejected credentials.
    `diskless=False`: see the module docstring (faster, but the server writes the file).
    """
    if chunk_size < 1:
        raise ValueError("chunk_size must be positive")
    endpoint = endpoint_of(target)
    with connect(endpoint) as conn:
        if diskless:
            _replconf(conn, "capa", "eof")
        _replconf(conn, "rdb-only", "1")  # tells 7.0+ masters to send no replication stream
        conn.send("SYNC")
        header = _sync_header(conn)
        if header.startswith(b"$EOF:"):
            mark = header[5:]
            if len(mark) != RDB_EOF_MARK_SIZE:
                raise PermanentError(f"redis target at {conn.where} sent a bad EOF mark")
            yield from _until_mark(conn, mark, chunk_size)
        else:
            try:
                length = int(header[1:])
            except ValueError:
                raise PermanentError(
                    f"redis target at {conn.where} sent a bad snapshot header {header[:40]!r}"
                ) from None
            yield from _exact_length(conn, length, chunk_size)


def _replconf(conn: Connection, option: str, value: str) -> None:
    conn.send("REPLCONF", option, value)
    try:
        conn.reply()
    except ErrorReply as exc:
        if str(exc).startswith(("NOAUTH", "WRONGPASS", "NOPERM")):
            raise command_error(conn, "REPLCONF", str(exc)) from None


def _sync_header(conn: Connection) -> bytes:
    """The `$...` line that announces the payload, after any bare-newline keep-alives."""
    while True:
        line = conn.readline()
        if not line:
            continue  # keep-alive while the master forks or waits for more replicas
        if line.startswith(b"-"):
            raise command_error(conn, "SYNC", line[1:].decode(errors="replace"))
        if line.startswith(b"$"):
            return line
        raise PermanentError(
            f"redis target at {conn.where} answered SYNC with {line[:40]!r}, not a snapshot"
        )


def _exact_length(conn: Connection, length: int, chunk_size: int) -> Iterator[bytes]:
    remaining = length
    while remaining:
        data = conn.read_some(min(chunk_size, remaining))
        if not data:
            raise RedisSnapshotIncomplete(
                f"redis target at {conn.where} closed the connection after "
                f"{length - remaining} of {length} snapshot bytes"
            )
        remaining -= len(data)
        yield data


def _until_mark(conn: Connection, mark: bytes, chunk_size: int) -> Iterator[bytes]:
    """Diskless payload: data then the mark. Holds back only the last 40 bytes."""
    tail = b""
    received = 0
    while True:
        data = conn.read_some(chunk_size)
        if not data:
            raise RedisSnapshotIncomplete(
                f"redis target at {conn.where} closed the connection after {received} "
                "snapshot bytes, before the end-of-snapshot mark"
            )
        received += len(data)
        window = tail + data
        # as Redis's own replica does: the mark is the end of the last read of the transfer
        if window.endswith(mark):
            if len(window) > len(mark):
                yield window[: -len(mark)]
            return
        if len(window) > len(mark):
            yield window[: -len(mark)]
            tail = window[-len(mark) :]
        else:
            tail = window


def _crc64_table() -> list[int]:
    reflected_poly = int(f"{0xAD93D23594C935A9:064b}"[::-1], 2)  # Jones, as Redis's crc64.c
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ reflected_poly if crc & 1 else crc >> 1
        table.append(crc)
    return table


_CRC64_TABLE = _crc64_table()


def _crc64(crc: int, data: bytes | memoryview, table: list[int] = _CRC64_TABLE) -> int:
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc


def check_rdb_stream(chunks: Iterable[bytes], *, crc_limit: int = CRC_VERIFY_LIMIT) -> str | None:
    """None when the (decompressed) bytes look like a complete RDB, else a one-line problem.

    Checks the `REDIS` + 4-digit version magic, the EOF opcode 0xFF followed by 8 checksum
    bytes at the very end and, when the stored checksum is not 0 (0 = written with
    rdbchecksum no) and the file is at most `crc_limit` bytes, the CRC-64. Larger files get the
    structural check only (pure Python CRC is too slow): run redis-check-rdb on them.
    Stops reading at a bad magic.
    """
    head = b""
    tail = b""  # the last 9 bytes seen: 0xFF + checksum if the file is complete
    total = 0
    crc = 0
    crc_fed = 0
    crc_on = True
    for chunk in chunks:
        if not chunk:
            continue
        total += len(chunk)
        if len(head) < 9:
            head += chunk[: 9 - len(head)]
            if len(head) == 9 and not _magic_ok(head):
                return "not an RDB file (bad magic)"
        window = tail + chunk
        body = memoryview(window)[:-9]
        if crc_on and body:
            if crc_fed + len(body) > crc_limit:
                crc_on = False
            else:
                crc = _crc64(crc, body)
                crc_fed += len(body)
        tail = window[-9:]
    if total == 0:
        return "empty: no RDB data"
    if len(head) < 9 or not _magic_ok(head):
        return "not an RDB file (bad magic)"
    if total < 18 or tail[0] != 0xFF:
        return "truncated: no EOF marker"
    stored = int.from_bytes(tail[1:], "little")
    if stored and crc_on and _crc64(crc, tail[:1]) != stored:
        return "checksum mismatch"
    return None


def _magic_ok(head: bytes) -> bool:
    return head[:5] == b"REDIS" and head[5:9].isdigit()  # bytes.isdigit: ASCII only


def redis_check_rdb_binary() -> str | None:
    """Path of redis-check-rdb when it is on PATH (it verifies structure and CRC at C speed)."""
    return shutil.which("redis-check-rdb")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def scratch_redis(rdb: Path, folder: Path) -> Iterator[int]:
    """A throwaway redis-server on a free port that loaded `rdb`; yields its port."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise PermanentError("redis-server is not installed: Redis drills need it on PATH")
    data = folder / "redis"
    data.mkdir(parents=True, exist_ok=True)
    shutil.move(str(rdb), data / "dump.rdb")
    port = _free_port()
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(data),
            "--dbfilename",
            "dump.rdb",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise PermanentError(f"redis-server exited ({proc.returncode}) loading the RDB")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(64).startswith(b"+PONG"):
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise PermanentError("redis-server did not load the RDB within 120 s")
            time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# --- loading an RDB into a running server (restore) ------------------------------------------


def server_run_id(target: RedisTarget) -> str | None:
    """The server's run_id (INFO server): two URLs that reach the same process share it."""
    with connect(endpoint_of(target)) as conn:
        conn.send("INFO", "server")
        try:
            info = conn.reply()
        except ErrorReply as exc:
            raise command_error(conn, "INFO", str(exc)) from None
    fields = parse_info(info.decode(errors="replace")) if isinstance(info, bytes) else {}
    return fields.get("run_id")


def flush_all(target: RedisTarget) -> None:
    """FLUSHALL: every key of every database goes (a restore's --clean)."""
    with connect(endpoint_of(target)) as conn:
        conn.send("FLUSHALL")
        try:
            conn.reply()
        except ErrorReply as exc:
            raise command_error(conn, "FLUSHALL", str(exc)) from None


def _pipeline(conn: Connection, commands: list[tuple[str | bytes, ...]], name: str) -> list[Any]:
    """Send `commands` at once, then read their replies in order; the first error raises."""
    for command in commands:
        conn.send(*command)
    replies, error = [], None
    for _ in commands:
        try:
            replies.append(conn.reply())
        except ErrorReply as exc:  # read every reply first: the connection stays in step
            error = error or exc
            replies.append(None)
    if error is not None:
        raise command_error(conn, name, str(error))
    return replies


def copy_keys(source: RedisTarget, destination: RedisTarget, batch: int = 500) -> dict[str, int]:
    """Every key of every database of `source` into the same database of `destination`
    (DUMP + PTTL there, RESTORE ... REPLACE here, a batch at a time, TTLs kept); returns the
    keys written per database ("db0": 25). The RDB payloads need a destination of the same
    or a newer Redis version, as for replication."""
    copied: dict[str, int] = {}
    with connect(endpoint_of(source)) as reader, connect(endpoint_of(destination)) as writer:
        reader.send("INFO", "keyspace")
        databases = _keyspace(parse_info(reader.reply().decode(errors="replace")), "keys")
        for db in sorted(databases, key=lambda name: int(name[2:])):
            number = db[2:]
            _pipeline(reader, [("SELECT", number)], "SELECT")
            _pipeline(writer, [("SELECT", number)], "SELECT")
            seen: set[bytes] = set()
            cursor = b"0"
            while True:
                reply = _pipeline(reader, [("SCAN", cursor, "COUNT", str(batch))], "SCAN")[0]
                cursor, keys = reply[0], [k for k in reply[1] if k not in seen]
                seen.update(keys)
                dumped = _pipeline(
                    reader, [c for k in keys for c in (("DUMP", k), ("PTTL", k))], "DUMP"
                )
                writes = []
                for key, payload, ttl in zip(keys, dumped[::2], dumped[1::2], strict=True):
                    if payload is None or ttl == -2:  # expired since the SCAN
                        continue
                    writes.append(("RESTORE", key, str(max(ttl, 0)), payload, "REPLACE"))
                _pipeline(writer, writes, "RESTORE")
                copied[db] = copied.get(db, 0) + len(writes)
                if cursor == b"0":
                    break
    return copied
