"""K-means on the colour histogram, the classic baseline.

Fitting on distinct colours with their counts as sample weights has the same optimum as the
tutorial's per-pixel K-means and is far faster. Pixels take their nearest centre. An image
with fewer distinct colours than ``k`` gets one cluster per colour (scikit-learn refuses more
clusters than samples); the shared finalisation then brings it to exactly ``k``.
"""

from __future__ import annotations

from cq.methods import Problem, Proposal, register


@register("kmeans", version="3", seed=0, n_init=4, max_iter=300,
          limits=dict(seed=(0, 2**32 - 1), n_init=(1, 1000), max_iter=(1, 10**5)))
def kmeans(problem: Problem, *, seed: int = 0, n_init: int = 4, max_iter: int = 300) -> Proposal:
    """Weighted K-means with ``k`` clusters; ``seed`` and ``n_init`` as in scikit-learn."""
    from sklearn.cluster import KMeans  # imported here: listing methods must stay cheap

    hist = problem.hist
    km = KMeans(n_clusters=min(problem.k, hist.n_colors), random_state=seed, n_init=n_init, max_iter=max_iter)
    km.fit(hist.colors.astype(float), sample_weight=hist.counts)
    return Proposal(km.cluster_centers_, km.labels_, extras={"inertia": float(km.inertia_)})
