"""numpy's ``PCG64(SeedSequence([a, b, c]))`` for many seeds at once, bit for bit.

The synthetic datasets draw item ``i``'s randomness from ``PCG64(SeedSequence([seed, split_id, i]))``
(:mod:`foveal.data.synthetic`): fixed by numpy's published algorithms, the same on every machine. Made one
item at a time that costs ~100 us of Python per item, more than the item itself; here the same
algorithms run on arrays of items: SeedSequence's entropy pool (4 uint32 words, hashmix / mix), its
``generate_state``, PCG64's seeding and its 128-bit LCG with the XSL-RR output, in uint64 numpy
arithmetic (products wrap modulo 2^64, as in C). ``tests/test_data.py`` checks it against numpy itself.
"""

from __future__ import annotations

import functools

import numpy as np

__all__ = ["pcg64_raw", "uniform_below"]

_M32 = np.uint64(0xFFFFFFFF)
_INIT_A, _MULT_A, _INIT_B, _MULT_B = 0x43B0D7E5, 0x931E8875, 0x8B51F9DD, 0x58F38DED
_MIX_L, _MIX_R = 0xCA01F9DD, 0x4973F715


def _u32(x: np.ndarray) -> np.ndarray:
    return x & _M32


def _hashmix(value: np.ndarray, const: int) -> tuple[np.ndarray, int]:
    """SeedSequence's hashmix on uint32 values (held in uint64); returns the value and the next constant."""
    value = value ^ np.uint64(const)
    const = (const * _MULT_A) & 0xFFFFFFFF
    value = _u32(value * np.uint64(const))
    return value ^ (value >> np.uint64(16)), const


