"""Data drift: the model's recent rows against a reference slice (a tag, e.g. ``TRAINING``).

Per column: ``meanshift`` is Welch's two-sample t-test, ``kstest`` the two-sample
Kolmogorov-Smirnov test (both answer p-values; drift where p < ``thresholdDelta``, default
0.05), and ``jensenshannon`` the Jensen-Shannon divergence (base 2, in [0, 1]) of the two
histograms on shared bins (drift above ``thresholdDelta``, default 0.1). ``mmd`` takes the
columns together: the maximum mean discrepancy under a Gaussian kernel, with a permutation
p-value (drift where p < ``thresholdDelta``, default 0.05). The distributions are computed
here with numpy alone: the base install has no scipy.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from modelhost import errors
from modelhost.trust.fairness import MetricResult, Thresholds
from modelhost.trust.store import TrustStore

__all__ = [
    "DRIFT_DEFINITIONS",
    "DRIFT_METRICS",
    "DriftRequest",
    "evaluate_drift",
    "jensen_shannon",
    "ks_pvalue",
    "mmd_pvalue",
    "parse_drift_request",
    "welch_pvalue",
]

# TrustyAI's names first; ``approxkstest`` and ``fouriermmd`` are its routes for its sketch
# and random-Fourier-feature approximations: here they compute the exact test they
# approximate (on the stored rows, which fit in memory), under TrustyAI's route and name.
DRIFT_METRICS = ("meanshift", "kstest", "approxkstest", "fouriermmd", "jensenshannon", "mmd")
_TESTS = {"approxkstest": "kstest", "fouriermmd": "mmd"}
DEFAULT_BATCH_SIZE = 100
_DEFAULT_DELTA = {"meanshift": 0.05, "kstest": 0.05, "jensenshannon": 0.1, "mmd": 0.05}
_HISTOGRAM_BINS = 20
# The MMD test's cost grows with the square of the rows: each side is sampled down to this
# many (with a fixed seed, so a value is reproducible), and permuted this many times.
_MMD_MAX_ROWS = 300
_MMD_PERMUTATIONS = 200

DRIFT_DEFINITIONS = {
    "meanshift": (
        "MeanShift: Welch's t-test per column between the reference slice and the recent rows; "
        "a p-value below thresholdDelta (0.05 by default) says the column's mean has moved."
    ),
    "kstest": (
        "KSTest: the two-sample Kolmogorov-Smirnov test per column between the reference slice "
        "and the recent rows; a p-value below thresholdDelta (0.05 by default) says the "
        "column's distribution has changed."
    ),
    "jensenshannon": (
        "JensenShannon: the Jensen-Shannon divergence (base 2, 0 = same, 1 = disjoint) per "
        "column between histograms of the reference slice and the recent rows; above "
        "thresholdDelta (0.1 by default) counts as drift."
    ),
    "mmd": (
        "MMD: the maximum mean discrepancy between the reference slice and the recent rows, "
        "all fit columns together (each scaled by its reference spread), under a Gaussian "
        "kernel; its permutation p-value below thresholdDelta (0.05 by default) is drift."
    ),
}
DRIFT_DEFINITIONS["approxkstest"] = DRIFT_DEFINITIONS["kstest"].replace(
    "KSTest:", "ApproxKSTest (computed exactly):"
)
DRIFT_DEFINITIONS["fouriermmd"] = DRIFT_DEFINITIONS["mmd"].replace(
    "MMD:", "FourierMMD (computed exactly, no random features):"
)


@dataclass(frozen=True, slots=True)
class DriftRequest:
    model_id: str
    reference_tag: str
    fit_columns: tuple[str, ...]
    batch_size: int
    threshold_delta: float | None
    request_name: str | None
    body: Mapping[str, Any]


def parse_drift_request(body: Any) -> DriftRequest:
    """A drift request from its JSON body; a bad field raises, naming it."""
    if not isinstance(body, dict):
        raise errors.InvalidInput("The metric request must be a JSON object.")
    model_id, tag = body.get("modelId"), body.get("referenceTag")
    if not isinstance(model_id, str) or not model_id:
        raise errors.InvalidInput("modelId is required: a non-empty string.")
    if not isinstance(tag, str) or not tag:
        raise errors.InvalidInput("referenceTag is required: a non-empty string.")
    columns = body.get("fitColumns") or []
    if not isinstance(columns, list) or not all(isinstance(c, str) and c for c in columns):
        raise errors.InvalidInput("fitColumns must be a list of column names.")
    batch_size = body.get("batchSize") or DEFAULT_BATCH_SIZE
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise errors.InvalidInput("batchSize must be a positive integer.")
    delta = body.get("thresholdDelta")
    if delta is not None and (
        not isinstance(delta, (int, float)) or isinstance(delta, bool) or delta <= 0
    ):
        raise errors.InvalidInput("thresholdDelta must be a positive number.")
    name = body.get("requestName")
    if name is not None and not isinstance(name, str):
        raise errors.InvalidInput("requestName must be a string.")
    return DriftRequest(
        model_id,
        tag,
        tuple(columns),
        batch_size,
        None if delta is None else float(delta),
        name,
        body,
    )


def _betacf(a: float, b: float, x: float) -> float:
    # Lentz's continued fraction for the regularised incomplete beta function.
    tiny, qab, qap, qam = 1e-300, a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-15:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


def welch_pvalue(reference: np.ndarray[Any, Any], current: np.ndarray[Any, Any]) -> float:
    """Two-sided p-value of Welch's t-test that the two samples share a mean."""
    n1, n2 = reference.size, current.size
    v1, v2 = float(reference.var(ddof=1)), float(current.var(ddof=1))
    se2 = v1 / n1 + v2 / n2
    diff = float(current.mean() - reference.mean())
    if se2 == 0.0:
        return 1.0 if diff == 0.0 else 0.0
    t = diff / math.sqrt(se2)
    dof = se2**2 / ((v1 / n1) ** 2 / (n1 - 1) + (v2 / n2) ** 2 / (n2 - 1))
    return _betainc(dof / 2.0, 0.5, dof / (dof + t * t))


