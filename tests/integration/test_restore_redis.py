"""Redis restores (issue 16): the verified RDB written to a folder with the operator's steps,
or loaded into a running server (through a throwaway redis-server, DUMP/RESTORE) and
validated key counts per database against the manifest; the source server refused unless
--replace-source, a non-empty server unless --clean. Every server here is a throwaway
redis-server on a free port: never the shared 127.0.0.1:6379."""

from __future__ import annotations

import socket

import pytest

from runbook.catalog import RestoreStatus
from runbook.runtime import open_runtime
from tasks.restore.plan import RestoreRefused
from tasks.restore.redis import split_url_password, url_with_password
from tests.integration.test_drill_core import take_backup
from tests.integration.test_restore_core import restore
from tests.support.maintenance import scratch_redis_server

FAST = ("--repl-diskless-sync-delay", "0")  # the snapshot starts at once (no 5 s wait)


class Resp:
    """A tiny RESP client for filling and inspecting the throwaway servers."""

    def __init__(self, port: int, password: str | None = None):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.file = self.sock.makefile("rb")
        if password:
            assert self.call("AUTH", password) == b"OK"

    def close(self) -> None:
        self.file.close()
        self.sock.close()

    def call(self, *args: str | int) -> object:
        parts = [str(a).encode() for a in args]
        self.sock.sendall(
            b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)
        )
        return self._read()

    def _read(self) -> object:
        line = self.file.readline().rstrip(b"\r\n")
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest
        if kind == b"-":
            raise RuntimeError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            size = int(rest)
            return None if size < 0 else self.file.read(size + 2)[:-2]
        return [self._read() for _ in range(int(rest))]

    def keys_per_db(self) -> dict[str, int]:
        info = self.call("INFO", "keyspace").decode()
        return {
            line.split(":")[0]: int(line.split("keys=")[1].split(",")[0])
            for line in info.splitlines()
            if line.startswith("db")
        }


def fill(port: int) -> None:
    client = Resp(port)
    try:
        for i in range(40):
            client.call("SET", f"user:{i}", f"name-{i}")
        client.call("HSET", "cart:1", "apple", 3, "pear", 1)
        client.call("RPUSH", "queue", "a", "b", "c")
        for i in range(5):
            client.call("SET", f"session:{i}", "x", "EX", 3600)
        client.call("SELECT", 3)
        for i in range(4):
            client.call("SET", f"flag:{i}", "on")
    finally:
        client.close()


@pytest.fixture
def redis_runtime(tmp_path, write_config):
    """A source server with data (db0: 47 keys, 5 with a TTL; db3: 4), backed up once."""
    with scratch_redis_server(tmp_path / "source", *FAST) as port:
        fill(port)
        config = write_config(
            {"redis": [{"name": "cache", "url": f"redis://127.0.0.1:{port}/0", "rto": "10m"}]}
        )
        runtime = open_runtime(config)
        backup_id = take_backup(runtime, "cache")
        yield runtime, port, backup_id


def by_name(record) -> dict[str, object]:
    return {c.name: c for c in record.checks}


def test_into_a_folder_writes_the_verified_rdb_and_the_steps_to_load_it(redis_runtime, tmp_path):
    runtime, _port, backup_id = redis_runtime
    folder = tmp_path / "out"

    record = restore(runtime, target="cache", into=str(folder))

    assert record.status == RestoreStatus.RESTORED, (record.error, record.checks)
    assert record.kind == "redis" and record.backup_id == backup_id
    rdb = folder / f"cache-{backup_id}-dump.rdb"
    assert rdb.read_bytes().startswith(b"REDIS") and list(folder.iterdir()) == [rdb]
    checks = by_name(record)
    assert checks["backup integrity"].ok
    assert checks["keys db0"].ok and "47 keys restored" in checks["keys db0"].detail
    assert checks["keys db3"].ok and "4 keys restored" in checks["keys db3"].detail
    steps = record.next_steps
    assert any(str(rdb) in step for step in steps)
    assert "db0: 47 keys, db3: 4 keys" in steps[-1] and "SHUTDOWN NOSAVE" in " ".join(steps)

    # The same file again: refused before anything, the file left as it was.
    with pytest.raises(RestoreRefused, match="exists: remove it or choose another --into"):
        restore(runtime, target="cache", into=str(folder))
    with pytest.raises(RestoreRefused, match="--clean is for loading into a server"):
        restore(runtime, target="cache", into=str(tmp_path / "other"), overwrite="clean")


