"""A/B statistics over summary statistics: fixed-horizon, Bayesian, always-valid, SRM, pairwise.

Every function is pure: it takes per-arm summaries (``MetricSummary``: n, mean, variance) or
counts, and returns a Pydantic record. No I/O, no globals, numpy only (no scipy): the normal
distribution comes from ``statistics.NormalDist``; the t and chi-square tails from the
regularized incomplete beta and gamma functions below (Numerical Recipes, 3rd ed., §6.2, §6.4).

Sources, as summarised in ``notes/curation-ab-scale-reliability.md`` §2:

- GrowthBook's engine (docs.growthbook.io/statistics; gbstats): one effect/SE core (difference
  of means, delta-method relative lift) shared by the Welch test and the Gaussian Bayesian model;
  GAVI confidence sequences (Waudby-Smith et al. 2023, arXiv:2103.06476, eq. 9).
- Optimizely's mSPRT (Johari, Pekelis, Walsh, "Always Valid Inference", arXiv:1512.04922).
- Per-unit ratio metrics (Σx/Σy over users, the randomised unit) with the delta-method variance,
  as GrowthBook and Eppo analyse them; the paired one-sample test for side-by-side choices.
- Holm's (1979) step-down correction for several treatments, cohorts or guardrails.
- Wilson (1927) score interval; Pearson chi-square for sample-ratio mismatch.
- Bradley–Terry as in FastChat's ``elo_analysis.py``: P(i beats j) = 1/(1 + 10^((R_j − R_i)/400)),
  R = 400β + 1000, bootstrap CIs over battles.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from posttrain.errors import InvalidInput

__all__ = [
    "BayesResult",
    "MetricSummary",
    "Outcome",
    "Rating",
    "SRMResult",
    "SequentialMonitor",
    "SequentialResult",
    "TestResult",
    "WinRate",
    "bayesian",
    "bradley_terry",
    "confidence_sequence",
    "fixed_horizon_n",
    "gavi_rho",
    "holm",
    "msprt",
    "non_inferior",
    "paired_test",
    "ratio_summary",
    "srm_test",
    "two_proportion_test",
    "welch_test",
    "win_rate",
]

_NORMAL = NormalDist()
_EPS = 1e-15
_MAX_ITER = 100_000


# --- records ------------------------------------------------------------------------------


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class MetricSummary(_Record):
    """One arm's metric: sample size, mean and per-unit sample variance."""

    n: int = Field(ge=1)
    mean: float
    variance: float = Field(ge=0)

    @classmethod
    def from_values(cls, values: Sequence[float]) -> MetricSummary:
        """Summarise raw per-unit values (sample variance, ddof=1)."""
        arr = np.asarray(values, dtype=float)
        if arr.size < 2:
            raise InvalidInput("need at least 2 values to estimate a variance", field="values")
        return cls(n=int(arr.size), mean=float(arr.mean()), variance=float(arr.var(ddof=1)))

    @classmethod
    def from_proportion(cls, successes: int, trials: int) -> MetricSummary:
        """Summarise a conversion metric: mean p = successes/trials, variance p(1 − p)."""
        if trials < 1 or not 0 <= successes <= trials:
            raise InvalidInput(f"need 0 <= successes <= trials and trials >= 1, got {successes}/{trials}")
        p = successes / trials
        return cls(n=trials, mean=p, variance=p * (1 - p))

    @classmethod
    def from_ratio_moments(cls, n: int, sx: float, sy: float, sxx: float, syy: float, sxy: float) -> MetricSummary:
        """Summarise a ratio metric Σx/Σy over n units (users) from the sums of x, y, x², y², xy.

        The mean is R = Σx/Σy; the per-unit variance is the delta method's
        (s_x² − 2R s_xy + R² s_y²)/ȳ² with sample (co)variances (ddof=1), so variance/n is the
        variance of R with units, not their events, as the independent draws (GrowthBook, Eppo).
        """
        if n < 2 or sy <= 0:
            raise InvalidInput("a ratio metric needs at least 2 units and a positive denominator", field="n")
        ratio, x_bar, y_bar = sx / sy, sx / n, sy / n
        s_xx = (sxx - n * x_bar * x_bar) / (n - 1)
        s_yy = (syy - n * y_bar * y_bar) / (n - 1)
        s_xy = (sxy - n * x_bar * y_bar) / (n - 1)
        variance = max(0.0, (s_xx - 2 * ratio * s_xy + ratio * ratio * s_yy) / (y_bar * y_bar))
        return cls(n=n, mean=ratio, variance=variance)