def ks_pvalue(reference: np.ndarray[Any, Any], current: np.ndarray[Any, Any]) -> float:
    """Asymptotic two-sided p-value of the two-sample Kolmogorov-Smirnov statistic."""
    a, b = np.sort(reference), np.sort(current)
    grid = np.concatenate([a, b])
    cdf_a = np.searchsorted(a, grid, side="right") / a.size
    cdf_b = np.searchsorted(b, grid, side="right") / b.size
    statistic = float(np.max(np.abs(cdf_a - cdf_b)))
    effective = a.size * b.size / (a.size + b.size)
    lam = (math.sqrt(effective) + 0.12 + 0.11 / math.sqrt(effective)) * statistic
    if lam < 1e-3:
        return 1.0
    total = sum(2.0 * (-1.0) ** (k - 1) * math.exp(-2.0 * k * k * lam * lam) for k in range(1, 101))
    return min(1.0, max(0.0, total))


def jensen_shannon(reference: np.ndarray[Any, Any], current: np.ndarray[Any, Any]) -> float:
    """Jensen-Shannon divergence (base 2) of the two samples' histograms on shared bins."""
    low = float(min(reference.min(), current.min()))
    high = float(max(reference.max(), current.max()))
    if low == high:
        return 0.0
    edges = np.linspace(low, high, _HISTOGRAM_BINS + 1)
    p = np.histogram(reference, edges)[0] / reference.size
    q = np.histogram(current, edges)[0] / current.size
    m = (p + q) / 2.0

    def kl(x: np.ndarray[Any, Any]) -> float:
        mask = x > 0
        return float(np.sum(x[mask] * np.log2(x[mask] / m[mask])))

    return (kl(p) + kl(q)) / 2.0