def test_into_an_empty_server_loads_every_key_and_validates_the_counts(redis_runtime, tmp_path):
    runtime, port, _backup_id = redis_runtime
    with scratch_redis_server(tmp_path / "dest") as dest:
        record = restore(runtime, target="cache", into=f"redis://127.0.0.1:{dest}")

        assert record.status == RestoreStatus.RESTORED, (record.error, record.checks)
        assert record.into == f"redis://127.0.0.1:{dest}" and record.next_steps == []
        assert "copied 51 keys" in by_name(record)["restore"].detail
        assert [c.name for c in record.checks if c.name.startswith("keys")] == [
            "keys db0",
            "keys db3",
        ]
        restored, source = Resp(dest), Resp(port)
        try:
            assert restored.keys_per_db() == source.keys_per_db() == {"db0": 47, "db3": 4}
            assert restored.call("HGET", "cart:1", "apple") == b"3"
            assert restored.call("LRANGE", "queue", 0, -1) == [b"a", b"b", b"c"]
            assert 3500 < restored.call("TTL", "session:0") <= 3600  # TTLs kept
            assert restored.call("TTL", "user:0") == -1
            restored.call("SET", "written:after", "1")  # the destination is in use now

            # Not empty any more: refused without --clean, nothing touched.
            with pytest.raises(RestoreRefused, match=r"not empty \(db0: 48 keys, db3: 4 keys\)"):
                restore(runtime, target="cache", into=f"redis://127.0.0.1:{dest}")
            assert restored.call("EXISTS", "written:after") == 1
            # --clean needs a confirmation, then flushes and loads.
            with pytest.raises(RestoreRefused, match="FLUSHALL deletes every key"):
                restore(
                    runtime, target="cache", into=f"redis://127.0.0.1:{dest}", overwrite="clean"
                )
            again = restore(
                runtime,
                target="cache",
                into=f"redis://127.0.0.1:{dest}",
                overwrite="clean",
                confirmed=True,
            )
            assert again.status == RestoreStatus.RESTORED, (again.error, again.checks)
            assert "FLUSHALL, then copied 51 keys" in by_name(again)["restore"].detail
            assert restored.call("EXISTS", "written:after") == 0
            assert restored.keys_per_db() == {"db0": 47, "db3": 4}
        finally:
            restored.close()
            source.close()


def test_a_key_count_that_differs_from_the_manifest_fails_validation(redis_runtime, tmp_path):
    """A destination that gains keys while it is loaded is not reported restored."""
    runtime, _port, _backup_id = redis_runtime
    with scratch_redis_server(tmp_path / "dest") as dest:
        from tasks.restore import redis as redis_restore

        original = redis_restore.copy_keys

        def copy_then_write(source, destination, batch=500):
            copied = original(source, destination, batch)
            client = Resp(dest)
            client.call("SELECT", 3)
            client.call("SET", "intruder", "1")
            client.close()
            return copied

        redis_restore.copy_keys = copy_then_write
        try:
            record = restore(runtime, target="cache", into=f"redis://127.0.0.1:{dest}")
        finally:
            redis_restore.copy_keys = original
        assert record.status == RestoreStatus.FAILED and record.failed_step == "validate"
        assert not by_name(record)["keys db3"].ok
        assert "5 keys restored, 4 at backup time" in by_name(record)["keys db3"].detail


