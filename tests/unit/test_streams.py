"""runbook.streams: subprocess streaming, zstd encoding with hashing, read-back checks."""

from __future__ import annotations

import hashlib
import io
import os
import random
import signal
import subprocess
import threading
import time
import tracemalloc
from concurrent.futures import ThreadPoolExecutor

import psutil
import pytest
import zstandard

from runbook.storage.local import LocalStorage
from runbook.streams import ProcessFailed, ProcessStream, ZstdEncoder, read_back

MiB = 1024 * 1024


def sample_data(size: int, seed: int = 7) -> bytes:
    """Half random bytes, half repetitive text: exercises both raw and compressed blocks."""
    rng = random.Random(seed)
    words = [b"backup", b"restore", b"verify", b"postgres", b"row", b"%d" % seed, b"\n"]
    text = b" ".join(rng.choice(words) for _ in range(size // 8))[: size - size // 2]
    return rng.randbytes(size // 2) + text


def split(data: bytes, sizes: list[int]) -> list[bytes]:
    chunks, pos, i = [], 0, 0
    while pos < len(data):
        step = sizes[i % len(sizes)]
        chunks.append(data[pos : pos + step])
        pos += step
        i += 1
    return chunks


def encode(data_chunks, **kwargs) -> tuple[ZstdEncoder, list[bytes]]:
    encoder = ZstdEncoder(data_chunks, **kwargs)
    return encoder, list(encoder)


# -- ZstdEncoder and read_back -----------------------------------------------------------------


@pytest.mark.parametrize(("level", "threads"), [(1, 0), (3, 1), (12, 2)])
def test_round_trip_through_encoder_read_back_and_zstd_cli(tmp_path, level, threads):
    data = sample_data(6 * MiB + 12345)
    # Odd sizes, an empty chunk and one bigger than read_size (it is sliced).
    chunks = split(data, [1, 70_000, 0, 3 * MiB, 999_999])
    encoder, out = encode(chunks, level=level, threads=threads)
    stored = b"".join(out)

    assert encoder.done
    assert encoder.logical_bytes == len(data)
    assert encoder.stored_bytes == len(stored) < len(data)
    assert encoder.sha256 == hashlib.sha256(stored).hexdigest()

    report = read_back(out)
    assert report.ok, report.decode_error
    assert report.sha256 == encoder.sha256
    assert report.stored_bytes == len(stored)
    assert report.decoded_bytes == len(data)
    assert report.frames == 1

    assert zstandard.ZstdDecompressor().decompressobj().decompress(stored) == data
    path = tmp_path / "out.zst"
    path.write_bytes(stored)
    cli = subprocess.run(["zstd", "-d", "-c", "-q", str(path)], capture_output=True, check=True)
    assert cli.stdout == data


def test_compressor_memory_is_bounded_by_small_jobs_at_everyday_levels():
    """zstd's default job is 4 windows (8 MiB at level 3): each worker holds one in and out.
    2 MiB jobs keep a backup's compressor near 13 MB instead of 44 (level 3, 2 threads); the
    peak memory of `runbook backup` is measured in benchmarks/commands.py."""
    from runbook.streams import JOB_SIZE, compression_parameters

    assert compression_parameters(3, 2).job_size == JOB_SIZE == 2 * MiB
    assert compression_parameters(3, 2).threads == 2
    assert compression_parameters(3, 2).write_checksum == 1
    default_19 = zstandard.ZstdCompressionParameters.from_level(19, threads=2)
    assert compression_parameters(19, 2).job_size == default_19.job_size  # ratio first


@pytest.mark.parametrize("read_ahead", [0, 1, 8])
def test_encoder_reads_readable_sources_into_reused_buffers(read_ahead):
    data = sample_data(3 * MiB + 1)
    encoder, out = encode(
        io.BytesIO(data), level=1, threads=1, read_size=256 * 1024, read_ahead=read_ahead
    )
    assert encoder.logical_bytes == len(data)
    assert zstandard.ZstdDecompressor().decompressobj().decompress(b"".join(out)) == data


@pytest.mark.parametrize("read_ahead", [0, 8])
def test_encoder_passes_on_a_source_failure_after_the_data_before_it(read_ahead):
    def source():
        yield b"x" * MiB
        yield b"y" * MiB
        raise ProcessFailed("pg_dump exited with code 1: boom", name="pg_dump", returncode=1)

    encoder = ZstdEncoder(source(), level=1, read_ahead=read_ahead)
    with pytest.raises(ProcessFailed, match="boom"):
        for _ in encoder:
            pass
    assert encoder.logical_bytes == 2 * MiB
    assert not encoder.done and encoder.sha256 is None


@pytest.mark.parametrize("read_ahead", [0, 8])
def test_stopping_the_encoder_early_kills_the_dump(read_ahead):
    stream = ProcessStream(["yes"], name="dump")
    chunks = iter(ZstdEncoder(stream, level=1, read_ahead=read_ahead))
    started = time.monotonic()
    next(chunks)
    chunks.close()
    assert stream.returncode == -signal.SIGKILL
    assert time.monotonic() - started < 5


def test_encoder_of_empty_input_is_a_valid_empty_frame():
    encoder, out = encode([], level=1)
    stored = b"".join(out)
    assert encoder.logical_bytes == 0 and encoder.stored_bytes == len(stored) > 0
    report = read_back([stored])
    assert report.ok and report.decoded_bytes == 0 and report.frames == 1


def test_encoder_rejects_bad_settings():
    with pytest.raises(ValueError, match="level 23"):
        ZstdEncoder([], level=23)
    with pytest.raises(ValueError, match="threads"):
        ZstdEncoder([], threads=-1)


def test_encoders_run_side_by_side_in_a_thread_pool():
    inputs = [sample_data(2 * MiB, seed=s) for s in range(6)]

    def run(data: bytes) -> bool:
        encoder, out = encode(split(data, [65_536]), level=3, threads=1)
        report = read_back(out)
        return report.ok and report.sha256 == encoder.sha256 and report.decoded_bytes == len(data)

    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(run, inputs)) == [True] * len(inputs)


def test_read_back_of_a_corrupted_stream_reports_it():
    data = sample_data(8 * MiB)
    encoder, out = encode(split(data, [MiB]), level=3)
    stored = bytearray(b"".join(out))
    stored[len(stored) // 2] ^= 0xFF

    report = read_back(split(bytes(stored), [MiB]))
    assert report.sha256 != encoder.sha256
    assert report.stored_bytes == len(stored)  # every stored byte was still hashed
    assert report.decode_error is not None
    assert not report.ok


@pytest.mark.parametrize("cut", ["half", "checksum", "header"])
def test_read_back_of_a_truncated_stream_says_truncated(cut):
    data = sample_data(4 * MiB)
    _, out = encode([data], level=1)
    stored = b"".join(out)
    keep = {"half": len(stored) // 2, "checksum": len(stored) - 1, "header": 6}[cut]

    report = read_back([stored[:keep]])
    assert report.decode_error is not None
    assert "truncated" in report.decode_error and "incomplete" in report.decode_error
    if cut == "half":
        assert report.decoded_bytes < len(data)


def test_read_back_rejects_empty_and_non_zstd_input():
    assert "empty" in read_back([]).decode_error
    assert read_back([b"PGDMP not compressed at all"]).decode_error is not None


def test_read_back_accepts_concatenated_and_skippable_frames():
    first, second = sample_data(MiB, seed=1), sample_data(MiB, seed=2)
    cctx = zstandard.ZstdCompressor(level=1, write_checksum=True)
    skippable = (0x184D2A50).to_bytes(4, "little") + (3).to_bytes(4, "little") + b"abc"
    stored = cctx.compress(first) + skippable + cctx.compress(second)

    report = read_back(split(stored, [1000, 7]))
    assert report.ok, report.decode_error
    assert report.frames == 2
    assert report.decoded_bytes == len(first) + len(second)


def test_read_back_feeds_the_consumer_until_it_declines():
    data = sample_data(3 * MiB)
    _, out = encode([data], level=1)
    seen: list[bytes] = []

    def consumer(chunk: bytes) -> bool:
        seen.append(chunk)
        return len(seen) < 2

    report = read_back(out, consumer, write_size=128 * 1024)
    assert len(seen) == 2 and report.consumer_stopped
    assert b"".join(seen) == data[: len(b"".join(seen))]
    assert report.decoded_bytes == len(data)  # decoding went on without the consumer
    assert report.ok


def test_read_back_passes_on_a_consumer_failure():
    _, out = encode([sample_data(MiB)], level=1)

    def consumer(chunk: bytes) -> None:
        raise BrokenPipeError("pg_restore went away")

    with pytest.raises(BrokenPipeError):
        read_back(out, consumer)


def test_encoding_300_mib_keeps_memory_bounded():
    blocks = [sample_data(MiB, seed=s) for s in range(8)]
    total = 300 * MiB
    process = psutil.Process()
    rss_before = process.memory_info().rss
    rss_peak = rss_before

    def generate():
        nonlocal rss_peak
        for i in range(total // MiB):
            if i % 16 == 0:
                rss_peak = max(rss_peak, process.memory_info().rss)
            yield blocks[i % len(blocks)]

    tracemalloc.start()
    try:
        encoder = ZstdEncoder(generate(), level=1, threads=0)
        report = read_back(encoder)  # encode and verify in one streaming pass
        _, traced_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    rss_peak = max(rss_peak, process.memory_info().rss)

    assert report.ok and report.decoded_bytes == total
    assert report.sha256 == encoder.sha256
    assert traced_peak < 100 * MiB
    assert rss_peak - rss_before < 100 * MiB


# -- ProcessStream -----------------------------------------------------------------------------


def test_process_stream_yields_stdout_exactly(tmp_path):
    data = sample_data(3 * MiB + 17)
    path = tmp_path / "data.bin"
    path.write_bytes(data)
    with ProcessStream(["cat", str(path)], timeout=30) as stream:
        chunks = list(stream)
    assert b"".join(chunks) == data
    assert stream.returncode == 0
    assert max(len(c) for c in chunks) <= MiB


def test_failed_process_raises_with_code_and_stderr_and_yields_nothing_more():
    stream = ProcessStream(
        ["sh", "-c", "printf abc; echo 'pg_dump: error: connection refused' >&2; exit 3"],
        name="pg_dump",
    )
    chunks = iter(stream)
    received = []
    with pytest.raises(ProcessFailed) as caught:
        for chunk in chunks:
            received.append(chunk)
    failure = caught.value
    assert failure.name == "pg_dump" and failure.returncode == 3
    assert "pg_dump exited with code 3" in str(failure)
    assert "connection refused" in str(failure) and "connection refused" in failure.stderr_tail
    # The output of a failed process is never handed on, and nothing comes after the failure.
    assert received == []
    assert list(chunks) == []


def test_failed_process_makes_storage_put_store_nothing(tmp_path):
    storage = LocalStorage(tmp_path / "store")
    argv = ["sh", "-c", "head -c 3000000 /dev/urandom; exit 1"]
    with ProcessStream(argv, name="dump") as stream, pytest.raises(ProcessFailed):
        storage.put("db/backup.zst", ZstdEncoder(stream, level=1))
    assert list(storage.list()) == []
    assert not any(p.is_file() for p in (tmp_path / "store").rglob("*"))


def test_process_killed_mid_way_reports_the_signal(tmp_path):
    stream = ProcessStream(["sh", "-c", "yes | head -c 50000000; sleep 30"], name="dump")
    storage = LocalStorage(tmp_path / "store")
    received = 0
    killer: list[threading.Thread] = []

    def chunks():
        nonlocal received
        for chunk in stream:
            received += len(chunk)
            if received >= MiB and not killer:
                killer.append(threading.Thread(target=os.kill, args=(stream.pid, signal.SIGKILL)))
                killer[0].start()
            yield chunk

    started = time.monotonic()
    with pytest.raises(ProcessFailed) as caught:
        storage.put("db/backup.zst", ZstdEncoder(chunks(), level=1))
    killer[0].join()
    assert time.monotonic() - started < 20  # did not wait for the sleep
    assert caught.value.returncode == -signal.SIGKILL
    assert "SIGKILL" in str(caught.value)
    assert received < 50_000_000 + MiB
    assert list(storage.list()) == []


def test_timeout_kills_the_process_group_quickly():
    started = time.monotonic()
    # sh's child `sleep` holds stdout too: only killing the whole group ends the stream.
    stream = ProcessStream(["sh", "-c", "printf x; sleep 30; echo late"], timeout=0.5)
    with pytest.raises(ProcessFailed) as caught:
        list(stream)
    assert time.monotonic() - started < 5
    assert caught.value.timed_out
    assert "timed out after 0.5s" in str(caught.value)


def test_secrets_are_redacted_from_messages():
    secret = "s3cr3t-Pa55"
    script = f"echo 'connection to postgresql://app:{secret}@db failed' >&2; exit 2"
    with pytest.raises(ProcessFailed) as caught:
        list(ProcessStream(["sh", "-c", script], redact=[secret, ""]))
    assert secret not in str(caught.value)
    assert secret not in caught.value.stderr_tail
    assert "[REDACTED]" in str(caught.value) and "connection to" in str(caught.value)


def test_stderr_keeps_only_the_last_64_kib():
    script = (
        'i=0; while [ $i -lt 3000 ]; do echo "line $i of noise noise noise" >&2; '
        "i=$((i+1)); done; exit 1"
    )
    with pytest.raises(ProcessFailed) as caught:
        list(ProcessStream(["sh", "-c", script]))
    tail = caught.value.stderr_tail
    assert len(tail.encode()) <= 64 * 1024
    assert "line 2999 of noise" in tail and "line 0 of noise" not in tail
    assert "line 2999" in str(caught.value) and len(str(caught.value)) < 2000


def test_closing_early_kills_and_reaps_the_process():
    stream = ProcessStream(["yes"])
    chunks = iter(stream)
    assert next(chunks).startswith(b"y\n")
    chunks.close()
    assert stream.returncode == -signal.SIGKILL
    with pytest.raises(psutil.NoSuchProcess):
        psutil.Process(stream.pid).status()

    with ProcessStream(["sleep", "30"]) as sleeper:
        pass
    assert sleeper.returncode == -signal.SIGKILL


def test_missing_binary_is_a_process_failure():
    with pytest.raises(ProcessFailed, match="could not start") as caught:
        ProcessStream(["/nonexistent/pg_dump"])
    assert caught.value.returncode is None


def test_argv_must_be_a_list():
    with pytest.raises(TypeError):
        ProcessStream("pg_dump -Fc")  # type: ignore[arg-type]