def _mix(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    result = _u32(np.uint64(_MIX_L) * x - np.uint64(_MIX_R) * y)
    return result ^ (result >> np.uint64(16))


def _seed_state(entropy: np.ndarray) -> np.ndarray:
    """``SeedSequence(row).generate_state(8, uint32)`` for every row of ``entropy [N, 3]`` (words < 2^32)."""
    pool, const = [], _INIT_A
    for i in range(4):
        word = entropy[:, i] if i < entropy.shape[1] else np.zeros(len(entropy), np.uint64)
        value, const = _hashmix(word, const)
        pool.append(value)
    for src in range(4):
        for dst in range(4):
            if src != dst:
                hashed, const = _hashmix(pool[src], const)
                pool[dst] = _mix(pool[dst], hashed)
    state, const = [], _INIT_B
    for i in range(8):
        value = pool[i % 4] ^ np.uint64(const)
        const = (const * _MULT_B) & 0xFFFFFFFF
        value = _u32(value * np.uint64(const))
        state.append(value ^ (value >> np.uint64(16)))
    return np.stack(state, 1)  # [N, 8] uint32 words in uint64


def _mul_64(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Full products of uint64 arrays: ``(high, low)`` 64-bit halves."""
    a_lo, a_hi, b_lo, b_hi = a & _M32, a >> np.uint64(32), b & _M32, b >> np.uint64(32)
    lo_lo, hi_lo, lo_hi, hi_hi = a_lo * b_lo, a_hi * b_lo, a_lo * b_hi, a_hi * b_hi
    cross = (lo_lo >> np.uint64(32)) + (hi_lo & _M32) + lo_hi
    high = hi_hi + (hi_lo >> np.uint64(32)) + (cross >> np.uint64(32))
    low = (cross << np.uint64(32)) | (lo_lo & _M32)
    return high, low


def _mul_128(a_hi: np.ndarray, a_lo: np.ndarray, b_hi: np.ndarray, b_lo: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``a * b`` modulo 2^128 of 128-bit numbers held as uint64 halves (broadcasting)."""
    high, low = _mul_64(a_lo, b_lo)
    return high + a_hi * b_lo + a_lo * b_hi, low


def _add_128(a_hi: np.ndarray, a_lo: np.ndarray, b_hi: np.ndarray, b_lo: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    low = a_lo + b_lo
    return a_hi + b_hi + (low < a_lo).astype(np.uint64), low


_MULT = 0x2360ED051FC65DA44385DF649FCCF645  # PCG64's 128-bit LCG multiplier
_SMALL = 8  # up to this many rows, numpy's own SeedSequence and PCG64 are faster


def _halves(values: list[int]) -> tuple[np.ndarray, np.ndarray]:
    return (np.array([v >> 64 for v in values], np.uint64), np.array([v & (2 ** 64 - 1) for v in values], np.uint64))


@functools.lru_cache(maxsize=8)
def _jumps(count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(A_hi, A_lo, C_hi, C_lo)``, each ``[count]``: after k = 1..count steps of ``s -> MULT s + inc`` from
    ``s``, the state is ``A_k s + C_k inc`` with ``A_k = MULT^k`` and ``C_k = sum_{j<k} MULT^j`` (mod 2^128)."""
    mask, a, c, powers, sums = (1 << 128) - 1, 1, 0, [], []
    for _ in range(count):
        a, c = (a * _MULT) & mask, (c * _MULT + 1) & mask
        powers.append(a)
        sums.append(c)
    return (*_halves(powers), *_halves(sums))


def _advance(hi, lo, inc_hi, inc_lo, jumps):
    a_hi, a_lo, c_hi, c_lo = jumps
    return _add_128(*_mul_128(a_hi, a_lo, hi, lo), *_mul_128(c_hi, c_lo, inc_hi, inc_lo))


def pcg64_raw(entropy: np.ndarray, count: int) -> np.ndarray:
    """``PCG64(SeedSequence(list(row))).random_raw(count)`` for every row of ``entropy``.

    Args:
        entropy: ``[N, 3]`` non-negative integers below 2^32 (e.g. ``[seed, split_id, index]``).
        count: words per row.

    Returns:
        ``[N, count]`` uint64.
    """
    entropy = np.asarray(entropy, dtype=np.uint64)
    if entropy.ndim != 2 or entropy.shape[1] != 3:
        raise ValueError(f"entropy: expected shape [N, 3], found {entropy.shape}")
    if len(entropy) <= _SMALL:  # numpy's own objects: fewer array operations for a few rows
        return np.stack([np.random.PCG64(np.random.SeedSequence([int(v) for v in row])).random_raw(count)
                         for row in entropy]) if len(entropy) else np.zeros((0, count), np.uint64)
    words = _seed_state(entropy)
    as64 = words[:, 0::2] | (words[:, 1::2] << np.uint64(32))  # generate_state(4, uint64), little endian
    init_hi, init_lo, seq_hi, seq_lo = as64[:, 0], as64[:, 1], as64[:, 2], as64[:, 3]
    inc_hi = (seq_hi << np.uint64(1)) | (seq_lo >> np.uint64(63))
    inc_lo = (seq_lo << np.uint64(1)) | np.uint64(1)
    # PCG64's seeding (pcg_setseq_128_srandom_r): state 0, one step, add the initial state, one step
    zero = np.zeros(len(entropy), np.uint64)
    hi, lo = _add_128(*_advance(zero, zero, inc_hi, inc_lo, _jumps(1)), init_hi, init_lo)
    hi, lo = _advance(hi, lo, inc_hi, inc_lo, _jumps(1))
    # random_raw: the outputs of the states after 1..count further steps, all at once: [N, count]
    hi, lo = _advance(hi[:, None], lo[:, None], inc_hi[:, None], inc_lo[:, None], _jumps(count))
    x, rot = hi ^ lo, hi >> np.uint64(58)  # XSL-RR: rotate right by the top 6 bits
    out = (x >> rot) | (x << ((np.uint64(64) - rot) & np.uint64(63)))
    return out


def uniform_below(words: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """``(word * n) >> 64`` elementwise for uint64 ``words`` and bounds ``0 < n < 2^32``: int64."""
    high, _ = _mul_64(np.asarray(words, np.uint64), np.asarray(bounds, np.uint64))
    return high.astype(np.int64)
