#!/usr/bin/env python3
"""Writes the hand-made seed inputs under corpus/<target>/seed-*.

The byte layouts follow core/src/frame.rs and core/src/envelope.rs (wire version 1) and the
input layouts documented at the top of each fuzz target. session_ops takes `arbitrary`
input, which has no stable hand-writable form; its seeds are small inputs kept from a
fuzzing run (see README.md), so this script leaves them alone.

Run from anywhere: python3 fuzz/make_seeds.py
"""

import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))

PREAMBLE = b"PWIR" + struct.pack("<HH", 1, 0)
HELLO, WELCOME, REFUSE, DATA, ACK, PING, PONG, CLOSE = range(1, 9)


def frame(kind, body, flags=0):
    return struct.pack("<BBI", kind, flags, len(body)) + body


def s(text):
    """A postcard string (or byte string): varint length, then the bytes."""
    raw = text.encode() if isinstance(text, str) else text
    assert len(raw) < 128
    return bytes([len(raw)]) + raw


def local_proc(n, name):
    """postcard ProcId { addr: ChannelAddr::Local(n), name }; Local is variant 2."""
    assert n < 128
    return bytes([2, n]) + s(name)


# The byte-level example of envelope.rs: client[0] (link sender) -> echo[0] port 7 (link
# receiver), TTL 16, no return, no headers, payload "hi".
ENVELOPE_SHORT = bytes([0]) + s("client") + bytes([0]) + bytes([1]) + s("echo") + bytes(
    [0, 7, 16, 0, 0]
) + b"hi"

# The same with full proc ids, a NoSuchPort return reason and one header.
ENVELOPE_FULL = (
    bytes([2]) + local_proc(1, "a") + s("client") + bytes([0])
    + bytes([2]) + local_proc(2, "b") + s("echo") + bytes([0])
    + bytes([7, 16])
    + bytes([1, 1])  # Some(Undeliverable::NoSuchPort)
    + bytes([1]) + s("k") + s(b"vv")
    + b"hello"
)

HELLO_BODY = (
    local_proc(1, "a") + local_proc(2, "b")
    + bytes([5])  # incarnation
    + bytes([9])  # session
    + bytes([0])  # resume: false
    + bytes([0x80, 0x80, 0x80, 0x08])  # max_frame_len = 16 MiB as a varint
)
WELCOME_BODY = bytes([6, 1, 0, 0x80, 0x80, 0x80, 0x08])  # incarnation 6, next Some(0)

STREAM = (
    PREAMBLE
    + frame(HELLO, HELLO_BODY)
    + frame(WELCOME, WELCOME_BODY)
    + frame(DATA, ENVELOPE_SHORT)
    + frame(ACK, b"\x2a")
    + frame(PING, b"")
    + frame(PONG, b"", flags=3)
    + frame(CLOSE, b"")
)


def seeds():
    yield "frame_decode", "seed-stream", STREAM
    yield "frame_decode", "seed-frames-only", STREAM[8:]
    yield "frame_decode", "seed-truncated", STREAM[:40]
    yield "frame_decode", "seed-bad-magic", b"HTTP/1.1 200 OK\r\n"
    yield "frame_decode", "seed-bad-version", b"PWIR\x09\x00\x00\x00" + frame(PING, b"")
    yield "frame_decode", "seed-too-large", PREAMBLE + struct.pack("<BBI", DATA, 0, 1 << 20)

    # Raw mode: byte 0 bit 1 = preamble, bits 2-3 = decoder; byte 1 = number of sizes.
    yield "frame_chunked", "seed-heapless-split", bytes([0b0010, 3, 1, 7, 3]) + STREAM
    yield "frame_chunked", "seed-growable64-empty-calls", bytes([0b1010, 2, 0, 5]) + STREAM
    yield "frame_chunked", "seed-frames-only", bytes([0b1100, 1, 2]) + STREAM[8:]
    yield "frame_chunked", "seed-garbage", bytes([0b0110, 2, 3, 1]) + PREAMBLE + b"\x04\x00\xff\xff"
    # Structured mode: byte 0 bit 0 set; the rest is `arbitrary` input.
    yield "frame_chunked", "seed-structured", bytes([1]) + bytes(range(0, 120, 3))

    # Byte 0 bit 0 clear: the rest is a Data frame body.
    yield "envelope_roundtrip", "seed-short-ids", b"\x00" + ENVELOPE_SHORT
    yield "envelope_roundtrip", "seed-full-ids", b"\x00" + ENVELOPE_FULL
    yield "envelope_roundtrip", "seed-structured", b"\x01" + bytes(range(7, 250, 5))

    yield "id_parse", "seed-local-port", b"local:3,root,worker[2][17]"
    yield "id_parse", "seed-tcp6-proc", b"tcp:[::1]:7000,root"
    yield "id_parse", "seed-unix-commas", b"unix:/tmp/a,b[1],c,root,worker[3][7]"
    yield "id_parse", "seed-abstract-actor", b"unix:@procwire-1,root,x[0]"
    yield "id_parse", "seed-postcard-port", local_proc(3, "root") + s("worker") + bytes([2, 17])


def main():
    for target, name, data in seeds():
        d = os.path.join(HERE, "corpus", target)
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, name), "wb") as f:
            f.write(data)
        print(f"{target}/{name}: {len(data)} bytes")


if __name__ == "__main__":
    main()