def ratio_summary(numerators: Sequence[float], denominators: Sequence[float]) -> MetricSummary:
    """Summarise a ratio metric from per-unit numerators and denominators (delta method).

    For a per-user rate: numerator = the user's events with the outcome, denominator = the
    user's events measured. See ``MetricSummary.from_ratio_moments``.
    """
    x, y = np.asarray(numerators, dtype=float), np.asarray(denominators, dtype=float)
    if x.shape != y.shape:
        raise InvalidInput("give one denominator per numerator", field="denominators")
    return MetricSummary.from_ratio_moments(int(x.size), float(x.sum()), float(y.sum()), float(x @ x),
                                            float(y @ y), float(x @ y))  # fmt: skip


class TestResult(_Record):
    """A fixed-horizon two-sided test of treatment − control, absolute and relative."""

    __test__ = False  # not a pytest class

    method: Literal["welch", "two-proportion", "paired"]
    effect: float
    se: float
    ci_low: float
    ci_high: float
    relative_lift: float | None
    relative_se: float | None
    relative_ci_low: float | None
    relative_ci_high: float | None
    statistic: float
    df: float | None  # None for a z-test
    p_value: float
    alpha: float
    significant: bool


class BayesResult(_Record):
    """GrowthBook's Gaussian posterior on the effect (relative lift unless ``relative=False``)."""

    relative: bool
    posterior_mean: float
    posterior_sd: float
    chance_to_win: float
    risk_treatment: float  # expected loss if treatment ships and is worse
    risk_control: float  # expected loss if control stays and treatment is better
    ci_low: float
    ci_high: float


class SequentialResult(_Record):
    """One look of an always-valid test (mSPRT); from a monitor, p and CI are running."""

    look: int
    n: int  # units over both arms
    effect: float
    variance: float  # of the effect estimate
    log_likelihood_ratio: float
    p_value: float
    ci_low: float
    ci_high: float
    alpha: float
    reject: bool


class SRMResult(_Record):
    """Pearson chi-square goodness of fit of arm counts to their planned shares."""

    chi2: float
    df: int
    p_value: float
    threshold: float
    mismatch: bool


class WinRate(_Record):
    """Pairwise win rate (wins + ties/2)/n with a Wilson score interval."""

    wins: int
    losses: int
    ties: int
    n: int
    rate: float
    ci_low: float
    ci_high: float


class Rating(_Record):
    """A Bradley–Terry rating on the Elo scale (mean 1000) with a bootstrap CI."""

    rating: float
    ci_low: float
    ci_high: float
    battles: int


# --- distributions ------------------------------------------------------------------------


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction for the incomplete beta (modified Lentz; Numerical Recipes §6.4)."""
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, _MAX_ITER):
        m2 = 2 * m
        for aa in (m * (b - m) * x / ((a - 1 + m2) * (a + m2)), -(a + m) * (a + b + m) * x / ((a + m2) * (a + 1 + m2))):
            d = 1.0 + aa * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + aa / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < _EPS:
            return h
    raise ArithmeticError(f"incomplete beta did not converge for a={a}, b={b}, x={x}")


def _betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta I_x(a, b)."""
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1) / (a + b + 2):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1 - x) / b


def _t_sf(t: float, df: float) -> float:
    """Upper tail P(T > t) of Student's t: ½ I_{df/(df+t²)}(df/2, ½) for t ≥ 0."""
    tail = 0.5 * _betainc(df / 2, 0.5, df / (df + t * t))
    return tail if t >= 0 else 1.0 - tail


def _t_ppf(q: float, df: float) -> float:
    """Quantile of Student's t by Newton from the normal quantile (monotone: the CDF is concave there)."""
    if q < 0.5:
        return -_t_ppf(1 - q, df)
    t = max(_NORMAL.inv_cdf(q), 0.0)
    log_norm = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    for _ in range(200):
        pdf = math.exp(log_norm - (df + 1) / 2 * math.log1p(t * t / df))
        step = (1.0 - _t_sf(t, df) - q) / pdf
        t -= step
        if abs(step) < 1e-12 * max(1.0, abs(t)):
            break
    return t


