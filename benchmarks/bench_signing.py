"""Signing a store value: the engine's MAC (SipHash-2-4, 128-bit tag, in C) against keyed
BLAKE2b from hashlib and the unkeyed XXH64 checksum it replaced, on 1 KB -- about one
savepoint value -- and 64 bytes, measured in the same run.

    python benchmarks/bench_signing.py            # table
    python benchmarks/bench_signing.py --json     # {"siphash_1k_us": ..., ...}

Target: <= 0.5 us for a 1 KB record.
"""
import argparse
import hashlib
import json
import os
import statistics
from time import perf_counter_ns

from engine import _codec

ROUNDS = 30
LOOPS = 20000


def measure(func, data):
    """Median over ROUNDS of the mean of LOOPS calls, in microseconds, less the loop's own
    cost (a call of a no-op C function on the same data)."""
    def per_call(f):
        samples = []
        for _ in range(ROUNDS):
            start = perf_counter_ns()
            for _ in range(LOOPS):
                f(data)
            samples.append((perf_counter_ns() - start) / LOOPS / 1000)
        return statistics.median(samples)
    return per_call(func) - per_call(len)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    key = os.urandom(16)
    signer = _codec.Signer(key)
    results = {}
    for label, size in (("1k", 1024), ("64b", 64)):
        data = os.urandom(size)
        results[f"siphash_{label}_us"] = measure(signer.tag, data)
        results[f"blake2b_keyed_{label}_us"] = measure(
            lambda d: hashlib.blake2b(d, key=key, digest_size=16).digest(), data)
        results[f"xxh64_{label}_us"] = measure(_codec.checksum, data)
    if args.json:
        print(json.dumps({k: round(v, 3) for k, v in results.items()}))
        return
    print("signing a store value (medians, the call's own overhead subtracted)")
    for label in ("1k", "64b"):
        print(f"  {label:>3}: SipHash-2-4-128 (engine) {results[f'siphash_{label}_us']:.3f} us"
              f"   keyed BLAKE2b (hashlib) {results[f'blake2b_keyed_{label}_us']:.3f} us"
              f"   XXH64, unkeyed {results[f'xxh64_{label}_us']:.3f} us")
    print("  target: <= 0.5 us for 1 KB")


if __name__ == "__main__":
    main()
