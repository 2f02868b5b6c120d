"""The order in which kmod's hash table (shared/hash.c) hands its keys back, which is the
order of the lines depmod writes from one (modules.symbols): buckets in turn, a key's
bucket its SuperFastHash (Paul Hsieh's, as hash_superfast computes it over the key's
bytes, 16-bit loads little-endian as on x86) masked by the bucket count, a power of two,
and each bucket's keys sorted (hash_add keeps them so)."""
from __future__ import annotations

_M = 0xFFFFFFFF


def superfast(key: bytes) -> int:
    n = len(key)
    h, i = n, 0
    for _ in range(n // 4):
        h = (h + int.from_bytes(key[i:i + 2], "little")) & _M
        tmp = ((int.from_bytes(key[i + 2:i + 4], "little") << 11) ^ h) & _M
        h = ((h << 16) ^ tmp) & _M
        h = (h + (h >> 11)) & _M
        i += 4
    rem = n & 3
    if rem == 3:
        h = (h + int.from_bytes(key[i:i + 2], "little")) & _M
        h ^= (h << 16) & _M
        h ^= (key[i + 2] << 18) & _M
        h = (h + (h >> 11)) & _M
    elif rem == 2:
        h = (h + int.from_bytes(key[i:i + 2], "little")) & _M
        h ^= (h << 11) & _M
        h = (h + (h >> 17)) & _M
    elif rem == 1:
        h = (h + key[i]) & _M
        h ^= (h << 10) & _M
        h = (h + (h >> 1)) & _M
    # the final avalanche
    h ^= (h << 3) & _M
    h = (h + (h >> 5)) & _M
    h ^= (h << 4) & _M
    h = (h + (h >> 17)) & _M
    h ^= (h << 25) & _M
    h = (h + (h >> 6)) & _M
    return h


def hash_order(keys, buckets: int) -> list[str]:
    """keys as iterating a kmod hash of that many buckets yields them."""
    return sorted(keys, key=lambda k: (superfast(k.encode()) & (buckets - 1), k.encode()))