def _gamma_q(a: float, x: float) -> float:
    """Regularized upper incomplete gamma Q(a, x) (series or continued fraction; NR §6.2)."""
    if x <= 0:
        return 1.0
    log_front = -x + a * math.log(x) - math.lgamma(a)
    if x < a + 1:  # series for P(a, x)
        term = total = 1.0 / a
        for k in range(1, _MAX_ITER):
            term *= x / (a + k)
            total += term
            if abs(term) < abs(total) * _EPS:
                return 1.0 - total * math.exp(log_front)
        raise ArithmeticError(f"incomplete gamma series did not converge for a={a}, x={x}")
    tiny = 1e-300
    b, c, d = x + 1 - a, 1.0 / tiny, 1.0 / (x + 1 - a)
    h = d
    for i in range(1, _MAX_ITER):
        an = -i * (i - a)
        b += 2
        d = an * d + b
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = b + an / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        if abs(d * c - 1.0) < _EPS:
            return h * math.exp(log_front)
    raise ArithmeticError(f"incomplete gamma fraction did not converge for a={a}, x={x}")


def _chi2_sf(x: float, df: int) -> float:
    """Upper tail of the chi-square distribution: Q(df/2, x/2)."""
    return _gamma_q(df / 2, x / 2)


# --- effect core (GrowthBook) -------------------------------------------------------------


def _relative(control: MetricSummary, treatment: MetricSummary) -> tuple[float, float] | None:
    """Relative lift μt/μc − 1 and its delta-method SE; None when the control mean is 0.

    Var = σt²/(nt μc²) + σc² μt²/(nc μc⁴) (GrowthBook's frequentist relative effect).
    """
    mc, mt = control.mean, treatment.mean
    if mc == 0:
        return None
    var = treatment.variance / (treatment.n * mc**2) + control.variance * mt**2 / (control.n * mc**4)
    return mt / mc - 1, math.sqrt(var)


def _effect_variance(control: MetricSummary, treatment: MetricSummary) -> float:
    """Variance of the difference of means: σc²/nc + σt²/nt; refuse a degenerate zero."""
    var = control.variance / control.n + treatment.variance / treatment.n
    if var <= 0:
        raise InvalidInput("both arms have zero variance, so no test is defined; collect more varied data")
    return var


def welch_test(control: MetricSummary, treatment: MetricSummary, alpha: float = 0.05) -> TestResult:
    """Test treatment − control with Welch's t-test (two-sided; Welch–Satterthwaite df).

    t = (μt − μc)/SE, SE² = σc²/nc + σt²/nt,
    df = SE⁴ / ((σc²/nc)²/(nc − 1) + (σt²/nt)²/(nt − 1)); CIs use the t quantile at df.
    """
    if control.n < 2 or treatment.n < 2:
        raise InvalidInput("Welch's test needs n >= 2 in each arm", field="n")
    vc, vt = control.variance / control.n, treatment.variance / treatment.n
    var = _effect_variance(control, treatment)
    df = var**2 / (vc**2 / (control.n - 1) + vt**2 / (treatment.n - 1))
    se = math.sqrt(var)
    effect = treatment.mean - control.mean
    t = effect / se
    p = min(1.0, 2 * _t_sf(abs(t), df))
    return _result("welch", effect, se, control, treatment, t, df, p, alpha, _t_ppf(1 - alpha / 2, df))


def two_proportion_test(control: MetricSummary, treatment: MetricSummary, alpha: float = 0.05) -> TestResult:
    """Test two proportions (means of 0/1 metrics): pooled z-test p-value, unpooled Wald CI.

    z = (p̂t − p̂c) / sqrt(p̄(1 − p̄)(1/nc + 1/nt)), p̄ the pooled proportion; the CI uses
    SE = sqrt(p̂c(1 − p̂c)/nc + p̂t(1 − p̂t)/nt). Build the arms with ``MetricSummary.from_proportion``.
    """
    pc, pt, nc, nt = control.mean, treatment.mean, control.n, treatment.n
    if not (0 <= pc <= 1 and 0 <= pt <= 1):
        raise InvalidInput("means must be proportions in [0, 1]; use welch_test for other metrics", field="mean")
    arms = (MetricSummary(n=nc, mean=pc, variance=pc * (1 - pc)), MetricSummary(n=nt, mean=pt, variance=pt * (1 - pt)))
    pooled = (pc * nc + pt * nt) / (nc + nt)
    pooled_se = math.sqrt(pooled * (1 - pooled) * (1 / nc + 1 / nt))
    if pooled_se == 0:
        raise InvalidInput("both arms are all 0 or all 1, so no test is defined; collect more data")
    effect = pt - pc
    z = effect / pooled_se
    p = min(1.0, 2 * _NORMAL.cdf(-abs(z)))
    se = math.sqrt(arms[0].variance / nc + arms[1].variance / nt)
    return _result("two-proportion", effect, se, *arms, z, None, p, alpha, _NORMAL.inv_cdf(1 - alpha / 2))


