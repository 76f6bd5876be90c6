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
"""

from __future__ import annotations

import shutil
import socket
import ssl
import time
from collections.abc import Iterable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from runbook.config import RedisHealth, RedisTarget, Threshold
from runbook.errors import PermanentError, TransientError
from runbook.health import CheckResult, Status, describe, grade, timer
from runbook.secrets import redact

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


class _ErrorReply(Exception):
    """A `-ERR ...` reply; mapped to a runbook error by the caller, who knows the command."""


# --- connection ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Endpoint:
    host: str
    port: int
    tls: bool
    username: str | None
    password: str | None
    timeout: float

    @property
    def where(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def _endpoint(target: RedisTarget) -> _Endpoint:
    parts = urlsplit(target.url.get_secret_value())
    password = unquote(parts.password) if parts.password is not None else None
    return _Endpoint(
        host=parts.hostname or "localhost",
        port=parts.port or 6379,
        tls=parts.scheme == "rediss",
        username=unquote(parts.username) if parts.username else None,
        password=password,
        timeout=target.timeout.total_seconds(),
    )


class _Connection:
    """A socket with a read buffer and just enough RESP2 for the commands used here."""

    def __init__(self, endpoint: _Endpoint) -> None:
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

    def send(self, *args: str) -> None:
        encoded = [arg.encode() for arg in args]
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

    def reply(self) -> bytes | int | None:
        """A simple, integer or bulk reply; raises _ErrorReply for `-...`."""
        line = self.readline()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest
        if kind == b"-":
            raise _ErrorReply(rest.decode(errors="replace"))
        try:
            if kind == b":":
                return int(rest)
            if kind == b"$":
                size = int(rest)
                return None if size < 0 else self.read_exact(size + 2)[:-2]
        except ValueError:
            pass
        raise PermanentError(f"redis target at {self.where} sent an unexpected reply {line[:40]!r}")


@contextmanager
def _connect(endpoint: _Endpoint) -> Iterator[_Connection]:
    """Open, authenticate, close; network faults become runbook errors naming host:port."""
    where = endpoint.where
    try:
        with closing(_Connection(endpoint)) as conn:
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


def _authenticate(conn: _Connection, endpoint: _Endpoint) -> None:
    if endpoint.password is None:
        return
    if endpoint.username:
        conn.send("AUTH", endpoint.username, endpoint.password)
    else:
        conn.send("AUTH", endpoint.password)
    try:
        conn.reply()
    except _ErrorReply as exc:
        code = str(exc).split(" ", 1)[0]
        raise RedisAuthError(
            f"authentication failed for redis target at {conn.where} ({code}): "
            "check the user and password in the target's url"
        ) from None


def _command_error(conn: _Connection, command: str, message: str) -> Exception:
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


# --- facts -----------------------------------------------------------------------------------


def redis_facts(target: RedisTarget) -> dict[str, Any]:
    """Version, role, memory and keys per database from INFO.

    Returns {"redis_version", "role", "used_memory", "keys_per_db": {"db0": 123, ...},
    "expires_per_db": {"db0": 7, ...}} (keys, and keys with a TTL, per database) and
    "rdb_last_save_time" when the server reports it. Databases without keys are not listed.
    """
    endpoint = _endpoint(target)
    with _connect(endpoint) as conn:
        conn.send("INFO")
        try:
            info = conn.reply()
        except _ErrorReply as exc:
            raise _command_error(conn, "INFO", str(exc)) from None
    if not isinstance(info, bytes):
        raise PermanentError(f"redis target at {endpoint.where} sent no INFO text")
    fields = _parse_info(info.decode(errors="replace"))
    facts: dict[str, Any] = {
        "redis_version": fields.get("redis_version"),
        "role": fields.get("role"),
        "used_memory": _int_or_none(fields.get("used_memory")),
        "keys_per_db": _keyspace(fields, "keys"),
        "expires_per_db": _keyspace(fields, "expires"),
    }
    if "rdb_last_save_time" in fields:
        facts["rdb_last_save_time"] = _int_or_none(fields["rdb_last_save_time"])
    return facts


def _parse_info(text: str) -> dict[str, str]:
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
            count = _int_or_none(stats.get(stat))
            if count:
                counts[name] = count
    return counts


def _int_or_none(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


# --- snapshot --------------------------------------------------------------------------------


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
    endpoint = _endpoint(target)
    with _connect(endpoint) as conn:
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


def _replconf(conn: _Connection, option: str, value: str) -> None:
    conn.send("REPLCONF", option, value)
    try:
        conn.reply()
    except _ErrorReply as exc:
        if str(exc).startswith(("NOAUTH", "WRONGPASS", "NOPERM")):
            raise _command_error(conn, "REPLCONF", str(exc)) from None
        # an older server that does not know the option: redis-cli goes on too


def _sync_header(conn: _Connection) -> bytes:
    """The `$...` line that announces the payload, after any bare-newline keep-alives."""
    while True:
        line = conn.readline()
        if not line:
            continue  # keep-alive while the master forks or waits for more replicas
        if line.startswith(b"-"):
            raise _command_error(conn, "SYNC", line[1:].decode(errors="replace"))
        if line.startswith(b"$"):
            return line
        raise PermanentError(
            f"redis target at {conn.where} answered SYNC with {line[:40]!r}, not a snapshot"
        )


def _exact_length(conn: _Connection, length: int, chunk_size: int) -> Iterator[bytes]:
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


def _until_mark(conn: _Connection, mark: bytes, chunk_size: int) -> Iterator[bytes]:
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


# --- checking --------------------------------------------------------------------------------


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


# --- health checks ---------------------------------------------------------------------------

SMALL_DATASET_BYTES = 10 << 20  # below this, allocator overhead makes fragmentation ratios noise
MIN_LOOKUPS = 100  # fewer key lookups say nothing about the hit rate


@dataclass(frozen=True)
class _Reading:
    """What one check read from INFO. status wins when given; else threshold None means report
    only (ok) and a threshold grades the value."""

    value: float | int | str | None
    message: str
    threshold: Threshold | None = None
    unit: str = ""
    status: Status | None = None


def check_redis_health(
    target: RedisTarget, unreachable: Status = Status.CRITICAL
) -> list[CheckResult]:
    """PING, then INFO all and CONFIG GET save over one connection; one CheckResult per check.

    Cannot connect or PING -> only `redis.ping`: `unreachable` when the server is down, did
    not answer or is loading, critical for rejected or missing credentials. No message
    contains the password: messages are built from INFO values and host:port only.
    """
    endpoint = _endpoint(target)
    server: tuple[dict[str, str], str | None] | None = None
    problem = ""
    with timer() as elapsed:
        try:
            with _connect(endpoint) as conn:
                connected = elapsed()
                with timer() as round_trip:
                    refused = _ping(conn)
                    latency = round_trip()
                try:
                    server = (_info_all(conn), _config_save(conn))
                except (OSError, TransientError, PermanentError) as exc:
                    problem = _health_error(exc, endpoint)
        except RedisAuthError as exc:
            return [_ping_failed(target, Status.CRITICAL, str(exc), elapsed())]
        except TransientError as exc:
            return [_ping_failed(target, unreachable, str(exc), elapsed())]
        except PermanentError as exc:
            return [_ping_failed(target, Status.CRITICAL, str(exc), elapsed())]
    version = f"; redis {server[0].get('redis_version', '?')}" if server else ""
    auth = " and AUTH" if endpoint.password is not None else ""
    results = [
        _result(
            target,
            "redis.ping",
            _Reading(
                round(latency * 1000, 2),
                f"{'answer' if refused else 'PONG'} from {endpoint.where} in "
                f"{latency * 1000:.2f} ms (connect{auth} {connected * 1000:.1f} ms){version}"
                f"{refused}",
                target.health.latency_ms,
                " ms",
            ),
            connected + latency,
        )
    ]
    for check, probe in _REDIS_PROBES:
        with timer() as took:
            if server is None:
                reading = _Reading(None, f"INFO failed: {problem}", status=Status.UNKNOWN)
            else:
                try:
                    reading = probe(server[0], server[1], target.health)
                except Exception as exc:  # one unreadable field must not take the others down
                    text = redact(str(exc), [endpoint.password]) or type(exc).__name__
                    reading = _Reading(
                        None,
                        f"cannot read INFO: {type(exc).__name__}: {text}",
                        status=Status.UNKNOWN,
                    )
            results.append(_result(target, check, reading, took()))
    return results


def _ping(conn: _Connection) -> str:
    """Empty for PONG; a note when the server answers but refuses PING because its last
    background save failed (MISCONF, stop-writes-on-bgsave-error): redis.rdb reports that."""
    conn.send("PING")
    try:
        answer = conn.reply()
    except _ErrorReply as exc:  # NOAUTH -> auth error; LOADING, MASTERDOWN -> transient
        if str(exc).startswith("MISCONF"):
            return "; PING refused with MISCONF: writes are stopped after a failed RDB save"
        raise _command_error(conn, "PING", str(exc)) from None
    if answer != b"PONG":
        raise PermanentError(f"redis target at {conn.where} answered PING with {answer!r:.40}")
    return ""


def _info_all(conn: _Connection) -> dict[str, str]:
    conn.send("INFO", "all")
    try:
        info = conn.reply()
    except _ErrorReply as exc:
        raise _command_error(conn, "INFO", str(exc)) from None
    if not isinstance(info, bytes):
        raise PermanentError(f"redis target at {conn.where} sent no INFO text")
    return _parse_info(info.decode(errors="replace"))


def _config_save(conn: _Connection) -> str | None:
    """The `save` setting ("" = no save points), or None when CONFIG is renamed or not allowed."""
    conn.send("CONFIG", "GET", "save")
    try:
        items = _array_reply(conn)
    except _ErrorReply:
        return None
    if len(items) >= 2 and isinstance(items[1], bytes):
        return items[1].decode(errors="replace")
    return None


def _array_reply(conn: _Connection) -> list[bytes | int | None]:
    """A flat array reply (`*N` then N simple, integer or bulk replies)."""
    line = conn.readline()
    if line.startswith(b"-"):
        raise _ErrorReply(line[1:].decode(errors="replace"))
    try:
        size = int(line[1:]) if line.startswith(b"*") else None
    except ValueError:
        size = None
    if size is None:
        raise PermanentError(f"redis target at {conn.where} sent an unexpected reply {line[:40]!r}")
    return [conn.reply() for _ in range(max(size, 0))]


def _health_error(exc: BaseException, endpoint: _Endpoint) -> str:
    if isinstance(exc, TimeoutError):
        return f"redis target at {endpoint.where} did not answer within {endpoint.timeout:g}s"
    if isinstance(exc, OSError):
        reason = exc.strerror or type(exc).__name__
        return f"network error with redis target at {endpoint.where}: {reason}"
    return redact(str(exc), [endpoint.password])


def _ping_failed(target: RedisTarget, status: Status, message: str, duration: float) -> CheckResult:
    return CheckResult(
        check="redis.ping",
        target=target.name,
        status=status,
        message=message,
        duration=round(duration, 4),
    )


def _result(target: RedisTarget, check: str, reading: _Reading, duration: float) -> CheckResult:
    value = reading.value
    if reading.status is not None:
        status = reading.status
    elif reading.threshold is None:
        status = Status.OK
    else:
        status = grade(value if isinstance(value, int | float) else None, reading.threshold)
    return CheckResult(
        check=check,
        target=target.name,
        status=status,
        value=value,
        unit=reading.unit,
        threshold=describe(reading.threshold, reading.unit) if reading.threshold else None,
        message=reading.message,
        duration=round(duration, 4),
    )


def _number(info: dict[str, str], key: str) -> int:
    value = _int_or_none(info.get(key))
    if value is None:
        raise PermanentError(f"INFO has no integer {key} (got {info.get(key)!r})")
    return value


def _probe_memory(info: dict[str, str], save: str | None, health: RedisHealth) -> _Reading:
    used = _number(info, "used_memory")
    maximum = _int_or_none(info.get("maxmemory")) or 0
    human = info.get("used_memory_human", f"{used}B")
    if maximum <= 0:
        return _Reading(None, f"{human} used, no maxmemory set")
    percent = round(100 * used / maximum, 1)
    return _Reading(
        percent,
        f"{human} of {info.get('maxmemory_human', maximum)} maxmemory used ({percent:g}%), "
        f"maxmemory-policy {info.get('maxmemory_policy', '?')}",
        health.memory,
        "%",
    )


def _probe_hit_rate(info: dict[str, str], save: str | None, health: RedisHealth) -> _Reading:
    hits, misses = _number(info, "keyspace_hits"), _number(info, "keyspace_misses")
    lookups = hits + misses
    if lookups < MIN_LOOKUPS:
        return _Reading(
            None,
            f"not enough lookups ({lookups} since start or CONFIG RESETSTAT, need {MIN_LOOKUPS})",
        )
    rate = round(100 * hits / lookups, 1)
    return _Reading(
        rate,
        f"{rate:g}% of {lookups:,} key lookups hit ({hits:,} hits, {misses:,} misses since "
        "start or CONFIG RESETSTAT)",
        health.hit_rate,
        "%",
    )


def _probe_evicted_keys(info: dict[str, str], save: str | None, health: RedisHealth) -> _Reading:
    evicted = _number(info, "evicted_keys")
    return _Reading(
        evicted,
        f"{evicted:,} keys evicted since start "
        f"(maxmemory-policy {info.get('maxmemory_policy', '?')})",
        health.evicted_keys,
    )


def _probe_rejected_connections(
    info: dict[str, str], save: str | None, health: RedisHealth
) -> _Reading:
    rejected = _number(info, "rejected_connections")
    return _Reading(
        rejected,
        f"{rejected:,} connections rejected since start (maxclients {info.get('maxclients', '?')})",
        health.rejected_connections,
    )


def _probe_fragmentation(info: dict[str, str], save: str | None, health: RedisHealth) -> _Reading:
    key = "allocator_frag_ratio" if "allocator_frag_ratio" in info else "mem_fragmentation_ratio"
    ratio = float(info[key])
    used = _number(info, "used_memory")
    human = info.get("used_memory_human", f"{used}B")
    if used < SMALL_DATASET_BYTES:
        return _Reading(
            ratio,
            f"{key} {ratio:g} not graded: {human} used is under 10 MB, where allocator "
            "overhead dominates the ratio",
        )
    return _Reading(ratio, f"{key} {ratio:g} with {human} used", health.fragmentation)


def _probe_rdb(info: dict[str, str], save: str | None, health: RedisHealth) -> _Reading:
    last_save = _number(info, "rdb_last_save_time")
    server_time = _int_or_none(info.get("server_time_usec"))  # 7.0+: the server's own clock
    now = server_time / 1e6 if server_time else time.time()
    hours = round(max(0.0, now - last_save) / 3600, 2)
    changes = _int_or_none(info.get("rdb_changes_since_last_save")) or 0
    since = f"last RDB save {hours:g} h ago, {changes:,} changes since"
    if save is not None:
        configured = bool(save.strip())
        how = f'save "{save}"'
    else:
        # CONFIG GET refused: a background save since start says save points exist. Replica
        # full syncs and manual BGSAVEs count too, so this guess can be wrong both ways.
        bgsaved = (
            (_int_or_none(info.get("rdb_saves")) or 0) > 0
            or info.get("rdb_last_bgsave_time_sec", "-1") != "-1"
            or info.get("rdb_bgsave_in_progress") == "1"
        )
        configured = bgsaved
        how = "CONFIG GET save refused; inferred from INFO: " + (
            "a background save ran since start" if bgsaved else "no background save since start"
        )
    bgsave = info.get("rdb_last_bgsave_status", "ok")
    if bgsave != "ok":
        return _Reading(
            hours,
            f"the last background save failed (rdb_last_bgsave_status:{bgsave}); {since} ({how})",
            health.rdb_save_age_hours,
            " h",
            Status.CRITICAL,
        )
    if not configured:
        aof = ", AOF on" if info.get("aof_enabled") == "1" else ""
        return _Reading(None, f"persistence off: no RDB save points{aof} ({how})")
    return _Reading(hours, f"{since} ({how})", health.rdb_save_age_hours, " h")


def _probe_replication(info: dict[str, str], save: str | None, health: RedisHealth) -> _Reading:
    role = info["role"]
    if role == "slave":
        where = f"{info.get('master_host', '?')}:{info.get('master_port', '?')}"
        link = info.get("master_link_status", "down")
        if link != "up":
            down = _int_or_none(info.get("master_link_down_since_seconds"))
            since = f" for {down}s" if down is not None and down >= 0 else ""
            return _Reading(
                link,
                f"replica of {where}: the link to the master is {link}{since}",
                status=Status.CRITICAL,
            )
        io = info.get("master_last_io_seconds_ago", "?")
        return _Reading(link, f"replica of {where}: link up, last I/O {io}s ago")
    count = _number(info, "connected_slaves")
    replicas = [info[f"slave{i}"] for i in range(count) if f"slave{i}" in info]
    details = f": {'; '.join(replicas[:5])}" if replicas else ""
    return _Reading(
        count, f"{role} with {count} connected replica{'' if count == 1 else 's'}{details}"
    )


_REDIS_PROBES = (
    ("redis.memory", _probe_memory),
    ("redis.hit_rate", _probe_hit_rate),
    ("redis.evicted_keys", _probe_evicted_keys),
    ("redis.rejected_connections", _probe_rejected_connections),
    ("redis.fragmentation", _probe_fragmentation),
    ("redis.rdb", _probe_rdb),
    ("redis.replication", _probe_replication),
)