def mmd_pvalue(reference: np.ndarray[Any, Any], current: np.ndarray[Any, Any]) -> float:
    """Permutation p-value of the Gaussian-kernel MMD between two ``[rows, columns]`` samples."""
    rng = np.random.default_rng(0)
    if reference.shape[0] > _MMD_MAX_ROWS:
        reference = reference[rng.choice(reference.shape[0], _MMD_MAX_ROWS, replace=False)]
    if current.shape[0] > _MMD_MAX_ROWS:
        current = current[rng.choice(current.shape[0], _MMD_MAX_ROWS, replace=False)]
    pooled = np.concatenate([reference, current])
    squared = np.sum((pooled[:, None, :] - pooled[None, :, :]) ** 2, axis=-1)
    # The median heuristic for the bandwidth; any positive value if every row is the same.
    bandwidth = float(np.median(squared[squared > 0])) if np.any(squared > 0) else 1.0
    kernel = np.exp(-squared / bandwidth)
    np.fill_diagonal(kernel, 0.0)
    n, total = reference.shape[0], pooled.shape[0]

    def statistic(order: np.ndarray[Any, Any]) -> float:
        k = kernel[np.ix_(order, order)]
        m = total - n
        within_x = k[:n, :n].sum() / (n * (n - 1))
        within_y = k[n:, n:].sum() / (m * (m - 1))
        return float(within_x + within_y - 2.0 * k[:n, n:].mean())

    observed = statistic(np.arange(total))
    exceeded = sum(statistic(rng.permutation(total)) >= observed for _ in range(_MMD_PERMUTATIONS))
    return (1 + exceeded) / (1 + _MMD_PERMUTATIONS)


def _numeric(store: TrustStore, model_id: str, names: Sequence[str]) -> list[str]:
    schema = store.schema(model_id)
    for name in names:
        column = schema.columns[schema.position(name)]
        if column.dtype != "number":
            raise errors.InvalidInput(f"Column {name!r} is not numeric: drift needs numbers.")
    return list(names)


def evaluate_drift(store: TrustStore, metric: str, request: DriftRequest) -> MetricResult:
    """The drift metric over the last ``batchSize`` unlabeled rows vs the reference tag."""
    asked, metric = metric, _TESTS.get(metric, metric)
    schema = store.schema(request.model_id)
    names = request.fit_columns or tuple(
        c.visible_name for c in schema.inputs if c.dtype == "number"
    )
    names = tuple(_numeric(store, request.model_id, names))
    if request.reference_tag not in store.tag_counts(request.model_id):
        raise errors.InvalidInput(
            f"Model {request.model_id!r} has no rows tagged {request.reference_tag!r}."
        )
    reference = store.read(request.model_id, names, tag=request.reference_tag)
    current = store.read(
        request.model_id, names, last=request.batch_size, exclude_tag=request.reference_tag
    )
    if not names or current[names[0]].size < 2 or reference[names[0]].size < 2:
        raise errors.InvalidInput(
            "Drift needs at least two reference rows and two recent rows in each column."
        )
    if metric == "mmd":
        spread = [float(reference[name].std()) or 1.0 for name in names]
        joint = [
            np.column_stack([side[name] / s for name, s in zip(names, spread, strict=True)])
            for side in (reference, current)
        ]
        values = {",".join(names): mmd_pvalue(joint[0], joint[1])}
    else:
        test = {"meanshift": welch_pvalue, "kstest": ks_pvalue, "jensenshannon": jensen_shannon}
        values = {name: test[metric](reference[name], current[name]) for name in names}
    delta = _DEFAULT_DELTA[metric] if request.threshold_delta is None else request.threshold_delta
    if metric == "jensenshannon":
        value = max(values.values())
        drifted = [n for n, v in values.items() if v > delta]
        thresholds = Thresholds(0.0, delta, bool(drifted))
    else:
        value = min(values.values())
        drifted = [n for n, v in values.items() if v < delta]
        thresholds = Thresholds(delta, 1.0, bool(drifted))
    definition = (
        f"{asked}: drift in {', '.join(drifted)}" if drifted else f"{asked}: no drift detected"
    )
    return MetricResult(asked.upper(), value, definition, thresholds, values)