def paired_test(differences: MetricSummary, alpha: float = 0.05) -> TestResult:
    """Test whether paired differences (treatment − control within a pair or a unit) average 0.

    A one-sample t-test: t = d̄/SE, SE² = s_d²/n, df = n − 1 (Welch's test against a zero-variance
    arm reduces to exactly this). Use it for side-by-side choices, where both arms share each pair.
    """
    zero = MetricSummary(n=differences.n, mean=0.0, variance=0.0)
    result = welch_test(zero, differences, alpha)
    return result.model_copy(update={"method": "paired"})


def _result(
    method: Literal["welch", "two-proportion", "paired"],
    effect: float,
    se: float,
    control: MetricSummary,
    treatment: MetricSummary,
    statistic: float,
    df: float | None,
    p: float,
    alpha: float,
    crit: float,
) -> TestResult:
    rel = _relative(control, treatment)
    return TestResult(
        method=method,
        effect=effect,
        se=se,
        ci_low=effect - crit * se,
        ci_high=effect + crit * se,
        relative_lift=rel[0] if rel else None,
        relative_se=rel[1] if rel else None,
        relative_ci_low=rel[0] - crit * rel[1] if rel else None,
        relative_ci_high=rel[0] + crit * rel[1] if rel else None,
        statistic=statistic,
        df=df,
        p_value=p,
        alpha=alpha,
        significant=p < alpha,
    )


def non_inferior(result: TestResult | BayesResult | SequentialResult, margin: float) -> bool:
    """Return whether a guardrail holds: the effect's lower CI bound is above −margin.

    ``margin`` is on the result's scale (absolute, or relative for a default ``BayesResult``).
    For a metric where lower is better (latency, cost), pass the arms swapped.
    """
    if margin < 0:
        raise InvalidInput("margin is a tolerated loss and must be >= 0", field="margin")
    return result.ci_low > -margin


def fixed_horizon_n(p0: float, lift: float, alpha: float = 0.05, power: float = 0.8) -> int:
    """Return the units per arm a two-sided two-proportion z-test needs to detect p0 → p0 + lift.

    n = (z_{1−α/2} sqrt(2 p̄(1 − p̄)) + z_{power} sqrt(p0(1 − p0) + p1(1 − p1)))² / lift², p̄ = (p0 + p1)/2
    (Fleiss, Statistical Methods for Rates and Proportions, §4.2, without continuity correction).
    """
    p1 = p0 + lift
    if not (0 < p0 < 1 and 0 < p1 < 1) or lift == 0:
        raise InvalidInput(f"need 0 < p0, p0 + lift < 1 and lift != 0; got p0={p0}, lift={lift}")
    p_bar = (p0 + p1) / 2
    z_a, z_b = _NORMAL.inv_cdf(1 - alpha / 2), _NORMAL.inv_cdf(power)
    root = z_a * math.sqrt(2 * p_bar * (1 - p_bar)) + z_b * math.sqrt(p0 * (1 - p0) + p1 * (1 - p1))
    return math.ceil(root**2 / lift**2)


# --- Bayesian (GrowthBook's Gaussian model) ----------------------------------------------


