"""k-bit packing: byte-string goldens of the normative layout, round trips, errors."""

import numpy as np
import pytest

import lowfp


@pytest.mark.parametrize(
    "bits,codes,golden",
    [
        # 2-bit: element i at bits [2i, 2i+2). byte0 = e3 e2 e1 e0 = 00 11 10 01 = 0x39
        (2, [1, 2, 3, 0, 1], b"\x39\x01"),
        # 4-bit: element 0 in the low nibble
        (4, [1, 2, 3], b"\x21\x03"),
        # 3-bit: 8 codes in 3 bytes. Stream bits (LSB first):
        #   e0=000 e1=100 e2=010 e3=110 e4=001 e5=101 e6=011 e7=111 (each written LSB first)
        #   byte0 = bits 7..0 = 1 0 | 001 | 000 = 0x88, byte1 = 0xc6, byte2 = 0xfa
        (3, [0, 1, 2, 3, 4, 5, 6, 7], b"\x88\xc6\xfa"),
        (3, [5, 3], b"\x1d"),  # 5 = 101 at bits 0-2, 3 = 011 at bits 3-5: 0b00_011_101
        # 6-bit: byte0 = e1's low 2 bits (01) above e0 (111111) = 0x7f
        (6, [0x3F, 0x01, 0x2A, 0x15], b"\x7f\xa0\x56"),
        (8, [7, 255], b"\x07\xff"),
        (1, [1, 0, 1, 1, 0, 0, 0, 0, 1], b"\x0d\x01"),
    ],
)
def test_golden_bytes(bits, codes, golden):
    packed = lowfp.pack(np.array(codes, np.uint8), bits)
    assert packed.tobytes() == golden
    np.testing.assert_array_equal(lowfp.unpack(packed, bits, len(codes)), codes)


def test_4bit_matches_torch_uint4_order():
    # PyTorch/ONNX/OCP order: element 0 in the low nibble, as numpy computes it here.
    codes = np.random.default_rng(0).integers(0, 16, 1001, dtype=np.uint8)
    padded = np.append(codes, np.uint8(0))
    np.testing.assert_array_equal(lowfp.pack(codes, 4), padded[0::2] | (padded[1::2] << 4))


@pytest.mark.parametrize("bits", range(1, 9))
@pytest.mark.parametrize("n", [0, 1, 7, 8, 9, 1000, 300_001])
def test_round_trip(bits, n):
    codes = np.random.default_rng(bits * 1000 + n).integers(0, 1 << bits, n, dtype=np.uint8)
    packed = lowfp.pack(codes, bits)
    assert packed.size == (n * bits + 7) // 8
    np.testing.assert_array_equal(lowfp.unpack(packed, bits, n), codes)


def test_pack_thread_independent(threads):
    codes = np.random.default_rng(1).integers(0, 8, 500_000, dtype=np.uint8)
    lowfp.set_num_threads(1)
    one = lowfp.pack(codes, 3)
    lowfp.set_num_threads(threads)
    np.testing.assert_array_equal(lowfp.pack(codes, 3), one)


def test_errors():
    with pytest.raises(ValueError, match="bits"):
        lowfp.pack(np.zeros(3, np.uint8), 0)
    with pytest.raises(ValueError, match="bits"):
        lowfp.pack(np.zeros(3, np.uint8), 9)
    with pytest.raises(ValueError, match=r"codes.*index 2"):
        lowfp.pack(np.array([1, 2, 4], np.uint8), 2)
    with pytest.raises(TypeError, match="codes"):
        lowfp.pack(np.array([1, 2], np.int64), 2)
    with pytest.raises(ValueError, match="packed"):
        lowfp.unpack(np.zeros(2, np.uint8), 3, 8)
    with pytest.raises(ValueError, match="count"):
        lowfp.unpack(np.zeros(2, np.uint8), 3, -1)
