"""Parallel-beam CT speed and FBP accuracy: ``ParallelBeamCT`` against ``skimage.transform.radon``/``iradon``.

Same inputs for both, in one process: the Shepp-Logan phantom (``skimage.data``) resized to ``N x N`` and zeroed
outside the inscribed circle, float64 (skimage's dtype; our float32 is shown as well). Rows:

* ``forward``: ``ParallelBeamCT.A`` vs ``radon(image, theta)``;
* ``back-projection``: ``ParallelBeamCT.A_adjoint`` (the exact adjoint) vs ``iradon(sinogram, theta,
  filter_name=None)`` (skimage's unfiltered, pixel-driven back-projection: the nearest thing it has, not an exact
  adjoint);
* ``FBP``: ``ParallelBeamCT.fbp`` vs ``iradon(sinogram, theta)`` (Ram-Lak filter, linear interpolation);
* ``forward, uncached``: ``ParallelBeamCT(..., cache_projector=False).A``, which recomputes the weights per call.

Times are medians over ``--repeats`` calls on one image (after one warm-up call, which for ours builds the cached
projector; the build time and the cache's bytes are printed separately); ratio = ours / skimage (below 1: ours is
faster). Accuracy: PSNR (data range 1) of both FBPs of the noiseless sinogram against the phantom, and the largest
difference between the two FBPs relative to the largest value of iradon's.

Usage::

    python benchmarks/ct.py --quick        # 64x64, 90 angles, 3 repeats
    python benchmarks/ct.py                # 64x64 / 90 angles and 256x256 / 180 angles, 7 repeats
"""

from __future__ import annotations

import argparse


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="only 64x64 with 90 angles, 3 repeats")
    parser.add_argument("--repeats", type=int, default=None, help="timed calls per entry (default 7, --quick 3)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument(
        "--sizes",
        type=str,
        default=None,
        help="comma-separated N:angles pairs (default 64:90,256:180; --quick 64:90)",
    )
    return parser.parse_args()


def main() -> None:
    args = parse_args()  # before the heavy imports, so that --help is fast

    import math
    import os
    import platform
    import statistics
    import time
    import warnings

    import numpy as np
    import torch
    from skimage.data import shepp_logan_phantom
    from skimage.transform import iradon, radon, resize

    from monai_diffusion.operators.ct import ParallelBeamCT

    torch.set_num_threads(args.threads)
    repeats = args.repeats or (3 if args.quick else 7)
    sizes_arg = args.sizes or ("64:90" if args.quick else "64:90,256:180")
    sizes = [tuple(int(v) for v in pair.split(":")) for pair in sizes_arg.split(",")]

    def median_ms(fn) -> float:
        fn()  # warm-up (and, for ours, the cache build)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return 1e3 * statistics.median(times)

    def psnr(rec: np.ndarray, ref: np.ndarray) -> float:
        return 10 * math.log10(1.0 / float(np.mean((rec - ref) ** 2)))

    print(f"torch {torch.__version__}, torch threads {torch.get_num_threads()}, python {platform.python_version()}")
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs; repeats {repeats}, medians in ms")
    print("load average at start (1/5/15 min): " + " ".join(f"{v:.2f}" for v in os.getloadavg()))

    def measure(n: int, n_angles: int) -> tuple[list[tuple[str, str, float, str, float]], list[str]]:
        rows, notes = [], []
        img = resize(shepp_logan_phantom(), (n, n), anti_aliasing=True)
        c = np.arange(n) - n // 2
        img = img * ((c[:, None] ** 2 + c[None, :] ** 2) <= (n // 2 - 1) ** 2)
        theta = np.arange(n_angles) * (180.0 / n_angles)
        sino = radon(img, theta=theta)  # (N, angles), skimage's layout
        op = ParallelBeamCT(n, n_angles)
        x64 = torch.tensor(img)[None, None]
        y64 = torch.tensor(sino.T.copy())[None, None]
        x32, y32 = x64.float(), y64.float()

        t0 = time.perf_counter()
        op.A(x64)
        build64 = time.perf_counter() - t0
        bytes64 = op.projector_cache_nbytes
        op.clear_cache()
        t0 = time.perf_counter()
        op.A(x32)
        build32 = time.perf_counter() - t0
        bytes32 = op.projector_cache_nbytes
        notes.append(
            f"{n}x{n}, {n_angles} angles: cache build (first call) {build32:.2f} s float32 / {build64:.2f} s float64; "
            f"cache {bytes32 / 2**20:.1f} MiB float32 ({bytes32} bytes) / {bytes64 / 2**20:.1f} MiB float64 "
            f"({bytes64} bytes)"
        )

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # radon's "image must be zero outside the circle" on rounding residue
            sk_fwd = median_ms(lambda: radon(img, theta=theta))
            sk_bp = median_ms(lambda: iradon(sino, theta=theta, filter_name=None))
            sk_fbp = median_ms(lambda: iradon(sino, theta=theta))
        size = f"{n}x{n}, {n_angles}"
        with torch.no_grad():
            for name, x, y in (("float64", x64, y64), ("float32", x32, y32)):
                rows.append((size, f"forward ({name})", median_ms(lambda x=x: op.A(x)), "radon", sk_fwd))
                bp = median_ms(lambda y=y: op.A_adjoint(y))
                rows.append((size, f"back-projection ({name})", bp, "iradon, no filter", sk_bp))
                rows.append((size, f"FBP ({name})", median_ms(lambda y=y: op.fbp(y)), "iradon, ramp", sk_fbp))
            ours = op.fbp(y64)[0, 0].numpy()
            op.clear_cache()
            op_uncached = ParallelBeamCT(n, n_angles, cache_projector=False)
            uncached = median_ms(lambda: op_uncached.A(x64))
            rows.append((size, "forward, uncached (float64)", uncached, "radon", sk_fwd))
        ref = iradon(sino, theta=theta)
        gap = float(np.abs(ours - ref).max() / np.abs(ref).max())
        notes.append(
            f"{n}x{n}, {n_angles} angles: FBP PSNR vs phantom: ours {psnr(ours, img):.2f} dB, iradon "
            f"{psnr(ref, img):.2f} dB; max |ours - iradon| / max |iradon| = {gap:.1e}"
        )
        return rows, notes

    rows, notes = [], []
    for n, n_angles in sizes:
        r, m = measure(n, n_angles)
        rows += r
        notes += m

    print()
    print("| size, angles | ours | ms | skimage | ms | ratio ours/skimage |")
    print("|---|---|---|---|---|---|")
    for size, ours_name, ours_ms, sk_name, sk_ms in rows:
        print(f"| {size} | {ours_name} | {ours_ms:.2f} | {sk_name} | {sk_ms:.2f} | {ours_ms / sk_ms:.2f} |")
    print()
    for note in notes:
        print(note)
    print("load average at end (1/5/15 min): " + " ".join(f"{v:.2f}" for v in os.getloadavg()))


if __name__ == "__main__":
    main()
