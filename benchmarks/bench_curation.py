"""Embedding throughput (CPU: the tiny random-init ViT and a random-init ViT-S) and nearest-neighbour query
time at 10^5 samples (exact numpy against faiss-cpu's exact and HNSW indexes, where faiss is installed).

    python benchmarks/bench_curation.py [--n 100000] [--dim 768] [--images 32]

Random-init weights cost what trained ones cost; the vectors are random unit vectors (query time does not
depend on their values for the exact searches; HNSW recall is reported).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch


def embed_rate(backbone: str, n_images: int, input_size: int, batch: int) -> float:
    from labeler.review.embed import build_backbone, embed_images, input_shape

    vit, _, _ = build_backbone(backbone, None)  # type: ignore[arg-type]
    size = input_shape(640, 480, input_size)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (480, 640, 3), dtype=np.uint8) for _ in range(batch)]
    masks = [np.zeros((480, 640), np.uint16) for _ in range(batch)]
    for m in masks:
        m[100:300, 200:400] = 1
    embed_images(vit, images, masks, size, "cpu")  # warm-up
    t = time.perf_counter()
    done = 0
    while done < n_images:
        embed_images(vit, images, masks, size, "cpu")
        done += batch
    return done / (time.perf_counter() - t)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--dim", type=int, default=768)
    p.add_argument("--images", type=int, default=32)
    p.add_argument("--queries", type=int, default=100)
    a = p.parse_args()
    print(f"torch threads {torch.get_num_threads()}")
    for backbone, size in (("tiny", 224), ("vits", 224)):
        print(
            f"embed {backbone} @ short side {size} (640x480 images, batch 8): "
            f"{embed_rate(backbone, a.images, size, 8):.1f} images/s"
        )
    from labeler.review.curate import nearest, normalised

    rng = np.random.default_rng(1)
    x = normalised(rng.standard_normal((a.n, a.dim)).astype(np.float32))
    qs = rng.integers(0, a.n, a.queries)
    t = time.perf_counter()
    want = [nearest(x, x[q], 10, exclude=int(q))[0] for q in qs]
    t_np = (time.perf_counter() - t) / a.queries
    print(f"numpy exact, one query at a time: {t_np * 1e3:.2f} ms/query (N={a.n}, D={a.dim})")
    try:
        import faiss
    except ImportError:
        print("faiss not installed: numpy only")
        return
    flat = faiss.IndexFlatIP(a.dim)
    flat.add(x)
    t = time.perf_counter()
    for q in qs:
        flat.search(x[q : q + 1], 11)
    t_flat = (time.perf_counter() - t) / a.queries
    print(f"faiss IndexFlatIP (exact): {t_flat * 1e3:.2f} ms/query ({t_np / t_flat:.2f}x numpy)")
    t = time.perf_counter()
    hnsw = faiss.IndexHNSWFlat(a.dim, 32, faiss.METRIC_INNER_PRODUCT)
    hnsw.add(x)
    build = time.perf_counter() - t
    hnsw.hnsw.efSearch = 64
    t = time.perf_counter()
    got = [hnsw.search(x[q : q + 1], 11)[1][0] for q in qs]
    t_hnsw = (time.perf_counter() - t) / a.queries
    recall = np.mean([len(set(w.tolist()) & set(g.tolist())) / 10 for w, g in zip(want, got, strict=True)])
    print(
        f"faiss HNSW32 efSearch 64: build {build:.1f} s, {t_hnsw * 1e3:.3f} ms/query "
        f"({t_np / t_hnsw:.1f}x numpy), recall@10 {recall:.3f}"
    )


if __name__ == "__main__":
    main()
