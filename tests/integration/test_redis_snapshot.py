"""runbook.systems.redis against the real Redis on 127.0.0.1:6379, throwaway redis-servers
and fake masters.

Only db 13 of the shared server is written (and flushed); other tests use the other dbs.
A diskless snapshot of the shared server waits out repl-diskless-sync-delay (~5 s), so the
suite takes one snapshot per module and shares it.
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from runbook.config import RedisTarget
from runbook.errors import PermanentError, TransientError
from runbook.systems.redis import (
    RDB_EOF_MARK_SIZE,
    RedisAuthError,
    RedisSnapshotIncomplete,
    RedisUnavailable,
    check_rdb_stream,
    redis_check_rdb_binary,
    redis_facts,
    stream_rdb,
)

HOST = "127.0.0.1"
PORT = 6379
DB = 13
BIG_KEY = b"big:value"
ACL_USER = "runbooktest"
ACL_PASSWORD = "secretpw-7c1e"


def target(url: str, timeout: float = 30) -> RedisTarget:
    return RedisTarget(name="cache", url=url, timeout=timedelta(seconds=timeout))


# --- a tiny RESP client (the project has no redis-py) ----------------------------------------


class RespError(Exception):
    pass


class Resp:
    def __init__(self, port: int = PORT, timeout: float = 10) -> None:
        self.sock = socket.create_connection((HOST, port), timeout=timeout)
        self.file = self.sock.makefile("rb")

    def close(self) -> None:
        self.file.close()
        self.sock.close()

    @staticmethod
    def encode(args: tuple[str | bytes | int, ...]) -> bytes:
        parts = [a if isinstance(a, bytes) else str(a).encode() for a in args]
        return b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)

    def call(self, *args: str | bytes | int) -> object:
        self.sock.sendall(self.encode(args))
        return self.read()

    def pipeline(self, commands: list[tuple[str | bytes | int, ...]]) -> list[object]:
        self.sock.sendall(b"".join(self.encode(c) for c in commands))
        return [self.read() for _ in commands]

    def read(self) -> object:
        line = self.file.readline()
        if not line:
            raise ConnectionError("server closed the connection")
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest
        if kind == b"-":
            raise RespError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            size = int(rest)
            return None if size < 0 else self.file.read(size + 2)[:-2]
        if kind == b"*":
            size = int(rest)
            return None if size < 0 else [self.read() for _ in range(size)]
        raise AssertionError(f"unexpected reply {line!r}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


@contextmanager
def throwaway_redis(directory: Path, *extra: str) -> Iterator[int]:
    """A redis-server of our own on a free port, its files in `directory`."""
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not on PATH")
    port = free_port()
    log = directory / "redis.log"
    proc = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            HOST,
            "--dir",
            str(directory),
            "--dbfilename",
            "dump.rdb",
            "--save",
            "",
            "--appendonly",
            "no",
            "--logfile",
            str(log),
            *extra,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                pytest.fail(f"redis-server exited: {log.read_text() if log.exists() else ''}")
            try:
                client = Resp(port)
                try:
                    if client.call("PING") == b"PONG":
                        break
                finally:
                    client.close()
            except (OSError, RespError):  # not listening yet, or -LOADING
                pass
            if time.monotonic() > deadline:
                pytest.fail("redis-server did not come up within 30 s")
            time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# --- the shared server: db 13 filled by us ---------------------------------------------------


@pytest.fixture(scope="module")
def client() -> Iterator[Resp]:
    try:
        conn = Resp()
    except OSError as exc:
        pytest.fail(f"no Redis on {HOST}:{PORT}: {exc}")
    conn.call("SELECT", DB)
    yield conn
    conn.close()


@pytest.fixture(scope="module")
def dataset(client: Resp) -> Iterator[dict[str, object]]:
    """A few thousand keys of every common type plus a 2 MiB value, in db 13 only."""
    rng = random.Random(13)
    client.call("FLUSHDB")  # the current db: 13
    big = os.urandom(2 << 20)
    strings = {f"str:{i}".encode(): rng.randbytes(rng.randint(0, 300)) for i in range(3000)}
    commands: list[tuple[str | bytes | int, ...]] = [("SET", BIG_KEY, big)]
    commands += [("SET", key, value) for key, value in strings.items()]
    commands += [("HSET", f"hash:{i}", "a", i, "b", "x" * i, "c", "ü") for i in range(200)]
    commands += [("RPUSH", f"list:{i}", *range(i % 50 + 1)) for i in range(200)]
    commands += [("SADD", f"set:{i}", *(f"m{j}" for j in range(i % 30 + 1))) for i in range(200)]
    commands += [
        ("ZADD", f"zset:{i}", *(x for j in range(10) for x in (j * 1.5, f"z{j}")))
        for i in range(200)
    ]
    commands += [("XADD", f"stream:{i}", "*", "field", i) for i in range(20)]
    commands += [("EXPIRE", f"str:{i}", 3600) for i in range(50)]
    commands.append(("SET", b"bin:\x00\xff\r\n", b"\x00\r\n$EOF:\xff"))
    for start in range(0, len(commands), 500):
        client.pipeline(commands[start : start + 500])
    count = client.call("DBSIZE")
    assert count == 1 + 3000 + 200 * 4 + 20 + 1
    yield {"count": count, "big": big, "strings": strings}
    client.call("FLUSHDB")


@pytest.fixture(scope="module")
def snapshot(dataset: dict[str, object], tmp_path_factory: pytest.TempPathFactory) -> dict:
    started = time.monotonic()
    chunks = list(stream_rdb(target(f"redis://{HOST}:{PORT}/0"), chunk_size=64 << 10))
    elapsed = time.monotonic() - started
    path = tmp_path_factory.mktemp("snapshot") / "dump.rdb"
    with path.open("wb") as out:
        for chunk in chunks:
            out.write(chunk)
    print(f"diskless snapshot of {path.stat().st_size} bytes took {elapsed:.2f}s")
    return {"chunks": chunks, "path": path, "elapsed": elapsed}


def test_snapshot_arrives_in_bounded_chunks(snapshot: dict) -> None:
    chunks = snapshot["chunks"]
    assert len(chunks) > 16
    assert max(len(c) for c in chunks) <= 64 << 10
    assert sum(len(c) for c in chunks) > 2 << 20
    assert chunks[0].startswith(b"REDIS")


def test_snapshot_is_a_complete_rdb(snapshot: dict) -> None:
    assert b"".join(snapshot["chunks"])[-9] == 0xFF  # EOF opcode, then the CRC-64
    assert check_rdb_stream(snapshot["chunks"]) is None


def test_redis_check_rdb_accepts_snapshot(snapshot: dict) -> None:
    binary = redis_check_rdb_binary()
    if binary is None:
        pytest.fail("redis-check-rdb is not on PATH")
    result = subprocess.run(
        [binary, str(snapshot["path"])], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "RDB looks OK" in result.stdout


def test_snapshot_loads_into_a_fresh_server(snapshot: dict, dataset: dict, tmp_path: Path) -> None:
    shutil.copyfile(snapshot["path"], tmp_path / "dump.rdb")
    with throwaway_redis(tmp_path) as port:
        restored = Resp(port)
        try:
            restored.call("SELECT", DB)
            assert restored.call("DBSIZE") == dataset["count"]
            assert restored.call("GET", BIG_KEY) == dataset["big"]
            for key in random.Random(7).sample(sorted(dataset["strings"]), 50):
                assert restored.call("GET", key) == dataset["strings"][key]
            assert restored.call("GET", b"bin:\x00\xff\r\n") == b"\x00\r\n$EOF:\xff"
            assert restored.call("LRANGE", "list:3", 0, -1) == [b"0", b"1", b"2", b"3"]
            assert 0 < restored.call("TTL", "str:1") <= 3600
            assert restored.call("TYPE", "stream:0") == b"stream"
        finally:
            restored.close()


def test_redis_facts_count_keys_of_db13(dataset: dict) -> None:
    facts = redis_facts(target(f"redis://{HOST}:{PORT}"))
    assert facts["keys_per_db"]["db13"] == dataset["count"]
    assert facts["role"] == "master"
    assert facts["used_memory"] > 2 << 20
    assert str(facts["redis_version"]).split(".")[0].isdigit()
    assert all(count > 0 for count in facts["keys_per_db"].values())


# --- credentials -----------------------------------------------------------------------------


@pytest.fixture
def acl_user(client: Resp) -> Iterator[str]:
    client.call("ACL", "SETUSER", ACL_USER, "on", f">{ACL_PASSWORD}", "~*", "+@all")
    yield ACL_USER
    client.call("ACL", "DELUSER", ACL_USER)


def test_wrong_password_is_permanent_and_not_repeated(acl_user: str) -> None:
    wrong = "hunter2-not-it"
    bad = target(f"redis://{acl_user}:{wrong}@{HOST}:{PORT}")
    started = time.monotonic()
    with pytest.raises(PermanentError) as snap_error:
        next(stream_rdb(bad))
    assert time.monotonic() - started < 5
    with pytest.raises(RedisAuthError) as facts_error:
        redis_facts(bad)
    for error in (snap_error.value, facts_error.value):
        assert not isinstance(error, TransientError)
        assert str(error).startswith(f"authentication failed for redis target at {HOST}:{PORT}")
        assert wrong not in str(error) and wrong not in repr(error)


def test_right_password_of_acl_user_snapshots(acl_user: str, dataset: dict) -> None:
    good = target(f"redis://{acl_user}:{ACL_PASSWORD}@{HOST}:{PORT}")
    assert redis_facts(good)["keys_per_db"]["db13"] == dataset["count"]
    chunks = stream_rdb(good, chunk_size=4096)
    try:
        assert next(chunks)[:5] == b"REDIS"
    finally:
        chunks.close()  # stopping early must close the connection, not hang


def test_password_for_a_server_without_one_is_permanent(dataset: dict) -> None:
    with pytest.raises(RedisAuthError) as error:
        redis_facts(target(f"redis://:only-a-password@{HOST}:{PORT}"))
    assert "only-a-password" not in str(error.value)


# --- network faults --------------------------------------------------------------------------


def test_refused_port_is_transient_and_quick() -> None:
    port = free_port()
    secret = "pw-in-url"
    started = time.monotonic()
    with pytest.raises(TransientError) as error:
        next(stream_rdb(target(f"redis://user:{secret}@{HOST}:{port}")))
    assert time.monotonic() - started < 2
    assert isinstance(error.value, RedisUnavailable)
    assert f"{HOST}:{port}" in str(error.value) and secret not in str(error.value)
    with pytest.raises(RedisUnavailable):
        redis_facts(target(f"redis://{HOST}:{port}"))


class FakeMaster:
    """One connection on a free port: +OK to every command, then `script` after SYNC."""

    def __init__(
        self,
        script: list[bytes | float],
        replies: dict[str, bytes] | None = None,
        keep_open: bool = False,
    ) -> None:
        self.script = script
        self.replies = replies or {}
        self.keep_open = keep_open
        self.commands: list[list[bytes]] = []
        self.client_closed = threading.Event()
        self.stopping = threading.Event()
        self.listener = socket.create_server((HOST, 0))
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def target(self, timeout: float = 5) -> RedisTarget:
        return target(f"redis://{HOST}:{self.port}", timeout=timeout)

    def _serve(self) -> None:
        conn, _ = self.listener.accept()
        with conn, conn.makefile("rb") as file:
            conn.settimeout(10)
            while True:
                header = file.readline()
                if not header:
                    return
                args = []
                for _ in range(int(header[1:])):
                    size = int(file.readline()[1:])
                    args.append(file.read(size + 2)[:-2])
                self.commands.append(args)
                name = args[0].decode().upper()
                if name != "SYNC":
                    conn.sendall(self.replies.get(name, b"+OK\r\n"))
                    continue
                for step in self.script:
                    if isinstance(step, float):
                        if self.stopping.wait(step):
                            return
                    else:
                        conn.sendall(step)
                if self.keep_open and file.read(1) == b"":
                    self.client_closed.set()
                return

    def close(self) -> None:
        self.stopping.set()
        self.listener.close()
        self.thread.join(timeout=10)


StartFake = Callable[..., FakeMaster]


@pytest.fixture
def fake_master() -> Iterator[StartFake]:
    started: list[FakeMaster] = []

    def start(*args: Any, **kwargs: Any) -> FakeMaster:
        fake = FakeMaster(*args, **kwargs)
        started.append(fake)
        return fake

    yield start
    for fake in started:
        fake.close()


def test_short_announced_payload_raises(fake_master: StartFake) -> None:
    fake = fake_master([b"$1000\r\n", b"0123456789"])
    received = []
    with pytest.raises(RedisSnapshotIncomplete) as error:
        for chunk in stream_rdb(fake.target()):
            received.append(chunk)
    assert b"".join(received) == b"0123456789"
    assert "10 of 1000" in str(error.value) and f"{HOST}:{fake.port}" in str(error.value)


def test_diskless_payload_comes_out_without_the_mark(fake_master: StartFake) -> None:
    mark = b"0123456789abcdef0123456789abcdef01234567"
    assert len(mark) == RDB_EOF_MARK_SIZE
    payload = random.Random(1).randbytes(300_000) + mark[:20]  # ends like half a mark
    pieces = [payload[i : i + 7000] for i in range(0, len(payload), 7000)]
    script: list[bytes | float] = [b"\n", 0.05, b"\n\n", 0.05, b"$EOF:" + mark + b"\r\n"]
    for piece in pieces:
        script += [piece, 0.001]
    script += [mark[:13], 0.05, mark[13:]]  # the mark split over two reads
    fake = fake_master(script, keep_open=True)
    chunks = list(stream_rdb(fake.target(), chunk_size=5000))
    assert b"".join(chunks) == payload
    assert max(len(c) for c in chunks) <= 5000
    assert fake.client_closed.wait(5), "the client must close the connection after the mark"
    names = [c[0].upper() for c in fake.commands]
    assert names == [b"REPLCONF", b"REPLCONF", b"SYNC"]
    assert fake.commands[0][1:] == [b"capa", b"eof"] and fake.commands[1][1:] == [b"rdb-only", b"1"]


def test_diskless_payload_without_mark_raises(fake_master: StartFake) -> None:
    mark = b"m" * RDB_EOF_MARK_SIZE
    fake = fake_master([b"$EOF:" + mark + b"\r\n", b"REDIS0010" + b"x" * 1000])
    with pytest.raises(RedisSnapshotIncomplete) as error:
        list(stream_rdb(fake.target()))
    assert "before the end-of-snapshot mark" in str(error.value)


def test_disk_format_with_keepalives_and_an_older_server(fake_master: StartFake) -> None:
    payload = random.Random(2).randbytes(100_000)
    fake = fake_master(
        [b"\n", 0.02, b"\n", b"$%d\r\n" % len(payload), payload[:10], 0.02, payload[10:]],
        replies={"REPLCONF": b"-ERR Unrecognized REPLCONF option: rdb-only\r\n"},
        keep_open=True,
    )
    chunks = list(stream_rdb(fake.target(), diskless=False))
    assert b"".join(chunks) == payload
    assert fake.client_closed.wait(5), "the client must close the connection after the payload"
    assert [c[1] for c in fake.commands if c[0] == b"REPLCONF"] == [b"rdb-only"]


def test_sync_refused_for_user_is_permanent(fake_master: StartFake) -> None:
    fake = fake_master([b"-NOPERM this user has no permissions to run the 'sync' command\r\n"])
    with pytest.raises(PermanentError) as error:
        list(stream_rdb(fake.target()))
    assert "SYNC" in str(error.value) and not isinstance(error.value, TransientError)


def test_silent_server_times_out_as_transient(fake_master: StartFake) -> None:
    fake = fake_master([30.0])  # says nothing after SYNC
    started = time.monotonic()
    with pytest.raises(RedisUnavailable) as error:
        list(stream_rdb(fake.target(timeout=0.5)))
    assert time.monotonic() - started < 5
    assert "did not answer within 0.5s" in str(error.value)


# --- the disk-based mode, on a server of our own -----------------------------------------------


def test_disk_based_snapshot_skips_the_diskless_delay(tmp_path: Path) -> None:
    with throwaway_redis(tmp_path, "--repl-diskless-sync-delay", "30") as port:
        seed = Resp(port)
        try:
            seed.pipeline([("SET", f"k{i}", i) for i in range(100)])
        finally:
            seed.close()
        started = time.monotonic()
        chunks = list(stream_rdb(target(f"redis://{HOST}:{port}"), diskless=False))
        elapsed = time.monotonic() - started
    assert elapsed < 15  # a diskless snapshot would wait the full 30 s
    assert check_rdb_stream(chunks) is None
    assert (tmp_path / "dump.rdb").exists()  # the price: the server wrote the snapshot


def test_tls_snapshot_and_certificate_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if shutil.which("openssl") is None:
        pytest.fail("openssl is not on PATH")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-subj",
            f"/CN={HOST}",
            "-addext",
            f"subjectAltName=IP:{HOST}",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    tls_port = free_port()
    tls = [
        "--tls-port",
        str(tls_port),
        "--tls-cert-file",
        str(cert),
        "--tls-key-file",
        str(key),
        "--tls-ca-cert-file",
        str(cert),
        "--tls-auth-clients",
        "no",
    ]
    with throwaway_redis(tmp_path, *tls) as port:
        seed = Resp(port)
        try:
            seed.call("SET", "over", "tls")
        finally:
            seed.close()
        tls_target = target(f"rediss://{HOST}:{tls_port}")
        with pytest.raises(PermanentError) as error:  # self-signed: not trusted by default
            redis_facts(tls_target)
        assert "certificate" in str(error.value) and f"{HOST}:{tls_port}" in str(error.value)
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # trust our CA, as an operator would
        assert redis_facts(tls_target)["keys_per_db"] == {"db0": 1}
        chunks = list(stream_rdb(tls_target, diskless=False))
    assert check_rdb_stream(chunks) is None
    assert b"over" in b"".join(chunks)


# --- check_rdb_stream ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rdb_bytes(snapshot: dict) -> bytes:
    return b"".join(snapshot["chunks"])


def pieces(data: bytes, size: int) -> Iterator[bytes]:
    return (data[i : i + size] for i in range(0, len(data), size))


def test_check_accepts_any_chunking(rdb_bytes: bytes) -> None:
    assert len(rdb_bytes) > 2 << 20  # big enough to cross many chunk boundaries
    assert check_rdb_stream(pieces(rdb_bytes, 4099)) is None
    assert check_rdb_stream([b"", *pieces(rdb_bytes, 1 << 20)]) is None
    assert check_rdb_stream(pieces(rdb_bytes[:-9], 4099)) is not None


def test_check_finds_truncation(rdb_bytes: bytes) -> None:
    assert check_rdb_stream(pieces(rdb_bytes[:-100], 65536)) == "truncated: no EOF marker"
    assert check_rdb_stream([rdb_bytes[:12]]) == "truncated: no EOF marker"
    # a cut that happens to leave 0xFF nine bytes from the end: only the CRC can tell
    cut = next(i for i in range(len(rdb_bytes) // 2, len(rdb_bytes)) if rdb_bytes[i - 9] == 0xFF)
    assert check_rdb_stream([rdb_bytes[:cut]]) == "checksum mismatch"


def test_check_finds_a_flipped_byte(rdb_bytes: bytes) -> None:
    corrupt = bytearray(rdb_bytes)
    corrupt[len(corrupt) // 3] ^= 0x01
    assert check_rdb_stream(pieces(bytes(corrupt), 65536)) == "checksum mismatch"


def test_check_finds_bad_magic_and_empty_input(rdb_bytes: bytes) -> None:
    assert check_rdb_stream([b"RADIS0010" + rdb_bytes[9:]]) == "not an RDB file (bad magic)"
    assert check_rdb_stream([b"REDISv010" + rdb_bytes[9:]]) == "not an RDB file (bad magic)"
    assert check_rdb_stream([b"\x28\xb5\x2f\xfd"]) == "not an RDB file (bad magic)"  # zstd
    assert check_rdb_stream([]) == "empty: no RDB data"


def test_check_skips_crc_above_the_limit_but_not_structure(rdb_bytes: bytes) -> None:
    corrupt = bytearray(rdb_bytes)
    corrupt[100] ^= 0x01
    assert check_rdb_stream([bytes(corrupt)], crc_limit=1000) is None  # documented blind spot
    assert check_rdb_stream([rdb_bytes[:-1]], crc_limit=1000) == "truncated: no EOF marker"


def test_check_accepts_zero_checksum(rdb_bytes: bytes) -> None:
    unchecked = rdb_bytes[:-8] + bytes(8)  # what rdbchecksum no writes
    assert check_rdb_stream([unchecked]) is None


def test_redis_check_rdb_binary_is_an_executable() -> None:
    path = redis_check_rdb_binary()
    if path is None:
        pytest.fail("redis-check-rdb is not on PATH")
    assert Path(path).name == "redis-check-rdb"
    assert os.access(path, os.X_OK)
