"""Redis commands for maintenance (SCAN, UNLINK, OBJECT IDLETIME, MEMORY USAGE, CONFIG GET/SET,
INFO, ACL), over runbook/systems/redis.py's connection: one command or a pipelined batch.

Pipelining sends a batch of commands in one write and reads the replies in order: a batch of
500 `OBJECT IDLETIME` costs one round trip, not 500.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from runbook.config import RedisTarget
from runbook.systems.redis import (
    Connection,
    Endpoint,
    ErrorReply,
    command_error,
    connect,
    endpoint_of,
    parse_info,
)

Command = Sequence[str | bytes]


@dataclass
class RedisClient:
    conn: Connection
    endpoint: Endpoint

    db: int = 0

    @classmethod
    @contextmanager
    def open(cls, target: RedisTarget) -> Iterator[RedisClient]:
        """Connected, authenticated, and on the database the URL names (/0 by default)."""
        endpoint = endpoint_of(target)
        db = database_of(target)
        with connect(endpoint) as conn:
            client = cls(conn, endpoint, db)
            if db:
                client.call("SELECT", str(db))
            yield client

    @property
    def where(self) -> str:
        return self.endpoint.where

    def call(self, *args: str | bytes) -> Any:
        """One command; an error reply becomes a runbook error naming the command."""
        self.conn.send(*args)
        try:
            return self.conn.reply()
        except ErrorReply as exc:
            raise command_error(self.conn, _name(args), str(exc)) from None

    def pipeline(self, commands: Sequence[Command]) -> list[Any]:
        """Several commands in one round trip; an error reply is returned as its ErrorReply
        (the caller decides: a key gone between SCAN and OBJECT is not a failure)."""
        if not commands:
            return []
        frames = []
        for args in commands:
            encoded = [a if isinstance(a, bytes) else a.encode() for a in args]
            frames.append(
                b"*%d\r\n" % len(encoded)
                + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in encoded)
            )
        self.conn._sock.sendall(b"".join(frames))  # noqa: SLF001 - one write for the batch
        replies: list[Any] = []
        for _ in commands:
            try:
                replies.append(self.conn.reply())
            except ErrorReply as exc:
                replies.append(exc)
        return replies

    def info(self, section: str | None = None) -> dict[str, str]:
        text = self.call("INFO", section) if section else self.call("INFO")
        return parse_info(text.decode(errors="replace") if isinstance(text, bytes) else "")

    def scan(self, pattern: str, count: int) -> Iterator[list[bytes]]:
        """SCAN MATCH pattern COUNT count, one batch of keys at a time (never KEYS)."""
        cursor = b"0"
        while True:
            cursor, keys = self.call("SCAN", cursor, "MATCH", pattern, "COUNT", str(count))
            if keys:
                yield list(keys)
            if cursor == b"0":
                return

    def config_get(self, name: str) -> dict[str, str]:
        reply = self.call("CONFIG", "GET", name) or []
        return {
            reply[i].decode(errors="replace"): reply[i + 1].decode(errors="replace")
            for i in range(0, len(reply) - 1, 2)
        }


def database_of(target: RedisTarget) -> int:
    """The database number of redis://host:port/N (0 when the URL names none)."""
    path = urlsplit(target.url.get_secret_value()).path.strip("/")
    return int(path) if path.isdigit() else 0


def _name(args: Sequence[str | bytes]) -> str:
    words = [a.decode(errors="replace") if isinstance(a, bytes) else a for a in args[:2]]
    if words and words[0].upper() in ("CONFIG", "OBJECT", "MEMORY", "ACL", "CLIENT"):
        return " ".join(words).upper()
    return words[0].upper() if words else ""