def bayesian(
    control: MetricSummary,
    treatment: MetricSummary,
    prior_sd: float | None = None,
    *,
    relative: bool = True,
    level: float = 0.95,
) -> BayesResult:
    """Return the posterior of the effect under GrowthBook's Gaussian model.

    The likelihood is N(θ̂, SE²) with θ̂ the relative lift (delta-method SE) or, with
    ``relative=False``, the difference of means. The prior is flat (``prior_sd=None``) or N(0,
    prior_sd²) (GrowthBook's proper prior is 0.3 on the relative scale); the posterior mean is the
    precision-weighted average. Chance to win = P(θ > 0). Risk is the expected loss of each choice,
    risk_treatment = E[max(0, −θ)] = σφ(μ/σ) − μΦ(−μ/σ), risk_control = E[max(0, θ)] = σφ(μ/σ) + μΦ(μ/σ).
    """
    if relative:
        rel = _relative(control, treatment)
        if rel is None:
            raise InvalidInput("the control mean is 0, so the relative lift is undefined; pass relative=False")
        estimate, se = rel
    else:
        estimate, se = treatment.mean - control.mean, math.sqrt(_effect_variance(control, treatment))
    if se == 0:
        raise InvalidInput("both arms have zero variance, so no posterior is defined; collect more data")
    precision = 1 / se**2 + (1 / prior_sd**2 if prior_sd else 0.0)
    mu, sd = estimate / se**2 / precision, math.sqrt(1 / precision)
    z, pdf = mu / sd, _NORMAL.pdf(mu / sd)
    half = _NORMAL.inv_cdf(0.5 + level / 2) * sd
    return BayesResult(
        relative=relative,
        posterior_mean=mu,
        posterior_sd=sd,
        chance_to_win=_NORMAL.cdf(z),
        risk_treatment=sd * pdf - mu * _NORMAL.cdf(-z),
        risk_control=sd * pdf + mu * _NORMAL.cdf(z),
        ci_low=mu - half,
        ci_high=mu + half,
    )


# --- always-valid (mSPRT, GAVI) ----------------------------------------------------------


def msprt(control: MetricSummary, treatment: MetricSummary, tau: float, *, alpha: float = 0.05) -> SequentialResult:
    """Return one look of the mixture SPRT with a N(0, τ²) mixing distribution (Johari et al.).

    With θ̂ = μt − μc and V = σc²/nc + σt²/nt:
    Λ = sqrt(V/(V + τ²)) · exp(τ²θ̂² / (2V(V + τ²))), p = min(1, 1/Λ).
    The always-valid CI inverts the same test: |θ − θ̂| ≤ sqrt(2V(V + τ²)/τ² · (ln(1/α) + ½ ln((V + τ²)/V))).
    Ville's inequality makes p and CI valid at any stopping time only when the *running* minimum
    p and the running intersection of CIs are used: feed looks to ``SequentialMonitor``.
    """
    if tau <= 0:
        raise InvalidInput("tau, the mixing sd of the effect, must be > 0; try the smallest lift you care about")
    v = _effect_variance(control, treatment)
    theta = treatment.mean - control.mean
    log_lr = 0.5 * math.log(v / (v + tau**2)) + tau**2 * theta**2 / (2 * v * (v + tau**2))
    half = math.sqrt(2 * v * (v + tau**2) / tau**2 * (math.log(1 / alpha) + 0.5 * math.log((v + tau**2) / v)))
    p = math.exp(-log_lr) if log_lr > 0 else 1.0
    return SequentialResult(
        look=1,
        n=control.n + treatment.n,
        effect=theta,
        variance=v,
        log_likelihood_ratio=log_lr,
        p_value=p,
        ci_low=theta - half,
        ci_high=theta + half,
        alpha=alpha,
        reject=p <= alpha,
    )


class SequentialMonitor:
    """Watch an experiment look by look with mSPRT; keep the running p-value and CI.

    Feed ``update`` the cumulative summaries at every look; stop once ``stopped`` is True. A look
    where both arms still have zero variance raises ``InvalidInput``: start looking after a burn-in.
    """

    def __init__(self, tau: float, *, alpha: float = 0.05) -> None:
        self.tau = tau
        self.alpha = alpha
        self.looks = 0
        self.p_value = 1.0
        self.ci = (-math.inf, math.inf)
        self.stopped_at: int | None = None  # the look at which p first reached alpha

    @property
    def stopped(self) -> bool:
        """Whether the running p-value has reached alpha (stop and reject H0)."""
        return self.stopped_at is not None

    def update(self, control: MetricSummary, treatment: MetricSummary) -> SequentialResult:
        """Add a look (cumulative summaries so far); return it with the running p-value and CI."""
        look = msprt(control, treatment, self.tau, alpha=self.alpha)
        self.looks += 1
        self.p_value = min(self.p_value, look.p_value)
        self.ci = (max(self.ci[0], look.ci_low), min(self.ci[1], look.ci_high))
        if self.stopped_at is None and self.p_value <= self.alpha:
            self.stopped_at = self.looks
        running = {"look": self.looks, "p_value": self.p_value, "ci_low": self.ci[0], "ci_high": self.ci[1]}
        return look.model_copy(update={**running, "reject": self.stopped})


