"""The request bodies the receiver inflates: every Content-Encoding the OTel Collector's
``compression`` setting sends (gzip, zstd, snappy framed, deflate/zlib, lz4) and remote-write's
block snappy, each bounded by the request limit before it is inflated past it, and refused when
cut short (a prefix of a protobuf message may decode as a valid, smaller one)."""

from __future__ import annotations

import gzip
import zlib

import cramjam
import pytest
import zstandard

from sysmetrics.ingest.wire import PayloadError, decompress

BODY = b"".join(b"system.cpu.time host-%d " % n for n in range(4000))
LIMIT = 1 << 20
ENCODED = {
    "snappy (block: remote-write)": ("snappy", bytes(cramjam.snappy.compress_raw(BODY))),
    "snappy (framed: the Collector)": ("snappy", bytes(cramjam.snappy.compress(BODY))),
    "x-snappy-framed": ("x-snappy-framed", bytes(cramjam.snappy.compress(BODY))),
    "gzip": ("gzip", gzip.compress(BODY)),
    "deflate": ("deflate", zlib.compress(BODY)),
    "zlib": ("zlib", zlib.compress(BODY)),
    "zstd": ("zstd", zstandard.ZstdCompressor().compress(BODY)),
    "lz4": ("lz4", bytes(cramjam.lz4.compress(BODY))),
}


def _streamed_zstd() -> bytes:
    compressor = zstandard.ZstdCompressor().compressobj()
    return compressor.compress(BODY) + compressor.flush()


ENCODED["zstd, streamed (no size in the frame)"] = ("zstd", _streamed_zstd())


@pytest.mark.parametrize("case", ENCODED)
def test_each_encoding_inflates_to_the_body_and_is_bounded(case: str) -> None:
    encoding, body = ENCODED[case]
    assert decompress(body, encoding, LIMIT) == BODY
    with pytest.raises(PayloadError, match="over the 1000 bytes allowed") as too_large:
        decompress(body, encoding, 1000)
    assert (too_large.value.kind, too_large.value.status) == ("too_large", 413)
    with pytest.raises(PayloadError, match=f"body is not valid {encoding}") as cut:
        decompress(body[: len(body) // 2], encoding, LIMIT)
    assert (cut.value.kind, cut.value.status) == ("bad_encoding", 400)


def test_a_zstd_bomb_and_a_frame_asking_for_a_huge_window_are_refused() -> None:
    bomb = zstandard.ZstdCompressor().compress(bytes(64 << 20))  # 64 MiB of zeros, ~2 KB
    with pytest.raises(PayloadError) as refused:
        decompress(bomb, "zstd", 16 << 20)
    assert refused.value.status == 413
    params = zstandard.ZstdCompressionParameters(window_log=30)  # a 1 GiB window
    wide = zstandard.ZstdCompressor(compression_params=params).compressobj()
    body = wide.compress(BODY) + wide.flush()
    with pytest.raises(PayloadError, match="body is not valid zstd") as refused:
        decompress(body, "zstd", LIMIT)
    assert refused.value.status == 400


def test_an_lz4_body_that_may_inflate_past_the_limit_is_read_into_a_bounded_buffer() -> None:
    """Its headers bound it by each block's maximum (64 KiB here): a body under the limit
    whose bound is over it is read whole; a bomb past it is refused, 413."""
    body = bytes(cramjam.lz4.compress(BODY))
    assert decompress(body, "lz4", len(BODY)) == BODY  # two 64-KiB blocks: bound 128 KiB
    bomb = bytes(cramjam.lz4.compress(bytes(64 << 20)))  # 64 MiB of zeros, ~270 KB
    with pytest.raises(PayloadError, match="over the 16777216 bytes allowed") as refused:
        decompress(bomb, "lz4", 16 << 20)
    assert refused.value.status == 413


def test_an_encoding_it_cannot_read_is_415() -> None:
    with pytest.raises(PayloadError, match="'br' is not supported") as refused:
        decompress(BODY, "br", LIMIT)
    assert refused.value.status == 415