def test_the_source_server_is_refused_unless_replace_source(redis_runtime, tmp_path):
    runtime, port, _backup_id = redis_runtime
    for alias in (f"redis://127.0.0.1:{port}", f"redis://localhost:{port}/3"):
        with pytest.raises(RestoreRefused, match="is the source server of target 'cache'"):
            restore(runtime, target="cache", into=alias)
    source = Resp(port)
    try:
        source.call("SET", "written:after-the-backup", "1")
        with pytest.raises(RestoreRefused, match="this REPLACES the source"):
            restore(
                runtime,
                target="cache",
                into=f"redis://127.0.0.1:{port}",
                overwrite="replace-source",
            )
        assert source.call("EXISTS", "written:after-the-backup") == 1  # untouched

        record = restore(
            runtime,
            target="cache",
            into=f"redis://127.0.0.1:{port}",
            overwrite="replace-source",
            confirmed=True,
        )
        assert record.status == RestoreStatus.RESTORED, (record.error, record.checks)
        assert source.call("EXISTS", "written:after-the-backup") == 0  # back to the backup
        assert source.keys_per_db() == {"db0": 47, "db3": 4}
    finally:
        source.close()


def test_a_configured_restore_server_with_a_password(tmp_path, write_config):
    """`restore.server` is used when no --into is given; its password never shows."""
    with (
        scratch_redis_server(tmp_path / "source", *FAST) as port,
        scratch_redis_server(tmp_path / "standby", "--requirepass", "s3cret-pw") as standby,
    ):
        fill(port)
        server = f"redis://:s3cret-pw@127.0.0.1:{standby}"
        config = write_config(
            {
                "redis": [
                    {
                        "name": "cache",
                        "url": f"redis://127.0.0.1:{port}/0",
                        "restore": {"server": server},
                    }
                ]
            }
        )
        runtime = open_runtime(config)
        take_backup(runtime, "cache")
        record = restore(runtime, target="cache", into="")
        assert record.status == RestoreStatus.RESTORED, (record.error, record.checks)
        assert record.into == f"redis://127.0.0.1:{standby}"
        assert "s3cret-pw" not in record.model_dump_json()
        client = Resp(standby, "s3cret-pw")
        assert client.keys_per_db() == {"db0": 47, "db3": 4}
        client.close()

        # A wrong password is the operator's mistake, named without the password.
        bad = f"redis://:wrong-pw@127.0.0.1:{standby}"
        with pytest.raises(Exception, match="authentication failed") as caught:
            restore(runtime, target="cache", into=bad)
        assert "wrong-pw" not in str(caught.value)


def test_redis_urls_keep_their_password_out_of_flow_parameters():
    url, password = split_url_password("redis://app:p%40ss@cache.internal:6380/2")
    assert (url, password) == ("redis://app@cache.internal:6380/2", "p@ss")
    assert url_with_password(url, password) == "redis://app:p%40ss@cache.internal:6380/2"
    assert url_with_password("redis://h:1/0", None) == "redis://h:1/0"
    assert split_url_password("redis://h:1") == ("redis://h:1", None)


def test_a_folder_restore_without_redis_server_says_what_it_did_not_check(
    redis_runtime, tmp_path, monkeypatch
):
    runtime, _port, backup_id = redis_runtime
    from tasks.restore import redis as redis_restore

    monkeypatch.setattr(redis_restore.shutil, "which", lambda name: None)
    record = restore(runtime, target="cache", into=str(tmp_path / "out"))
    assert record.status == RestoreStatus.RESTORED, (record.error, record.checks)
    assert [c.name for c in record.checks] == ["backup integrity", "restore"]
    assert record.next_steps[-1] == redis_restore.NOT_CHECKED
    assert (tmp_path / "out" / f"cache-{backup_id}-dump.rdb").exists()