def gavi_rho(alpha: float = 0.05, tuning_n: float = 5000) -> float:
    """Return GAVI's mixing constant ρ that makes the sequence narrowest near ``tuning_n`` units.

    ρ = sqrt((−2 ln α + ln(−2 ln α + 1)) / N*) (Waudby-Smith et al. 2023, eq. 161; GrowthBook's
    "expected decision sample size" N* defaults to 5,000).
    """
    return math.sqrt((-2 * math.log(alpha) + math.log(-2 * math.log(alpha) + 1)) / tuning_n)


def confidence_sequence(variance: float, n: int, alpha: float = 0.05, rho: float | None = None) -> float:
    """Return the half-width of the GAVI asymptotic confidence sequence after ``n`` units.

    half-width = sqrt(s² · 2(nρ² + 1)/(n²ρ²) · ln(sqrt(nρ² + 1)/α)) (Waudby-Smith et al. 2023,
    arXiv:2103.06476, eq. 9; GrowthBook's sequential engine). ``variance`` is s², the per-unit
    variance of the estimate: for a difference of means over n = nc + nt units, s² = n·(σc²/nc + σt²/nt).
    """
    if n < 1 or variance < 0:
        raise InvalidInput("need n >= 1 and variance >= 0")
    rho = gavi_rho(alpha) if rho is None else rho
    nr2 = n * rho**2
    return math.sqrt(variance * 2 * (nr2 + 1) / (n * nr2) * math.log(math.sqrt(nr2 + 1) / alpha))


# --- multiple testing ---------------------------------------------------------------------


def holm(p_values: Sequence[float], alpha: float = 0.05) -> list[bool]:
    """Return which hypotheses Holm's step-down procedure rejects (family-wise error ≤ alpha).

    Sort the p-values; reject the i-th smallest (i from 0) while p ≤ α/(m − i); stop at the first
    that is not (Holm 1979). Valid for any dependence between the tests.
    """
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    reject = [False] * len(p_values)
    for rank, i in enumerate(order):
        if p_values[i] > alpha / (len(p_values) - rank):
            break
        reject[i] = True
    return reject


# --- data quality -------------------------------------------------------------------------


def srm_test(observed_counts: Sequence[int], expected_shares: Sequence[float], threshold: float = 0.001) -> SRMResult:
    """Check for sample-ratio mismatch: chi-square goodness of fit, flagged when p < threshold.

    χ² = Σ (O_i − E_i)²/E_i with E_i = share_i · Σ O, df = k − 1.
    """
    if len(observed_counts) != len(expected_shares) or len(observed_counts) < 2:
        raise InvalidInput("give one expected share per arm, for at least 2 arms", field="expected_shares")
    shares = np.asarray(expected_shares, dtype=float)
    if np.any(shares <= 0):
        raise InvalidInput("expected shares must be > 0", field="expected_shares")
    observed = np.asarray(observed_counts, dtype=float)
    expected = shares / shares.sum() * observed.sum()
    chi2 = float(np.sum((observed - expected) ** 2 / expected))
    df = len(observed) - 1
    p = _chi2_sf(chi2, df)
    return SRMResult(chi2=chi2, df=df, p_value=p, threshold=threshold, mismatch=p < threshold)


# --- pairwise comparisons -----------------------------------------------------------------


def win_rate(wins: int, losses: int, ties: int = 0, *, level: float = 0.95) -> WinRate:
    """Return (wins + ties/2)/n with a Wilson score interval (Wilson 1927).

    centre = (p̂ + z²/2n)/(1 + z²/n), half-width = z/(1 + z²/n) · sqrt(p̂(1 − p̂)/n + z²/4n²).
    """
    n = wins + losses + ties
    if n < 1 or min(wins, losses, ties) < 0:
        raise InvalidInput("need non-negative counts and at least one comparison")
    rate = (wins + ties / 2) / n
    z2 = _NORMAL.inv_cdf(0.5 + level / 2) ** 2
    centre = (rate + z2 / (2 * n)) / (1 + z2 / n)
    half = math.sqrt(z2) / (1 + z2 / n) * math.sqrt(rate * (1 - rate) / n + z2 / (4 * n * n))
    return WinRate(
        wins=wins,
        losses=losses,
        ties=ties,
        n=n,
        rate=rate,
        ci_low=max(0.0, centre - half),
        ci_high=min(1.0, centre + half),
    )


