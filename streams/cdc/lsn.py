"""Log sequence numbers: 64-bit WAL positions, written ``X/Y`` in hex by PostgreSQL."""

from __future__ import annotations


def parse_lsn(text: str) -> int:
    high, _, low = text.partition("/")
    if not low:
        raise ValueError(f"not an LSN: {text!r}")
    return (int(high, 16) << 32) | int(low, 16)


def format_lsn(value: int) -> str:
    return f"{value >> 32:X}/{value & 0xFFFFFFFF:X}"
