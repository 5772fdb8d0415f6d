"""Wire format: round trip of real flow records, precise errors, fuzzing (truncation, bit flips)."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloudtap.ship import wire
from cloudtap.ship.frame import (
    MAGIC,
    MAX_DECODED_BYTES_PER_KIND,
    PREFIX_BYTES,
    WIRE_VERSION,
    WireError,
    check_kind,
    read_header,
)
from cloudtap.ship.wire import decode_batch, encode_batch, encode_sections, frame_sections

ERSPAN = "deepflow/agent/resources/test/common/decapsulate_erspan1.pcap"


@pytest.fixture(scope="module")
def real_tables(shared_pcaps: Path) -> dict[str, pa.Table]:
    from cloudtap.meter import meter_file

    result = meter_file(shared_pcaps / ERSPAN)
    flows = result.to_arrow()
    assert flows.num_rows > 100
    return {"flows": flows, "edges_1s": result.edges(1.0), "edges_60s": result.edges(60.0)}


def small_tables() -> dict[str, pa.Table]:
    flows = pa.table(
        {
            "flow_id": pa.array([1, 2, 3], pa.uint64()),
            "client_ip": ["10.0.0.1", "10.0.0.2", None],
            "rtt_client_us": [1.5, None, 3.25],
        }
    )
    edges = pa.table(
        {"time_ns": pa.array([10, 20], pa.int64()), "packets_c2s": pa.array([4, 5], pa.uint64())}
    )
    return {"flows": flows, "edges_1s": edges}


SMALL = encode_batch("agent-7", 42, small_tables(), created_ns=123)


def reframe(header: dict[str, object], sections: list[bytes], version: int = WIRE_VERSION) -> bytes:
    """Build a frame by hand with correct CRCs (to reach the checks behind the CRCs)."""
    raw = json.dumps(header).encode()
    return struct.pack("<4sHHII", MAGIC, version, 0, len(raw), zlib.crc32(raw)) + raw + b"".join(sections)


def split(frame: bytes) -> tuple[dict, list[bytes]]:
    header = read_header(frame)
    obj = json.loads(frame[PREFIX_BYTES : header.header_bytes])
    sections, offset = [], header.header_bytes
    for entry in header.kinds:
        sections.append(frame[offset : offset + entry.bytes])
        offset += entry.bytes
    return obj, sections


def test_round_trip_real_flows(real_tables: dict[str, pa.Table]) -> None:
    frame = encode_batch("hv-01", 7, real_tables)
    batch = decode_batch(frame)
    assert (batch.agent_id, batch.seq, batch.frame_bytes) == ("hv-01", 7, len(frame))
    assert list(batch.tables) == list(real_tables)
    for kind, table in real_tables.items():
        assert batch.tables[kind].equals(table), kind
        assert batch.rows[kind] == table.num_rows
    # zstd IPC: much smaller than the in-memory columns.
    assert len(frame) < sum(t.nbytes for t in real_tables.values()) / 3


def test_round_trip_small_and_empty() -> None:
    batch = decode_batch(SMALL)
    assert batch.created_ns == 123 and batch.schema_version == 1
    assert batch.tables["flows"].to_pylist() == small_tables()["flows"].to_pylist()
    empty = decode_batch(encode_batch("a", 0, {}))
    assert empty.tables == {} and empty.seq == 0
    zero_rows = decode_batch(encode_batch("a", 1, {"flows": small_tables()["flows"].slice(0, 0)}))
    assert zero_rows.tables["flows"].num_rows == 0
    assert zero_rows.tables["flows"].schema == small_tables()["flows"].schema


def test_sections_framed_again_under_new_sequence_numbers() -> None:
    """Encoded sections reused under another key give exactly the frame encode_batch would make."""
    sections = encode_sections(small_tables())
    for seq in (0, 7, 2**40):
        frame = frame_sections("agent-b", seq, sections, created_ns=5)
        assert frame == encode_batch("agent-b", seq, small_tables(), created_ns=5)
        batch = decode_batch(frame)
        assert (batch.agent_id, batch.seq) == ("agent-b", seq)
        assert batch.tables["flows"].to_pylist() == small_tables()["flows"].to_pylist()
    with pytest.raises(WireError, match="seq"):
        frame_sections("agent-b", -1, sections)
    with pytest.raises(WireError):
        frame_sections("", 1, sections)


def test_decode_accepts_memoryview_and_bytearray() -> None:
    assert decode_batch(memoryview(SMALL)).seq == 42
    assert decode_batch(bytearray(SMALL)).agent_id == "agent-7"


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (b"XTAP" + SMALL[4:], "bad magic"),
        (b"CT", "truncated"),
        (b"", "truncated"),
        (b"HTTP/1.1 200", "bad magic"),
        (SMALL[:4] + struct.pack("<H", 9) + SMALL[6:], "unsupported wire version 9"),
        (SMALL[:6] + struct.pack("<H", 1) + SMALL[8:], "unsupported flags"),
        (SMALL[: PREFIX_BYTES + 3], "truncated: header needs"),
        (SMALL[:-1], "truncated: frame announces"),
        (SMALL + b"\0", "1 trailing bytes"),
    ],
)
def test_precise_errors(frame: bytes, reason: str) -> None:
    with pytest.raises(WireError, match=reason):
        decode_batch(frame)


def test_header_checks_behind_the_crc() -> None:
    obj, sections = split(SMALL)
    bad_rows = {**obj, "kinds": [{**obj["kinds"][0], "rows": 4}, obj["kinds"][1]]}
    with pytest.raises(WireError, match="header announces 4 rows, the stream has 3"):
        decode_batch(reframe(bad_rows, sections))
    unknown = {**obj, "kinds": [{**obj["kinds"][0], "kind": "packets"}, obj["kinds"][1]]}
    with pytest.raises(WireError, match="kind unknown: 'packets'"):
        decode_batch(reframe(unknown, sections))
    twice = {**obj, "kinds": [obj["kinds"][0], {**obj["kinds"][1], "kind": "flows"}]}
    with pytest.raises(WireError, match="appears twice"):
        decode_batch(reframe(twice, sections))
    with pytest.raises(WireError, match="'seq' must be an integer"):
        decode_batch(reframe({**obj, "seq": -1}, sections))
    with pytest.raises(WireError, match="agent_id must be"):
        decode_batch(reframe({**obj, "agent_id": ""}, sections))
    with pytest.raises(WireError, match="unsupported codec"):
        decode_batch(reframe({**obj, "codec": "lz4"}, sections))
    raw = b"{not json"
    with pytest.raises(WireError, match="not valid JSON"):
        decode_batch(struct.pack("<4sHHII", MAGIC, 1, 0, len(raw), zlib.crc32(raw)) + raw)


def test_corrupt_ipc_with_valid_crc() -> None:
    obj, sections = split(SMALL)
    garbage = b"\xff\xff\xff\xff" + b"\x00" * 40
    kinds = [{**obj["kinds"][0], "bytes": len(garbage), "crc32": zlib.crc32(garbage)}, obj["kinds"][1]]
    with pytest.raises(WireError, match="kind 'flows': corrupt Arrow IPC stream"):
        decode_batch(reframe({**obj, "kinds": kinds}, [garbage, sections[1]]))


def test_crc_catches_payload_flip() -> None:
    frame = bytearray(SMALL)
    frame[-20] ^= 0x04
    with pytest.raises(WireError, match="section CRC-32 mismatch"):
        decode_batch(bytes(frame))
    frame = bytearray(SMALL)
    frame[PREFIX_BYTES + 5] ^= 0x01
    with pytest.raises(WireError, match="header CRC-32 mismatch"):
        decode_batch(bytes(frame))


def test_encode_rejects_bad_inputs() -> None:
    table = small_tables()["flows"]
    with pytest.raises(WireError, match="kind unknown"):
        encode_batch("a", 1, {"packets": table})
    with pytest.raises(WireError, match="seq must be"):
        encode_batch("a", -3, {"flows": table})
    with pytest.raises(WireError, match="agent_id"):
        encode_batch("", 1, {"flows": table})
    assert check_kind("edges_10s") == "edges_10s" and check_kind("edges_0.5s") == "edges_0.5s"
    assert issubclass(WireError, ValueError)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cut=st.integers(min_value=0, max_value=len(SMALL) - 1))
def test_fuzz_truncation_always_rejected(cut: int) -> None:
    with pytest.raises(WireError):
        decode_batch(SMALL[:cut])


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(flips=st.lists(st.tuples(st.integers(0, len(SMALL) - 1), st.integers(0, 7)), min_size=1, max_size=4))
def test_fuzz_bit_flips_always_rejected(flips: list[tuple[int, int]]) -> None:
    frame = bytearray(SMALL)
    for pos, bit in flips:
        frame[pos] ^= 1 << bit
    if bytes(frame) == SMALL:  # flips that cancel out
        assert decode_batch(bytes(frame)).seq == 42
        return
    with pytest.raises(WireError):
        decode_batch(bytes(frame))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_fuzz_ipc_behind_valid_crc_only_raises_wire_error(data: st.DataObject) -> None:
    """Corrupt the Arrow stream and fix the CRC: the IPC reader's errors must surface as WireError."""
    obj, sections = split(SMALL)
    section = bytearray(sections[0])
    for _ in range(data.draw(st.integers(1, 6))):
        pos = data.draw(st.integers(0, len(section) - 1))
        section[pos] ^= 1 << data.draw(st.integers(0, 7))
    cut = data.draw(st.integers(0, len(section)))
    section = bytes(section[:cut])
    kinds = [{**obj["kinds"][0], "bytes": len(section), "crc32": zlib.crc32(section)}, obj["kinds"][1]]
    frame = reframe({**obj, "kinds": kinds}, [section, sections[1]])
    try:
        batch = decode_batch(frame)
    except WireError:
        return
    # Survived: then it is a structurally valid table with the announced row count.
    assert batch.tables["flows"].num_rows == 3
    batch.tables["flows"].validate(full=True)