Outcome = Literal["a", "b", "tie"]
_SCORE = {"a": 1.0, "b": 0.0, "tie": 0.5}


def _fit_bradley_terry(a: np.ndarray, b: np.ndarray, score: np.ndarray, k: int, ridge: float) -> np.ndarray:
    """Fit logit strengths x (P(i beats j) = σ(x_i − x_j)) by damped Newton on the penalized log-likelihood.

    The ridge ½·ridge·Σx² keeps an unbeaten player finite and pins Σx = 0 (the gradient sums to 0).
    """
    wins = np.zeros((k, k))
    np.add.at(wins, (a, b), score)
    np.add.at(wins, (b, a), 1.0 - score)
    games = wins + wins.T
    x = np.zeros(k)

    def objective(x: np.ndarray) -> float:
        diff = x[:, None] - x[None, :]
        return float(np.sum(wins * -np.logaddexp(0.0, -diff)) - 0.5 * ridge * x @ x)

    current = objective(x)
    for _ in range(100):
        prob = 1.0 / (1.0 + np.exp(-(x[:, None] - x[None, :])))
        grad = (wins - games * prob).sum(axis=1) - ridge * x
        weight = games * prob * (1 - prob)
        hessian = np.diag(weight.sum(axis=1)) - weight + ridge * np.eye(k)
        step = np.linalg.solve(hessian, grad)
        scale = 1.0
        while (new := objective(x + scale * step)) < current - 1e-12 and scale > 1e-6:
            scale /= 2
        x, improvement, current = x + scale * step, new - current, new
        if improvement < 1e-10:
            break
    return x


def bradley_terry(
    battles: Sequence[tuple[str, str, Outcome]],
    bootstrap: int = 200,
    seed: int = 0,
    *,
    level: float = 0.95,
    ridge: float = 1e-4,
) -> dict[str, Rating]:
    """Rate players from pairwise battles (a, b, "a" | "b" | "tie") with Bradley–Terry.

    P(i beats j) = 1/(1 + 10^((R_j − R_i)/400)), R = 400β + 1000 shifted so the mean rating is 1000;
    a tie counts as half a win for each side (FastChat). The maximum-likelihood fit is
    logistic regression solved by Newton's method; CIs are percentiles over ``bootstrap``
    resamples of the battles (a player missing from a resample rates near the mean there, which
    widens its CI). Returns ratings best first.
    """
    if not battles:
        raise InvalidInput("no battles to rate", field="battles")
    names = sorted({name for a, b, _ in battles for name in (a, b)})
    index = {name: i for i, name in enumerate(names)}
    try:
        score = np.array([_SCORE[outcome] for _, _, outcome in battles])
    except KeyError as exc:
        raise InvalidInput(f"outcome {exc.args[0]!r} is not one of 'a', 'b', 'tie'", field="battles") from exc
    a = np.array([index[x] for x, _, _ in battles])
    b = np.array([index[y] for _, y, _ in battles])

    def ratings(rows: np.ndarray) -> np.ndarray:
        x = _fit_bradley_terry(a[rows], b[rows], score[rows], len(names), ridge)
        r = 400 * x / math.log(10)
        return r - r.mean() + 1000

    point = ratings(np.arange(len(battles)))
    rng = np.random.default_rng(seed)
    samples = np.array([ratings(rng.integers(0, len(battles), len(battles))) for _ in range(bootstrap)])
    lo, hi = np.quantile(samples, [(1 - level) / 2, (1 + level) / 2], axis=0) if bootstrap else (point, point)
    counts = np.bincount(np.concatenate([a, b]), minlength=len(names))
    order = np.argsort(-point)
    return {
        names[i]: Rating(rating=float(point[i]), ci_low=float(lo[i]), ci_high=float(hi[i]), battles=int(counts[i]))
        for i in order
    }
