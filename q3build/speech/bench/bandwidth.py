"""The machine's memory read bandwidth, measured in the same run as the figures it is compared with."""

from __future__ import annotations

import threading
import time


def read_bandwidth(threads: int, *, mib: int = 1024, repeats: int = 5) -> dict:
    """STREAM-style read: numpy sums a `mib` MiB float32 array split across `threads` threads
    (numpy releases the GIL in reductions); the best of `repeats` passes, in GB/s (1e9 bytes)."""
    import numpy as np

    a = np.ones(mib * 1024 * 1024 // 4, dtype=np.float32)
    parts = np.array_split(a, threads)
    sums = [0.0] * threads

    def work(i: int) -> None:
        sums[i] = float(parts[i].sum(dtype=np.float32))

    best = float("inf")
    for _ in range(repeats):
        ts = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
        t0 = time.perf_counter()
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        best = min(best, time.perf_counter() - t0)
    if abs(sum(sums) - a.size) > a.size * 1e-3:  # float32 pairwise sums of ones stay exact enough
        raise RuntimeError("bandwidth kernel summed wrongly")
    return {"threads": threads, "bytes": int(a.nbytes), "best_s": best, "gbps": a.nbytes / best / 1e9}