# --- hostile frames: refused before anything is decompressed ------------------------------------------


def never_decompress(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any decompression in ``decode_batch`` fail the test."""

    def forbidden(*args: object) -> None:
        raise AssertionError("a section was decompressed")

    monkeypatch.setattr(wire, "_read_ipc", forbidden)


def zero_bomb(mib: int) -> bytes:
    """A frame whose flows section is ~0.1 % of ``mib`` MiB of zeros it decodes to (calloc'd: no RSS here)."""
    zeros = pa.array(np.zeros((mib << 20) // 8, np.int64))
    return encode_batch("bomber", 1, {"flows": pa.table({"flow_id": zeros})})


def test_versions_and_kinds_are_refused_from_the_header(monkeypatch: pytest.MonkeyPatch) -> None:
    never_decompress(monkeypatch)
    obj, sections = split(SMALL)
    with pytest.raises(
        WireError, match=r"schema_version 2 is not supported \(this build reads schema_version 1\)"
    ) as err:
        decode_batch(reframe({**obj, "schema_version": 2}, sections))
    assert err.value.reason == "unsupported version"
    with pytest.raises(WireError, match="unsupported wire version 2 .this build reads 1") as err:
        decode_batch(reframe(obj, sections, version=2))
    assert err.value.reason == "unsupported version"
    renamed = {**obj, "kinds": [obj["kinds"][0], {**obj["kinds"][1], "kind": "edges_10s"}]}
    with pytest.raises(WireError, match=r"unknown stream kind\(s\) \['edges_10s'\]") as err:
        decode_batch(reframe(renamed, sections), kinds=("flows", "edges_1s"))
    assert err.value.reason == "unknown kind"
    bomb = zero_bomb(64)  # an unknown kind is refused however much it would decode to
    with pytest.raises(WireError, match="unknown stream kind"):
        decode_batch(bomb, kinds=("edges_1s",))


def test_a_reader_of_several_schema_versions_accepts_them() -> None:
    obj, sections = split(SMALL)
    batch = decode_batch(reframe({**obj, "schema_version": 2}, sections), schema_versions=(1, 2))
    assert batch.schema_version == 2 and batch.tables["flows"].num_rows == 3


def test_decompression_bomb_is_refused_before_decompressing(monkeypatch: pytest.MonkeyPatch) -> None:
    bomb = zero_bomb(300)
    assert len(bomb) < 1 << 20  # 300 MiB of zeros in ~130 KiB
    never_decompress(monkeypatch)
    with pytest.raises(WireError, match=r"would decode to 300 MiB, over its limit of 64 MiB") as err:
        decode_batch(bomb, max_decoded_bytes=64 << 20)
    assert err.value.reason == "too large" and "refused before decompressing" in str(err.value)


def test_one_huge_row_is_refused_by_the_per_row_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    """8 MiB in one announced row: far under the per-kind limit, over MAX_ROW_BYTES + the slack."""
    huge = pa.Array.from_buffers(
        pa.binary(),
        1,
        [None, pa.py_buffer(np.array([0, 8 << 20], np.int32)), pa.py_buffer(np.zeros(8 << 20, np.uint8))],
    )
    frame = encode_batch("a", 1, {"flows": pa.table({"flow_id": pa.array([1], pa.uint64()), "junk": huge})})
    assert 8 << 20 < MAX_DECODED_BYTES_PER_KIND
    never_decompress(monkeypatch)
    with pytest.raises(WireError, match=r"would decode to 8 MiB, over its limit of 1\.062 MiB") as err:
        decode_batch(frame)
    assert err.value.reason == "too large"


def test_a_lying_uncompressed_length_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """A buffer announcing 1 TiB behind a few bytes: Arrow would allocate what it announces."""
    frame = encode_batch("a", 1, {"flows": pa.table({"flow_id": pa.array(np.zeros(65536, np.int64))})})
    obj, sections = split(frame)
    announced = struct.pack("<q", 65536 * 8)  # the data buffer's uncompressed-length prefix
    assert sections[0].count(announced) == 1
    lying = sections[0].replace(announced, struct.pack("<q", 1 << 40))
    kinds = [{**obj["kinds"][0], "crc32": zlib.crc32(lying)}]
    never_decompress(monkeypatch)
    with pytest.raises(WireError, match="would decode to 1024 GiB") as err:
        decode_batch(reframe({**obj, "kinds": kinds}, [lying]))
    assert err.value.reason == "too large"


def test_row_count_is_checked_before_decompressing(monkeypatch: pytest.MonkeyPatch) -> None:
    obj, sections = split(SMALL)
    never_decompress(monkeypatch)
    bad_rows = {**obj, "kinds": [{**obj["kinds"][0], "rows": 3_000_000}, obj["kinds"][1]]}
    with pytest.raises(WireError, match="header announces 3000000 rows, the stream has 3"):
        decode_batch(reframe(bad_rows, sections))


_BOMB_PROBE = """
import json, re, sys
import numpy as np, pyarrow as pa
from cloudtap.ship.frame import WireError
from cloudtap.ship.wire import decode_batch, encode_batch

def peak_mib():  # this process's own peak (ru_maxrss would include the parent's, inherited at fork)
    with open("/proc/self/status") as fh:
        return int(re.search(r"VmHWM:\\s+(\\d+)", fh.read()).group(1)) >> 10

zeros = pa.array(np.zeros((300 << 20) // 8, np.int64))  # same as zero_bomb(300)
bomb = encode_batch("bomber", 1, {"flows": pa.table({"flow_id": zeros})})
del zeros
out = {"frame": len(bomb), "built": peak_mib()}
try:
    decode_batch(bomb, max_decoded_bytes=64 << 20)
except WireError as exc:
    out["refused"] = str(exc)
out["after_refusal"] = peak_mib()
if "--unlimited" in sys.argv:  # what the server did before: decode it all
    out["rows"] = decode_batch(bomb, max_decoded_bytes=1 << 40).tables["flows"].num_rows
    out["after_decoding"] = peak_mib()
print(json.dumps(out))
"""


def test_decompression_bomb_does_not_grow_the_process() -> None:
    """Peak RSS of a fresh process: refusing the bomb costs nothing; decoding it would cost its 300 MiB."""
    if not Path("/proc/self/status").exists():
        pytest.skip("needs Linux /proc (VmHWM)")
    import subprocess
    import sys

    run = subprocess.run(
        [sys.executable, "-c", _BOMB_PROBE, "--unlimited"], capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    assert out["frame"] < 1 << 20 and "would decode to 300 MiB" in out["refused"]
    assert out["after_refusal"] - out["built"] < 16  # MiB: nothing was inflated
    assert out["after_decoding"] - out["after_refusal"] > 250  # the attack is real without the limit
