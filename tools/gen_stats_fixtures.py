#!/usr/bin/env python3
"""Generate reference fixtures for the `stats` crate.

Run from the repository root:

    python3 tools/gen_stats_fixtures.py

This writes JSON files into ``crates/stats/tests/fixtures/``. The Rust
integration tests in ``crates/stats/tests`` load these files and compare the
crate's own implementations against values computed here with
scipy / statsmodels (the "reference"). Nothing in the Rust build depends on
Python; the fixtures are checked in and this script only needs re-running when
cases are added or changed.

Every file has the shape

    {"generator": "tools/gen_stats_fixtures.py",
     "reference": "<library + function used>",
     "cases": [ {...}, ... ]}

Floats are written with full (round-trip) precision. All values are finite;
the only ``null`` is ``relative_lift`` in ztest.json when the control rate is
zero. The output is deterministic: all random inputs come from
``np.random.default_rng(20261129)``.

Files and formulas
------------------
mcnemar.json      statsmodels.stats.contingency_tables.mcnemar on
                  [[n00, b], [c, n11]]; ``statistic``/``p_value`` with
                  exact=False, correction=True, i.e. (|b-c|-1)^2/(b+c) vs
                  chi2(1) (note: for b == c > 0 this is 1/(b+c), not 0, same
                  as R's mcnemar.test); ``exact_p_value`` with exact=True
                  (two-sided binomial). Convention: b = c = 0 (statsmodels
                  returns statistic=inf, p=0) is written as statistic 0,
                  p_value 1, exact_p_value 1.
ztest.json        statsmodels proportions_ztest([s_b, s_a], [n_b, n_a])
                  (pooled, two-sided; z is for B minus A), diff = p_b - p_a,
                  Wald and Newcombe (hybrid Wilson score) intervals from
                  statsmodels confint_proportions_2indep(compare='diff'),
                  relative_lift = (p_b - p_a) / p_a (null if p_a == 0).
sample_size.json  per-variant n for a two-sided two-proportion z-test:
                  p1 = baseline, p2 = baseline + mde, pbar = (p1+p2)/2,
                  n = (z_{1-a/2} sqrt(2 pbar(1-pbar))
                       + z_{power} sqrt(p1(1-p1) + p2(1-p2)))^2 / (p2-p1)^2,
                  per_variant = ceil(n), z from scipy.stats.norm.ppf.
power.json        power = Phi((|p2-p1| sqrt(n) - z_{1-a/2} sqrt(2 pbar(1-pbar)))
                              / sqrt(p1(1-p1) + p2(1-p2)))
                  (the one-tailed approximation used by R's power.prop.test
                  with strict=FALSE), Phi = scipy.stats.norm.cdf.
ttest_paired.json scipy.stats.ttest_rel(a, b) (t for a minus b), df = n-1,
                  mean_diff = mean(a-b), sd_diff = std(a-b, ddof=1).
welch.json        scipy.stats.ttest_ind(a, b, equal_var=False); df by the
                  Welch-Satterthwaite formula (checked against scipy's df);
                  ci_low/ci_high and ci90_low/ci90_high from the result's
                  confidence_interval(0.95 | 0.90), for mean(a) - mean(b).
chi2.json         scipy.stats.chi2_contingency(table) with defaults (Yates
                  continuity correction only when dof == 1).
srm.json          scipy.stats.chisquare(observed, f_exp=weights*sum(observed)).
mannwhitney.json  scipy.stats.mannwhitneyu(a, b, alternative='two-sided',
                  method='asymptotic', use_continuity=True); u is U for a.
bayes.json        Beta(1+s, 1+n-s) posteriors (uniform prior).
                  prob_b_beats_a = P(pB > pA),
                  expected_loss_a = E[max(pB - pA, 0)] (loss of choosing A),
                  expected_loss_b = E[max(pA - pB, 0)] (loss of choosing B),
                  by 1-D scipy.integrate.quad, cross-checked against a
                  2,000,000-draw Monte Carlo (within 4 standard errors).
multiple.json     statsmodels.stats.multitest.multipletests adjusted p-values
                  for method='bonferroni' and method='holm'.
abn.json          A/B/n: k arms against the first (the control), each case one
                  metric. Continuous: per variant scipy ttest_ind(variant,
                  control, equal_var=False) t, p and 95% confidence_interval;
                  proportions: per variant statsmodels proportions_ztest(
                  [s_v, s_c], [n_v, n_c]) z and p. Then multipletests(p,
                  alpha, method='holm' | 'bonferroni'): adjusted p-values and
                  the rejections.
rank_tests.json   Mann-Whitney with its effect size, and an A/B/n on a
                  heavy-tailed metric (its own generator, seed 20261215).
                  kind "pair": scipy mannwhitneyu(a, b, alternative=
                  'two-sided', method='asymptotic', use_continuity=True);
                  u is U for a, common_language = u / (len(a) len(b)),
                  i.e. P(a > b) + P(a = b) / 2. kind "arms": k arms against
                  the first (read by crates/core/tests/experiments.rs,
                  which feeds the values through the aggregates as feedback
                  metrics): per variant mannwhitneyu(variant, control) as
                  above and ttest_ind(variant, control, equal_var=False),
                  each test's p-values adjusted by multipletests(method=
                  'holm' | 'bonferroni'). Values are rounded to cents.
confidence_sequence.json
                  the mSPRT's normal-mixture confidence sequence, found
                  without its closed form: the two roots in theta of
                  ln Lambda(theta) = ln(1/alpha), Lambda(theta) = sqrt(V/(V+tau^2))
                  exp(tau^2 (d - theta)^2 / (2 V (V + tau^2))), by
                  scipy.optimize.brentq; for bare (d, V) and for two samples
                  (d = mean(b) - mean(a), V = var(a, ddof=1)/n_a +
                  var(b, ddof=1)/n_b) or two counts (V = pa(1-pa)/na +
                  pb(1-pb)/nb); p_value = min(1, 1/Lambda(0)).
value_drift.json  PSI and Jensen-Shannon of binned values (switchyard's value_drift):
                  each value replaced by its log-bucket key (bucket
                  floor(ln|x| / ln 1.01), key -(2^32 + b) below zero, 0 at
                  zero, 2^32 + b above), cut points q_i (i = 1..9) the
                  smallest expected key whose cumulative count reaches
                  i*n/10 (numpy sort; the inverted-CDF decile), bins by
                  np.digitize(key, q, right=True), then PSI and
                  jensenshannon on the 10 bin counts as in drift.json.
shadow_pairs.json a shadow comparison end to end (read by
                  crates/core/tests/shadow_reference.rs, which feeds the arrays
                  through the aggregates and the shadow report). Regression
                  cases: agreement = mean(np.isclose(shadow, primary,
                  rtol=relative, atol=absolute)); MAE / RMSE of each from
                  sklearn mean_absolute_error / sqrt(mean_squared_error);
                  MAPE from sklearn mean_absolute_percentage_error on the
                  instances whose truth is not 0 (a fraction; the others are
                  counted as mape_skipped); scipy ttest_rel(|e_p|, |e_s|);
                  scipy wilcoxon(|e_p|, |e_s|, zero_method='wilcox',
                  correction=False, method='auto'); underestimates =
                  sum(shadow - truth < -by), with `by` at least 2% away from
                  every error (the histogram's buckets are 1% wide).
                  Regression cases also carry the value drift of the
                  shadow's outputs from the primary's (as value_drift.json).
                  Classification cases: sklearn accuracy_score of each,
                  agreement = mean(primary == shadow), McNemar on the
                  discordant labelled pairs (statsmodels, exact=False,
                  correction=True); per version the confusion matrix and
                  precision/recall/F1/support (sklearn confusion_matrix and
                  precision_recall_fscore_support with the default labels,
                  the sorted union of truth and predictions, zero_division=0,
                  and average='macro') and accuracy with its Wilson 95%
                  interval (statsmodels proportion_confint(method='wilson')),
                  on the instances whose truth is one of `declared` when the
                  case declares classes (the others are `unknown_labels`);
                  the transition matrix (sklearn confusion_matrix(primary,
                  shadow) over the sorted union of both), the seed's
                  chi-square of the two prediction distributions (scipy
                  chi2_contingency on the 2 x k class counts, primary row
                  first) and PSI / jensenshannon of the shadow's class
                  distribution from the primary's (as drift.json).
"""

import json
import math
import os
import sys
import warnings

import numpy as np
import scipy
import scipy.integrate
import scipy.optimize
import scipy.stats as st
import statsmodels
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import (
    confint_proportions_2indep,
    proportion_confint,
    proportions_ztest,
)

GENERATOR = "tools/gen_stats_fixtures.py"
OUT_DIR = os.path.join("crates", "stats", "tests", "fixtures")
MIN_CASES = 12
# The generators added later have fewer, chosen cases.
MIN_CASES_NEW = 6

rng = np.random.default_rng(20261129)


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


def f(x):
    """Plain Python float, asserting it is finite."""
    v = float(x)
    if not math.isfinite(v):
        raise AssertionError(f"non-finite value {v!r}")
    return v


def flist(xs):
    return [f(x) for x in xs]


def check_finite(obj, path="case"):
    """Recursively assert every number in obj is finite (None allowed)."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            check_finite(v, f"{path}.{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            check_finite(v, f"{path}[{i}]")
    elif isinstance(obj, float):
        if not math.isfinite(obj):
            raise AssertionError(f"{path} is not finite: {obj!r}")


def write(name, reference, cases, min_cases=MIN_CASES):
    if len(cases) < min_cases:
        raise AssertionError(f"{name}: only {len(cases)} cases (< {MIN_CASES})")
    for i, c in enumerate(cases):
        check_finite(c, f"{name}[{i}]")
    doc = {"generator": GENERATOR, "reference": reference, "cases": cases}
    path = os.path.join(OUT_DIR, name)
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(doc, fh, indent=1, allow_nan=False)
        fh.write("\n")
    print(f"wrote {path} ({len(cases)} cases)")
    return cases


def zq(q):
    return st.norm.ppf(q)


# --------------------------------------------------------------------------
# 1. McNemar
# --------------------------------------------------------------------------


def gen_mcnemar():
    pairs = [
        (0, 0),  # convention case, see below
        (1, 0),
        (0, 1),
        (1, 1),
        (3, 3),
        (25, 25),
        (2, 7),
        (10, 3),
        (50, 30),  # seed example: statistic 4.5125
        (30, 50),
        (12, 0),
        (400, 100),  # huge imbalance, p ~ 0
        (5000, 4800),  # large counts
        (117, 89),
    ]
    cases = []
    for b, c in pairs:
        if b == 0 and c == 0:
            # Convention: with no discordant pairs there is no evidence of a
            # difference. statsmodels returns statistic=inf, p=0 (0/0 in the
            # corrected statistic), so we write statistic 0, p 1, exact p 1.
            cases.append(dict(b=0, c=0, statistic=0.0, p_value=1.0, exact_p_value=1.0))
            continue
        table = [[100, b], [c, 100]]  # diagonal cells do not affect the test
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            asym = mcnemar(table, exact=False, correction=True)
            exact = mcnemar(table, exact=True)
        stat = f(asym.statistic)
        # cross-check with the textbook formula
        assert math.isclose(stat, (abs(b - c) - 1) ** 2 / (b + c), rel_tol=1e-12, abs_tol=1e-300)
        cases.append(
            dict(b=b, c=c, statistic=stat, p_value=f(asym.pvalue), exact_p_value=f(exact.pvalue))
        )
    return write(
        "mcnemar.json",
        "statsmodels.stats.contingency_tables.mcnemar (exact=False, correction=True; exact=True)",
        cases,
    )


# --------------------------------------------------------------------------
# 2. two-proportion z-test + intervals
# --------------------------------------------------------------------------


def gen_ztest():
    specs = [
        # (s_a, n_a, s_b, n_b, alpha)
        (900, 1000, 920, 1000, 0.05),  # seed example
        (900, 1000, 920, 1000, 0.01),
        (900, 1000, 920, 1000, 0.10),
        (0, 200, 7, 200, 0.05),  # p_a == 0, p_b > 0 -> relative_lift null
        (180, 200, 200, 200, 0.05),  # p_b == 1, p_a < 1
        (2, 5, 5, 7, 0.05),  # tiny samples
        (3, 7, 1, 5, 0.10),  # tiny samples, negative diff
        (20, 50, 2600, 5000, 0.05),  # very unequal sizes
        (2600, 5000, 20, 50, 0.01),
        (30, 100, 60, 200, 0.05),  # identical proportions: z = 0, p = 1
        (100, 1000, 300, 1000, 0.05),  # p-value near 0
        (5000, 10000, 5100, 10000, 0.05),
        (48, 1000, 51, 1000, 0.05),
        (12, 40, 9, 40, 0.10),
    ]
    cases = []
    for sa, na, sb, nb, alpha in specs:
        pa, pb = sa / na, sb / nb
        assert not (pa == 0 and pb == 0) and not (pa == 1 and pb == 1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            z, p = proportions_ztest([sb, sa], [nb, na])
            wl, wh = confint_proportions_2indep(
                sb, nb, sa, na, method="wald", compare="diff", alpha=alpha
            )
            nl, nh = confint_proportions_2indep(
                sb, nb, sa, na, method="newcomb", compare="diff", alpha=alpha
            )
        # cross-check pooled z by hand
        pp = (sa + sb) / (na + nb)
        z_hand = (pb - pa) / math.sqrt(pp * (1 - pp) * (1 / na + 1 / nb))
        assert math.isclose(float(z), z_hand, rel_tol=1e-9, abs_tol=1e-12), (z, z_hand)
        cases.append(
            dict(
                successes_a=sa,
                trials_a=na,
                successes_b=sb,
                trials_b=nb,
                alpha=alpha,
                z=f(z),
                p_value=f(p),
                diff=f(pb - pa),
                ci_low=f(wl),
                ci_high=f(wh),
                newcombe_low=f(nl),
                newcombe_high=f(nh),
                relative_lift=None if pa == 0 else f((pb - pa) / pa),
            )
        )
    return write(
        "ztest.json",
        "statsmodels.stats.proportion.proportions_ztest (pooled, two-sided) + "
        "confint_proportions_2indep(method='wald'|'newcomb', compare='diff')",
        cases,
    )


# --------------------------------------------------------------------------
# 3. sample size / power
# --------------------------------------------------------------------------


def sample_size_n(p1, p2, alpha, power):
    pbar = (p1 + p2) / 2
    num = zq(1 - alpha / 2) * math.sqrt(2 * pbar * (1 - pbar)) + zq(power) * math.sqrt(
        p1 * (1 - p1) + p2 * (1 - p2)
    )
    return num**2 / (p2 - p1) ** 2


def power_of(p1, p2, n, alpha):
    pbar = (p1 + p2) / 2
    return st.norm.cdf(
        (abs(p2 - p1) * math.sqrt(n) - zq(1 - alpha / 2) * math.sqrt(2 * pbar * (1 - pbar)))
        / math.sqrt(p1 * (1 - p1) + p2 * (1 - p2))
    )


def gen_sample_size():
    specs = [
        # (baseline, mde, alpha, power)
        (0.90, 0.02, 0.05, 0.8),  # seed example: 3213
        (0.90, -0.02, 0.05, 0.8),  # negative mde
        (0.50, -0.05, 0.05, 0.8),
        (0.01, 0.005, 0.05, 0.8),  # small baseline
        (0.01, 0.002, 0.05, 0.8),
        (0.01, -0.005, 0.05, 0.9),
        (0.10, 0.01, 0.01, 0.8),  # alpha 0.01
        (0.10, 0.01, 0.05, 0.9),  # power 0.9
        (0.10, 0.01, 0.05, 0.95),  # power 0.95
        (0.30, 0.10, 0.01, 0.95),
        (0.50, 0.01, 0.05, 0.8),
        (0.05, 0.05, 0.10, 0.8),
        (0.97, 0.02, 0.05, 0.9),
        (0.20, 0.30, 0.05, 0.8),  # huge effect, small n
    ]
    cases = []
    for baseline, mde, alpha, power in specs:
        p2 = baseline + mde
        assert 0 < p2 < 1
        n = sample_size_n(baseline, p2, alpha, power)
        per = math.ceil(n)
        # make sure ceil is not sitting on a floating-point knife edge
        assert abs(n - round(n)) > 1e-6, (baseline, mde, n)
        cases.append(dict(baseline=baseline, mde=mde, alpha=alpha, power=power, per_variant=per))
    assert cases[0]["per_variant"] == 3213, cases[0]
    write(
        "sample_size.json",
        "closed-form two-proportion sample size with scipy.stats.norm.ppf",
        cases,
    )

    pspecs = [
        # (p1, p2, n, alpha)
        (0.90, 0.92, 3213, 0.05),  # n from the seed sample-size case: ~0.8
        (0.90, 0.92, 3212, 0.05),
        (0.90, 0.92, 1000, 0.05),
        (0.90, 0.92, 10000, 0.05),
        (0.92, 0.90, 3213, 0.05),  # order does not matter
        (0.50, 0.55, 100, 0.05),  # low power
        (0.50, 0.55, 1565, 0.05),
        (0.01, 0.015, 7000, 0.05),
        (0.10, 0.11, 20000, 0.01),
        (0.10, 0.11, 5000, 0.10),
        (0.30, 0.40, 10, 0.05),  # very low power
        (0.20, 0.50, 200, 0.05),  # power ~ 1
        (0.05, 0.06, 50, 0.05),  # numerator negative: power between alpha/2 and 0.5
    ]
    pcases = []
    for p1, p2, n, alpha in pspecs:
        pw = f(power_of(p1, p2, n, alpha))
        assert 0 < pw < 1 or pw == 1.0
        pcases.append(dict(p1=p1, p2=p2, n=n, alpha=alpha, power=pw))
    assert abs(pcases[0]["power"] - 0.8) < 1e-3, pcases[0]
    write(
        "power.json",
        "closed-form one-tailed approximation (R power.prop.test strict=FALSE) "
        "with scipy.stats.norm.cdf/ppf",
        pcases,
    )
    return cases


# --------------------------------------------------------------------------
# 4. paired t-test
# --------------------------------------------------------------------------


def gen_ttest_paired():
    inputs = []
    inputs.append(([1.0, 2.0], [0.5, 2.25]))  # n = 2
    inputs.append(([3.1, 4.7, 5.2], [2.9, 4.1, 5.6]))  # n = 3
    a = rng.normal(10.0, 2.0, 1000)
    inputs.append((a, a - 0.1 + rng.normal(0.0, 1.0, 1000)))  # n = 1000
    b = rng.normal(5.0, 1.0, 12)
    inputs.append((b + 1.0 + rng.normal(0.0, 1e-6, 12), b))  # tiny var -> p ~ 0
    base = rng.normal(0.0, 1.0, 10)
    d = np.array([1.0, -1.0, 2.0, -2.0, 0.5, -0.5, 3.0, -3.0, 0.25, -0.2499])
    inputs.append((base + d, base))  # mean diff ~ 1e-5, p ~ 1
    x = rng.normal(-50.0, 5.0, 20)
    inputs.append((x, x + rng.normal(3.0, 2.0, 20)))  # negative means, negative diff
    x = rng.normal(-1.0, 0.3, 8)
    inputs.append((x - 0.2 + rng.normal(0, 0.3, 8), x))
    for n in (5, 30, 100, 250):
        x = rng.normal(100.0, 15.0, n)
        inputs.append((x + rng.normal(0.5, 3.0, n), x))
    inputs.append(([1, 2, 3, 4, 5, 6], [2, 2, 2, 5, 5, 5]))  # integer data
    inputs.append(([0.001, 0.002, 0.0015, 0.0031], [0.0011, 0.0018, 0.0017, 0.0025]))

    cases = []
    for a, b in inputs:
        a = np.asarray(a, dtype=float)
        b = np.asarray(b, dtype=float)
        r = st.ttest_rel(a, b)
        dd = a - b
        p = f(r.pvalue)
        assert p > 0.0
        cases.append(
            dict(
                a=flist(a),
                b=flist(b),
                t=f(r.statistic),
                p_value=p,
                df=len(a) - 1,
                mean_diff=f(np.mean(dd)),
                sd_diff=f(np.std(dd, ddof=1)),
                n=len(a),
            )
        )
    return write("ttest_paired.json", "scipy.stats.ttest_rel", cases)


# --------------------------------------------------------------------------
# 5. Welch t-test
# --------------------------------------------------------------------------


def welch_df(a, b):
    va, vb = np.var(a, ddof=1) / len(a), np.var(b, ddof=1) / len(b)
    return (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))


def gen_welch():
    inputs = []
    inputs.append(([1.0, 2.0], [3.0, 4.0, 6.0]))  # n = 2 vs 3
    inputs.append(([10.2, 9.8], [10.0, 10.1, 9.7]))
    inputs.append((rng.normal(0.0, 1.0, 5), rng.normal(0.5, 20.0, 500)))  # unequal n and sd
    inputs.append((rng.normal(3.0, 50.0, 400), rng.normal(0.0, 0.5, 4)))
    inputs.append((rng.normal(0.0, 1.0, 200), rng.normal(2.0, 1.0, 300)))  # p ~ 0
    x = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    inputs.append((x, np.array([0.0, 3.0, 6.0, 3.0 + 1e-4])))  # means ~ equal -> p ~ 1
    inputs.append((rng.normal(-20.0, 3.0, 15), rng.normal(-21.0, 1.0, 25)))
    for na, nb in ((10, 10), (30, 12), (100, 1000), (7, 70)):
        inputs.append((rng.normal(1.0, 2.0, na), rng.normal(1.3, 1.0, nb)))
    inputs.append(([1, 2, 2, 3, 3, 3], [2, 3, 3, 4, 4, 4, 5]))
    inputs.append((rng.exponential(1.0, 50), rng.exponential(1.5, 60)))

    cases = []
    for a, b in inputs:
        a = np.asarray(a, dtype=float)
        b = np.asarray(b, dtype=float)
        r = st.ttest_ind(a, b, equal_var=False)
        df = welch_df(a, b)
        if hasattr(r, "df"):
            assert np.isclose(float(r.df), df, rtol=1e-12, atol=0), (r.df, df)
        p = f(r.pvalue)
        assert p > 0.0
        ci = r.confidence_interval(confidence_level=0.95)
        ci90 = r.confidence_interval(confidence_level=0.90)
        cases.append(dict(a=flist(a), b=flist(b), t=f(r.statistic), p_value=p, df=f(df),
                          ci_low=f(ci.low), ci_high=f(ci.high),
                          ci90_low=f(ci90.low), ci90_high=f(ci90.high)))
    return write("welch.json", "scipy.stats.ttest_ind(equal_var=False) and its "
                 ".confidence_interval(0.95 | 0.90) for mean(a) - mean(b)", cases)


# --------------------------------------------------------------------------
# 6. chi-square contingency
# --------------------------------------------------------------------------


def gen_chi2():
    tables = [
        [[50, 30], [20, 40]],  # 2x2
        [[900, 100], [920, 80]],
        [[0, 12], [7, 9]],  # 2x2 with a zero cell
        [[3, 1], [1, 3]],  # small 2x2, Yates
        [[10, 20], [20, 40]],  # proportional 2x2 -> p = 1
        [[10, 20, 30], [15, 25, 10]],  # 2x3
        [[12, 5, 9], [7, 15, 3], [4, 8, 20]],  # 3x3
        [[20, 30], [15, 35], [30, 20], [25, 25]],  # 4x2
        [[10, 20, 30], [20, 40, 60], [5, 10, 15]],  # proportional rows -> p = 1
        [[500, 100], [100, 500]],  # p near 0
        [[200, 10, 5], [10, 200, 5], [5, 5, 200]],  # p near 0, 3x3
        [[1, 2, 3, 4], [4, 3, 2, 1]],  # 2x4
        [[5000, 5100], [4900, 5000]],  # |O-E| < 0.5: Yates clamps to statistic 0, p 1
        [[8, 0, 3], [2, 6, 0]],  # zeros in a 2x3
    ]
    cases = []
    for t in tables:
        arr = np.asarray(t)
        assert (arr.sum(axis=0) > 0).all() and (arr.sum(axis=1) > 0).all()
        r = st.chi2_contingency(arr)
        cases.append(
            dict(table=t, statistic=f(r.statistic), p_value=f(r.pvalue), dof=int(r.dof))
        )
    return write("chi2.json", "scipy.stats.chi2_contingency (default correction=True)", cases)


# --------------------------------------------------------------------------
# 7. sample-ratio mismatch (goodness of fit)
# --------------------------------------------------------------------------


def gen_srm():
    specs = [
        ([5100, 4900], [0.5, 0.5]),
        ([5000, 5000], [0.5, 0.5]),  # exact match, p = 1
        ([3400, 3300, 3300], [1 / 3, 1 / 3, 1 / 3]),  # 3 arms
        ([3333, 3334, 3333], [1 / 3, 1 / 3, 1 / 3]),
        ([9000, 1000], [0.9, 0.1]),  # exact 90/10
        ([9050, 950], [0.9, 0.1]),
        ([6000, 4000], [0.5, 0.5]),  # strong mismatch, p ~ 0
        ([5, 3], [0.5, 0.5]),  # small counts
        ([1, 0], [0.5, 0.5]),
        ([7, 2, 1], [0.5, 0.25, 0.25]),
        ([500, 250, 240], [0.5, 0.25, 0.25]),
        ([100, 120, 95, 105], [0.25, 0.25, 0.25, 0.25]),
        ([99000, 1000, 0], [0.98, 0.01, 0.01]),  # zero observed, strong mismatch
        ([50100, 49900], [0.5, 0.5]),
    ]
    cases = []
    for obs, w in specs:
        obs_a = np.asarray(obs, dtype=float)
        w_a = np.asarray(w, dtype=float)
        assert abs(w_a.sum() - 1) < 1e-12
        # scipy requires sum(f_obs) == sum(f_exp) to ~1e-8 relative
        r = st.chisquare(obs_a, f_exp=w_a * obs_a.sum())
        cases.append(dict(observed=obs, weights=flist(w), statistic=f(r.statistic), p_value=f(r.pvalue)))
    return write(
        "srm.json",
        "scipy.stats.chisquare(observed, f_exp=weights*sum(observed))",
        cases,
    )


# --------------------------------------------------------------------------
# 7b. Cochran-Mantel-Haenszel (stratified two-proportion comparison)
# --------------------------------------------------------------------------


def gen_stratified():
    """Each stratum is ((a successes, a trials), (b successes, b trials)); statsmodels reads
    the 2x2 tables [[b succ, b fail], [a succ, a fail]] so the odds ratio is B over A."""
    from statsmodels.stats.contingency_tables import StratifiedTable

    specs = [
        # Two regions, the same lift in each.
        [((900, 1000), (920, 1000)), ((450, 600), (470, 600))],
        # A reversal of mix: B looks better overall only through its mix of strata.
        [((80, 100), (790, 1000)), ((300, 1000), (29, 100))],
        # Three strata of unequal sizes.
        [((45, 50), (46, 50)), ((180, 200), (186, 200)), ((700, 800), (730, 800))],
        # No effect at all.
        [((50, 100), (50, 100)), ((30, 60), (30, 60))],
        # Small strata, one with a single arm only (adds nothing) and one of one observation.
        [((3, 5), (4, 6)), ((2, 4), (1, 3)), ((5, 7), (0, 0)), ((1, 1), (0, 0))],
        # A strong effect in one stratum, none in the other.
        [((100, 200), (150, 200)), ((100, 200), (100, 200))],
        # A worse B.
        [((930, 1000), (900, 1000)), ((880, 1000), (860, 1000)), ((400, 500), (380, 500))],
        # Many strata (the bounded segment values).
        [((40 + i, 60), (42 + i, 60)) for i in range(12)],
        # Rates near 0.
        [((2, 500), (6, 500)), ((1, 300), (4, 300))],
        # Rates near 1.
        [((495, 500), (499, 500)), ((290, 300), (298, 300))],
        # One stratum (the plain 2x2 odds ratio).
        [((70, 100), (80, 100))],
        # Arms of very different sizes within strata (a 90/10 canary-like split).
        [((810, 900), (95, 100)), ((450, 500), (52, 55)), ((90, 100), (9, 10))],
    ]
    cases = []
    for strata in specs:
        tables = []
        for (sa, na), (sb, nb) in strata:
            if na + nb < 2:
                continue
            tables.append(np.array([[sb, nb - sb], [sa, na - sa]], dtype=float))
        st_table = StratifiedTable(tables)
        test = st_table.test_null_odds(correction=False)
        lo, hi = st_table.oddsratio_pooled_confint(alpha=0.05)
        cases.append(
            dict(
                strata=[[list(a), list(b)] for a, b in strata],
                alpha=0.05,
                used=len(tables),
                odds_ratio=f(st_table.oddsratio_pooled),
                ci_low=f(lo),
                ci_high=f(hi),
                statistic=f(test.statistic),
                p_value=f(test.pvalue),
            )
        )
    return write(
        "stratified.json",
        "statsmodels StratifiedTable([[b succ, b fail], [a succ, a fail]] per stratum): "
        "oddsratio_pooled, oddsratio_pooled_confint(alpha), test_null_odds(correction=False)",
        cases,
    )


# --------------------------------------------------------------------------
# 8. Mann-Whitney U
# --------------------------------------------------------------------------


def gen_mannwhitney():
    inputs = []
    inputs.append(([1, 2, 2, 3, 3, 3, 4], [2, 3, 3, 4, 4, 5, 5, 5]))  # ties
    inputs.append((rng.integers(0, 5, 40), rng.integers(1, 6, 35)))  # heavy ties
    inputs.append(([2.5], [1.0, 3.0, 4.0]))  # n = 1 vs 3
    inputs.append(([1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0, 4.0]))  # identical, p = 1
    inputs.append(([1.0, 2.0, 3.0, 4.0, 5.0], [6.0, 7.0, 8.0, 9.0, 10.0]))  # separation
    inputs.append((np.arange(20, 40, dtype=float), np.arange(0, 15, dtype=float)))  # separation
    inputs.append((rng.normal(0.0, 1.0, 500), rng.normal(0.1, 1.0, 500)))  # n = 500
    inputs.append((rng.normal(0.0, 1.0, 500), rng.normal(0.5, 1.0, 450)))
    inputs.append((rng.exponential(1.0, 30), rng.exponential(2.0, 25)))
    inputs.append(([0.1, 0.4, 0.35, 0.8], [0.2, 0.25, 0.9]))
    inputs.append(([5, 5, 5, 6], [5, 5, 6, 6, 6]))
    inputs.append((rng.normal(-3.0, 1.0, 10), rng.normal(-3.0, 4.0, 12)))
    inputs.append(([1.0, 1.0, 2.0], [1.0, 2.0, 2.0]))

    cases = []
    for a, b in inputs:
        a = np.asarray(a, dtype=float)
        b = np.asarray(b, dtype=float)
        r = st.mannwhitneyu(a, b, alternative="two-sided", method="asymptotic", use_continuity=True)
        cases.append(dict(a=flist(a), b=flist(b), u=f(r.statistic), p_value=f(r.pvalue)))
    return write(
        "mannwhitney.json",
        "scipy.stats.mannwhitneyu(alternative='two-sided', method='asymptotic', use_continuity=True)",
        cases,
    )


# --------------------------------------------------------------------------
# 9. Bayesian beta-binomial
# --------------------------------------------------------------------------


def _range_and_points(*dists):
    """Integrate over all of [0, 1] (every pdf is bounded since a, b >= 1), but
    hand quad breakpoints at the union of the posteriors' 1e-12 .. 1-1e-12 ppf
    ranges plus interior quantiles, so very peaked posteriors are resolved.
    Truncating to the ppf range instead would drop ~1e-12 of mass."""
    qs = [1e-12, 1e-6, 0.001, 0.01, 0.1, 0.5, 0.9, 0.99, 0.999, 1 - 1e-6, 1 - 1e-12]
    pts = sorted({float(q) for d in dists for q in d.ppf(qs)})
    pts = [p for p in pts if 0.0 < p < 1.0]
    return 0.0, 1.0, pts


def _quad(fun, lo, hi, pts):
    val, err = scipy.integrate.quad(
        fun, lo, hi, epsabs=1e-13, epsrel=1e-12, limit=500, points=pts or None
    )
    return val, err


def bayes_exact(sa, na, sb, nb):
    # Reflection p -> 1 - p maps (A, B) to (B', A') with failures as successes
    # and leaves P(pB > pA) and both losses unchanged. Integrating near 0 is
    # more accurate than near 1 (sf/x cancellation), so reflect when the
    # posteriors sit in the upper half (e.g. 998/1000 vs 1000/1000 is then
    # computed exactly like 0/1000 vs 2/1000).
    if (1 + sa) / (2 + na) + (1 + sb) / (2 + nb) > 1.0:
        prob, loss_a, loss_b, _ = _bayes_quad(nb - sb, nb, na - sa, na)
        return prob, loss_a, loss_b, (1 + sa, 1 + na - sa, 1 + sb, 1 + nb - sb)
    return _bayes_quad(sa, na, sb, nb)


def _bayes_quad(sa, na, sb, nb):
    aa, ba = 1 + sa, 1 + na - sa
    ab, bb = 1 + sb, 1 + nb - sb
    A, B = st.beta(aa, ba), st.beta(ab, bb)
    # size-biased posteriors: E[p 1{p > x}] = mean * sf_{Beta(a+1, b)}(x)
    Ap, Bp = st.beta(aa + 1, ba), st.beta(ab + 1, bb)
    mA, mB = aa / (aa + ba), ab / (ab + bb)
    lo, hi, pts = _range_and_points(A, B)

    # P(pB > pA) = int f_A(x) sf_B(x) dx
    prob, _ = _quad(lambda x: A.pdf(x) * B.sf(x), lo, hi, pts)
    # E[(pB - pA)^+] = int f_A(x) (mB sf_{B+}(x) - x sf_B(x)) dx
    loss_a, _ = _quad(lambda x: A.pdf(x) * (mB * Bp.sf(x) - x * B.sf(x)), lo, hi, pts)
    # E[(pA - pB)^+] = int f_B(y) (mA sf_{A+}(y) - y sf_A(y)) dy
    loss_b, _ = _quad(lambda y: B.pdf(y) * (mA * Ap.sf(y) - y * A.sf(y)), lo, hi, pts)

    # internal consistency: loss_a - loss_b = E[pB - pA]
    assert abs((loss_a - loss_b) - (mB - mA)) < 1e-9, (loss_a, loss_b, mB - mA)
    # cross-check P(pB > pA) with the other orientation: 1 - int f_B(y) sf_A(y) dy
    prob2, _ = _quad(lambda y: B.pdf(y) * A.sf(y), lo, hi, pts)
    assert abs(prob - (1 - prob2)) < 1e-9, (prob, 1 - prob2)
    return prob, loss_a, loss_b, (aa, ba, ab, bb)


def bayes_mc_check(prob, loss_a, loss_b, params, draws=2_000_000):
    aa, ba, ab, bb = params
    pa = rng.beta(aa, ba, draws)
    pb = rng.beta(ab, bb, draws)
    d = pb - pa
    floor = 1.0 / draws  # keep the tolerance non-zero for near-certain cases
    p_mc = np.mean(d > 0)
    se_p = math.sqrt(max(prob * (1 - prob), 0.0) / draws)
    assert abs(p_mc - prob) <= 4 * se_p + floor, ("prob", prob, p_mc, se_p)
    la = np.maximum(d, 0.0)
    lb = np.maximum(-d, 0.0)
    se_a = np.std(la) / math.sqrt(draws)
    se_b = np.std(lb) / math.sqrt(draws)
    assert abs(la.mean() - loss_a) <= 4 * se_a + 1e-12, ("loss_a", loss_a, la.mean(), se_a)
    assert abs(lb.mean() - loss_b) <= 4 * se_b + 1e-12, ("loss_b", loss_b, lb.mean(), se_b)
    return (p_mc - prob) / max(se_p, floor), (la.mean() - loss_a) / se_a if se_a else 0.0


def gen_bayes():
    specs = [
        (0, 0, 0, 0),  # identical uniform posteriors: 0.5
        (0, 10, 10, 10),  # near-certain B
        (10, 10, 0, 10),  # near-certain A
        (30, 100, 30, 100),  # equal data: 0.5
        (90, 100, 95, 100),
        (900, 1000, 920, 1000),  # seed example
        (5000, 10000, 5100, 10000),  # large
        (1, 2, 0, 1),
        (3, 20, 7, 25),
        (0, 1000, 2, 1000),  # near-zero rates
        (998, 1000, 1000, 1000),  # near-one rates
        (120, 1000, 12, 100),
        (48, 1000, 51, 1000),
        (50000, 100000, 50400, 100000),  # very peaked
    ]
    cases = []
    for sa, na, sb, nb in specs:
        prob, la, lb, params = bayes_exact(sa, na, sb, nb)
        bayes_mc_check(prob, la, lb, params)
        cases.append(
            dict(
                successes_a=sa,
                trials_a=na,
                successes_b=sb,
                trials_b=nb,
                prob_b_beats_a=f(prob),
                expected_loss_a=f(la),
                expected_loss_b=f(lb),
            )
        )
    # symmetric cases must be exactly symmetric up to integration error
    assert abs(cases[0]["prob_b_beats_a"] - 0.5) < 1e-12
    assert abs(cases[3]["prob_b_beats_a"] - 0.5) < 1e-10
    return write(
        "bayes.json",
        "scipy.integrate.quad over scipy.stats.beta posteriors (Beta(1,1) prior), "
        "cross-checked by 2e6-draw Monte Carlo",
        cases,
    )


# --------------------------------------------------------------------------
# 10. multiple-testing corrections
# --------------------------------------------------------------------------


def gen_multiple():
    inputs = [
        [0.01, 0.04, 0.03, 0.005],  # unsorted
        [0.04],  # single
        [0.8],  # single, not significant
        [0.02, 0.02, 0.02],  # ties
        [0.01, 0.03, 0.01, 0.03, 0.2],  # ties, unsorted
        [0.5, 0.9, 0.99, 1.0],  # near 1 -> capped at 1
        [0.3, 0.001, 0.6, 0.0002, 0.04, 0.7],
        [0.0, 0.05, 0.5],  # exact zero
        [1e-10, 1e-8, 0.049, 0.051],
        [0.45, 0.3, 0.2, 0.15, 0.1],  # bonferroni caps, holm step-down non-monotone input
        [0.011, 0.012, 0.013, 0.014, 0.015, 0.016, 0.017, 0.018, 0.019, 0.02],
        flist(np.round(rng.uniform(0.0, 0.2, 8), 6)),
        flist(np.round(rng.uniform(0.0, 1.0, 15), 6)),
    ]
    cases = []
    for p in inputs:
        pa = np.asarray(p, dtype=float)
        bonf = multipletests(pa, method="bonferroni")[1]
        holm = multipletests(pa, method="holm")[1]
        assert (bonf <= 1).all() and (holm <= 1).all() and (holm <= bonf + 1e-15).all()
        cases.append(dict(p_values=flist(pa), bonferroni=flist(bonf), holm=flist(holm)))
    return write("multiple.json", "statsmodels.stats.multitest.multipletests(method='bonferroni'|'holm')", cases)


# --------------------------------------------------------------------------


# --------------------------------------------------------------------------
# 12. Wilcoxon signed-rank, classification scores, drift (their own generator,
#     so the fixtures above keep their bytes)
# --------------------------------------------------------------------------

rng2 = np.random.default_rng(20261201)


def gen_wilcoxon():
    inputs = []
    inputs.append(([1.83, 0.50, 1.62, 2.48, 1.68, 1.88, 1.55, 3.06, 1.30],
                   [0.878, 0.647, 0.598, 2.05, 1.06, 1.29, 1.06, 3.14, 1.29]))  # scipy docs
    inputs.append((rng2.normal(5.0, 1.0, 20), rng2.normal(5.0, 1.0, 20)))  # exact, no effect
    inputs.append((rng2.normal(5.5, 1.0, 30), rng2.normal(5.0, 1.0, 30)))  # exact, effect
    inputs.append((rng2.normal(5.0, 1.0, 50), rng2.normal(4.7, 1.0, 50)))  # exact at the limit
    inputs.append((rng2.normal(5.0, 1.0, 51), rng2.normal(4.7, 1.0, 51)))  # approx just past it
    inputs.append((np.abs(rng2.normal(0, 3.0, 400)), np.abs(rng2.normal(0, 2.5, 400))))  # |errors|
    inputs.append((rng2.integers(0, 6, 60).astype(float), rng2.integers(0, 6, 60).astype(float)))  # ties + zeros
    inputs.append(([1.0, 2.0, 3.0, 4.0, 5.0], [0.0, 0.0, 0.0, 0.0, 0.0]))  # all positive
    inputs.append(([3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0], [3.0, 2.0, 2.0, 3.0, 5.0, 8.0, 4.0]))  # zeros, ties
    inputs.append((rng2.exponential(2.0, 200), rng2.exponential(2.4, 200)))
    inputs.append(([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]))  # ties, n=10
    inputs.append((rng2.integers(0, 4, 20).astype(float), rng2.integers(0, 4, 20).astype(float)))

    cases = []
    for x, y in inputs:
        x = np.asarray(x, dtype=float)
        y = np.asarray(y, dtype=float)
        d = x - y
        nz = d[d != 0]
        ties = len(np.unique(np.abs(nz))) < len(nz)
        case = dict(x=flist(x), y=flist(y), n=int(len(nz)))
        ra = st.wilcoxon(x, y, zero_method="wilcox", correction=False, alternative="two-sided", method="approx")
        case["statistic"] = f(ra.statistic)
        case["p_approx"] = f(ra.pvalue)
        case["z_abs"] = f(abs(ra.zstatistic))
        if not ties and len(nz) == len(d):
            re = st.wilcoxon(x, y, zero_method="wilcox", correction=False, alternative="two-sided", method="exact")
            case["p_exact"] = f(re.pvalue)
        rauto = st.wilcoxon(x, y, zero_method="wilcox", correction=False, alternative="two-sided")
        case["p_auto"] = f(rauto.pvalue)
        case["ties_or_zeros"] = bool(ties or len(nz) < len(d))
        cases.append(case)
    return write(
        "wilcoxon.json",
        "scipy.stats.wilcoxon(x, y, zero_method='wilcox', correction=False, alternative='two-sided', "
        "method='approx' | 'exact' (only without ties) | default 'auto')",
        cases,
        min_cases=MIN_CASES_NEW,
    )


def gen_classification():
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    cases = []
    for k, n, skill in [(2, 50, 0.8), (3, 200, 0.7), (4, 500, 0.6), (5, 40, 0.3), (4, 30, 0.9), (3, 12, 0.0)]:
        truth = rng2.integers(0, k, n)
        right = rng2.random(n) < skill
        pred = np.where(right, truth, rng2.integers(0, k, n))
        if k == 5:
            pred = np.where(pred == 4, 3, pred)  # a class never predicted: zero_division
        cm = confusion_matrix(truth, pred, labels=list(range(k)))
        p, r, f1, sup = precision_recall_fscore_support(truth, pred, labels=list(range(k)), zero_division=0)
        mp, mr, mf, _ = precision_recall_fscore_support(truth, pred, labels=list(range(k)), average="macro", zero_division=0)
        right = int(np.sum(truth == pred))
        lo, hi = proportion_confint(right, n, alpha=0.05, method="wilson")
        cases.append(dict(
            k=k, truth=[int(t) for t in truth], predicted=[int(q) for q in pred],
            counts=[[int(c) for c in row] for row in cm],
            precision=flist(p), recall=flist(r), f1=flist(f1), support=[int(s) for s in sup],
            macro=[f(mp), f(mr), f(mf)],
            accuracy=f(right / n), accuracy_ci=[f(lo), f(hi)],
        ))
    return write(
        "classification.json",
        "sklearn.metrics.confusion_matrix(labels=range(k)), "
        "precision_recall_fscore_support(labels=range(k), zero_division=0) and average='macro'; "
        "accuracy's Wilson 95% interval from statsmodels proportion_confint(method='wilson')",
        cases,
        min_cases=MIN_CASES_NEW,
    )


PSI_EMPTY_SHARE = 1e-4


def psi_js(expected, actual):
    """PSI (empty bins at 1e-4) and scipy's Jensen-Shannon distance of two count vectors."""
    from scipy.spatial.distance import jensenshannon

    e = np.asarray(expected, dtype=float)
    a = np.asarray(actual, dtype=float)
    pe, pa = e / e.sum(), a / a.sum()
    se, sa = np.maximum(pe, PSI_EMPTY_SHARE), np.maximum(pa, PSI_EMPTY_SHARE)
    return f(np.sum((sa - se) * np.log(sa / se))), f(jensenshannon(pe, pa))


LOG_BUCKET = math.log1p(0.01)
KEY_OFFSET = 1 << 32


def bucket_key(x):
    """The key of x's 1%-wide log bucket, ordered like the values (see value_drift.json)."""
    if x == 0:
        return 0
    b = math.floor(math.log(abs(x)) / LOG_BUCKET)
    return KEY_OFFSET + b if x > 0 else -(KEY_OFFSET + b)


def value_drift_ref(expected, actual):
    """(psi, js_distance, expected bin counts, actual bin counts) over the expected's deciles."""
    ke = np.sort(np.array([bucket_key(float(x)) for x in expected], dtype=np.int64))
    ka = np.array([bucket_key(float(x)) for x in actual], dtype=np.int64)
    n = len(ke)
    q = np.array([ke[-(-i * n // 10) - 1] for i in range(1, 10)], dtype=np.int64)
    for i in range(1, 10):
        if (i * n) % 10:
            # Away from exact ties the cut is numpy's inverted-CDF quantile.
            assert q[i - 1] == np.quantile(ke, i / 10, method="inverted_cdf"), (i, n)
    be = np.bincount(np.digitize(ke, q, right=True), minlength=10)
    ba = np.bincount(np.digitize(ka, q, right=True), minlength=10)
    psi, js = psi_js(be, ba)
    return psi, js, [int(c) for c in be], [int(c) for c in ba]


def gen_drift():
    from scipy.spatial.distance import jensenshannon

    eps = 1e-4
    cases = []
    inputs = [
        ([500, 500], [480, 520]),
        ([900, 100], [600, 400]),
        ([100, 200, 300, 400], [400, 300, 200, 100]),
        ([10, 0, 5], [3, 4, 0]),  # empty bins on both sides
        (rng2.integers(0, 1000, 10).tolist(), rng2.integers(0, 1000, 10).tolist()),
        ([1, 1, 1, 1], [2, 2, 2, 2]),
    ]
    for e, a in inputs:
        e = np.asarray(e, dtype=float)
        a = np.asarray(a, dtype=float)
        pe, pa = e / e.sum(), a / a.sum()
        se, sa = np.maximum(pe, eps), np.maximum(pa, eps)
        psi = float(np.sum((sa - se) * np.log(sa / se)))
        js = float(jensenshannon(pe, pa))
        cases.append(dict(expected=flist(e), actual=flist(a), psi=f(psi), js_distance=f(js)))
    return write(
        "drift.json",
        "PSI = sum((a-e) ln(a/e)) on shares with empty bins at 1e-4 (numpy); "
        "scipy.spatial.distance.jensenshannon(p, q) (natural log)",
        cases,
        min_cases=MIN_CASES_NEW,
    )


rng4 = np.random.default_rng(20261220)


def gen_value_drift():
    inputs = [
        ("same_distribution", rng4.normal(100.0, 10.0, 500), rng4.normal(100.0, 10.0, 400)),
        ("shifted_mean", rng4.normal(100.0, 10.0, 500), rng4.normal(105.0, 10.0, 500)),
        ("wider", rng4.normal(100.0, 10.0, 400), rng4.normal(100.0, 20.0, 400)),
        ("around_zero", rng4.normal(0.0, 5.0, 300), rng4.normal(1.0, 5.0, 300)),
        ("ties_and_zeros", rng4.integers(0, 5, 200).astype(float), rng4.integers(0, 7, 150).astype(float)),
        ("heavy_tails", rng4.exponential(200.0, 1000), rng4.exponential(260.0, 1000)),
        ("tiny", rng4.normal(10.0, 1.0, 7), rng4.normal(10.0, 1.0, 5)),
        ("disjoint", rng4.uniform(10.0, 20.0, 100), rng4.uniform(30.0, 40.0, 100)),
    ]
    cases = []
    for name, e, a in inputs:
        psi, js, be, ba = value_drift_ref(e, a)
        cases.append(dict(name=name, expected=flist(e), actual=flist(a), psi=psi, js_distance=js,
                          expected_bins=be, actual_bins=ba))
    return write(
        "value_drift.json",
        "numpy sort/digitize(right=True) of log-bucket keys at the expected's inverted-CDF deciles; "
        "PSI with empty bins at 1e-4; scipy.spatial.distance.jensenshannon (natural log)",
        cases,
        min_cases=MIN_CASES_NEW,
    )


# --------------------------------------------------------------------------
# 13. Shadow comparisons end to end (their own generator, so the fixtures above
#     keep their bytes)
# --------------------------------------------------------------------------

rng3 = np.random.default_rng(20261215)


def clear_margin(errors, by):
    """A margin near `by` at least 2% away from every error's magnitude."""
    neg = -np.asarray(errors)
    while np.any(np.abs(neg - by) <= 0.02 * by):
        by *= 1.037
    return float(by)


def regression_case(name, truth, primary, shadow, absolute, relative, by):
    from sklearn.metrics import (
        mean_absolute_error,
        mean_absolute_percentage_error,
        mean_squared_error,
    )

    truth = np.asarray(truth, dtype=float)
    primary = np.asarray(primary, dtype=float)
    shadow = np.asarray(shadow, dtype=float)
    ep, es = np.abs(primary - truth), np.abs(shadow - truth)
    nz = truth != 0
    case = dict(
        name=name,
        kind="regression",
        truth=flist(truth),
        primary=flist(primary),
        shadow=flist(shadow),
        absolute=absolute,
        relative=relative,
        agreement=f(np.mean(np.isclose(shadow, primary, rtol=relative, atol=absolute))),
        primary_mae=f(mean_absolute_error(truth, primary)),
        shadow_mae=f(mean_absolute_error(truth, shadow)),
        primary_rmse=f(math.sqrt(mean_squared_error(truth, primary))),
        shadow_rmse=f(math.sqrt(mean_squared_error(truth, shadow))),
        primary_mape=f(mean_absolute_percentage_error(truth[nz], primary[nz])),
        shadow_mape=f(mean_absolute_percentage_error(truth[nz], shadow[nz])),
        mape_skipped=int(np.sum(~nz)),
    )
    d = ep - es
    if np.std(d) > 0:
        t = st.ttest_rel(ep, es)
        case["t"] = f(t.statistic)
        case["t_p_value"] = f(t.pvalue)
    if np.any(d != 0):
        w = st.wilcoxon(ep, es, zero_method="wilcox", correction=False, alternative="two-sided")
        case["wilcoxon_statistic"] = f(w.statistic)
        case["wilcoxon_p_value"] = f(w.pvalue)
    case["psi"], case["js_distance"], _, _ = value_drift_ref(primary, shadow)
    by = clear_margin(shadow - truth, by)
    case["underestimate_by"] = by
    case["underestimates"] = int(np.sum(shadow - truth < -by))
    return case


def version_detail(truth, pred, declared):
    """Confusion matrix, per-class scores and accuracy of one version (see the docstring)."""
    from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

    keep = np.isin(truth, declared) if declared is not None else np.ones(len(truth), dtype=bool)
    t, p = truth[keep], pred[keep]
    labels = sorted(set(t.tolist()) | set(p.tolist()))
    assert labels == list(np.unique(np.concatenate([t, p]))), "sklearn's default labels"
    cm = confusion_matrix(t, p, labels=labels)
    pr, rc, f1, sup = precision_recall_fscore_support(t, p, zero_division=0)
    mp, mr, mf, _ = precision_recall_fscore_support(t, p, average="macro", zero_division=0)
    right = int(np.sum(t == p))
    lo, hi = proportion_confint(right, len(t), alpha=0.05, method="wilson")
    return dict(
        classes=labels,
        confusion=[[int(c) for c in row] for row in cm],
        precision=flist(pr),
        recall=flist(rc),
        f1=flist(f1),
        support=[int(x) for x in sup],
        macro=[f(mp), f(mr), f(mf)],
        accuracy=f(accuracy_score(t, p)),
        accuracy_ci=[f(lo), f(hi)],
        unknown_labels=int(np.sum(~keep)),
    )


def classification_case(name, truth, primary, shadow, declared=None):
    from sklearn.metrics import accuracy_score, confusion_matrix

    truth, primary, shadow = (np.asarray([str(v) for v in a]) for a in (truth, primary, shadow))
    pc, sc = primary == truth, shadow == truth
    b, c = int(np.sum(pc & ~sc)), int(np.sum(~pc & sc))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = mcnemar([[int(np.sum(pc & sc)), b], [c, int(np.sum(~pc & ~sc))]], exact=False, correction=True)
    predicted = sorted(set(primary.tolist()) | set(shadow.tolist()))
    counts = np.array([[int(np.sum(primary == k)) for k in predicted],
                       [int(np.sum(shadow == k)) for k in predicted]])
    chi = st.chi2_contingency(counts)
    psi, js = psi_js(counts[0], counts[1])
    case = dict(
        name=name,
        kind="classification",
        truth=truth.tolist(),
        primary=primary.tolist(),
        shadow=shadow.tolist(),
        agreement=f(np.mean(primary == shadow)),
        primary_accuracy=f(accuracy_score(truth, primary)),
        shadow_accuracy=f(accuracy_score(truth, shadow)),
        mcnemar_b=b,
        mcnemar_c=c,
        mcnemar_p_value=f(m.pvalue) if b + c > 0 else 1.0,
        predicted_classes=predicted,
        transitions=[[int(x) for x in row] for row in confusion_matrix(primary, shadow, labels=predicted)],
        chi2_statistic=f(chi.statistic),
        chi2_p_value=f(chi.pvalue),
        chi2_dof=int(chi.dof),
        psi=psi,
        js_distance=js,
        primary_detail=version_detail(truth, primary, declared),
        shadow_detail=version_detail(truth, shadow, declared),
    )
    if declared is not None:
        case["declared"] = list(declared)
    return case


def gen_shadow_pairs():
    cases = []
    # Test time (ms): v2 about three times closer to the truth than v1.
    truth = rng3.normal(120.0, 25.0, 400)
    cases.append(regression_case(
        "three_times_closer", truth, truth + rng3.normal(0, 6.0, 400), truth + rng3.normal(0, 2.0, 400),
        0.0, 0.05, 5.0))
    # A much worse candidate.
    truth = rng3.normal(120.0, 25.0, 400)
    cases.append(regression_case(
        "much_worse", truth, truth + rng3.normal(0, 2.0, 400), truth + rng3.normal(-3.0, 8.0, 400),
        0.0, 0.05, 10.0))
    # Slightly better, small: Wilcoxon's exact distribution (no ties, n <= 50).
    truth = rng3.normal(50.0, 10.0, 30)
    cases.append(regression_case(
        "small_exact", truth, truth + rng3.normal(0, 3.0, 30), truth + rng3.normal(0, 2.5, 30),
        0.0, 0.05, 2.0))
    # Yields in percent with zeros (MAPE skips them) and an absolute tolerance.
    truth = np.clip(np.round(rng3.normal(85.0, 20.0, 600), 1), 0.0, 100.0)
    truth[:25] = 0.0
    cases.append(regression_case(
        "with_zero_truths", truth, truth + rng3.normal(0, 4.0, 600), truth + rng3.normal(0.5, 3.5, 600),
        0.5, 0.01, 3.0))
    # Many instances (under the sample size), heavy tails.
    truth = rng3.exponential(200.0, 3000)
    cases.append(regression_case(
        "heavy_tails", truth, truth + rng3.standard_t(3, 3000) * 10.0, truth + rng3.standard_t(3, 3000) * 9.0,
        1.0, 0.02, 25.0))
    # The shadow is closer on most instances and far off on two: the t-test sees no
    # difference, Wilcoxon does.
    truth = np.full(32, 100.0) + np.arange(32) * 0.5
    primary = truth + 2.0
    primary[30:] = truth[30:]
    shadow = truth + 1.0
    shadow[30:] = truth[30:] + 10.0
    cases.append(regression_case("t_and_wilcoxon_disagree", truth, primary, shadow, 0.0, 0.05, 0.5))
    # Classification: yield pass/fail.
    truth = (rng3.random(500) < 0.9).astype(int)
    primary = np.where(rng3.random(500) < 0.88, truth, 1 - truth)
    shadow = np.where(rng3.random(500) < 0.95, truth, 1 - truth)
    cases.append(classification_case("yield_pass_fail", truth, primary, shadow))
    truth = rng3.integers(0, 4, 300)
    primary = np.where(rng3.random(300) < 0.7, truth, rng3.integers(0, 4, 300))
    shadow = np.where(rng3.random(300) < 0.68, truth, rng3.integers(0, 4, 300))
    cases.append(classification_case("four_bins", truth, primary, shadow))
    # The die bins with a model that declares them: some labels name no declared bin (a typo
    # upstream) and are reported, not counted, in the per-version detail.
    truth = rng3.choice(["pass", "leakage", "speed", "edge"], 400, p=[0.7, 0.1, 0.1, 0.1])
    primary = np.where(rng3.random(400) < 0.85, truth, rng3.choice(["pass", "leakage", "speed", "edge"], 400))
    shadow = np.where(rng3.random(400) < 0.9, truth, rng3.choice(["pass", "leakage", "speed", "edge"], 400))
    truth = np.where(rng3.random(400) < 0.05, "leakgae", truth)
    cases.append(classification_case("bins_with_unknown_labels", truth, primary, shadow,
                                     declared=["pass", "leakage", "speed", "edge"]))
    # A candidate that calls far more dies "pass": its prediction distribution has moved.
    truth = rng3.integers(0, 4, 300)
    primary = np.where(rng3.random(300) < 0.8, truth, rng3.integers(0, 4, 300))
    shadow = np.where(rng3.random(300) < 0.5, 0, primary)
    cases.append(classification_case("shifted_to_pass", truth, primary, shadow))
    return write(
        "shadow_pairs.json",
        "numpy isclose; sklearn mean_absolute_error, mean_squared_error, "
        "mean_absolute_percentage_error, accuracy_score; scipy ttest_rel, wilcoxon; "
        "statsmodels mcnemar, proportion_confint(method='wilson'); sklearn confusion_matrix, "
        "precision_recall_fscore_support; scipy chi2_contingency, jensenshannon; PSI and value "
        "bins as value_drift.json",
        cases,
        min_cases=MIN_CASES_NEW,
    )



# --------------------------------------------------------------------------
# 13. A/B/n (k arms against a control) and the mSPRT's confidence sequences
#     (their own generator, so the fixtures above keep their bytes)
# --------------------------------------------------------------------------

rng5 = np.random.default_rng(20261210)


def abn_adjust(case, p, alpha):
    for method in ("holm", "bonferroni"):
        reject, adjusted, _, _ = multipletests(np.asarray(p), alpha=alpha, method=method)
        case[method] = flist(adjusted)
        case[f"reject_{method}"] = [bool(r) for r in reject]
    return case


def abn_means_case(name, arms, alpha=0.05):
    arms = [np.asarray(a, dtype=float) for a in arms]
    control = arms[0]
    t, p, lo, hi = [], [], [], []
    for v in arms[1:]:
        r = st.ttest_ind(v, control, equal_var=False)
        ci = r.confidence_interval(confidence_level=0.95)
        t.append(f(r.statistic))
        p.append(f(r.pvalue))
        lo.append(f(ci.low))
        hi.append(f(ci.high))
    case = dict(name=name, kind="mean", alpha=alpha, arms=[flist(a) for a in arms],
                t=t, p_values=p, ci_low=lo, ci_high=hi)
    return abn_adjust(case, p, alpha)


def abn_proportions_case(name, counts, alpha=0.05):
    sc, nc = counts[0]
    z, p = [], []
    for s_v, n_v in counts[1:]:
        zz, pp = proportions_ztest([s_v, sc], [n_v, nc])
        z.append(f(zz))
        p.append(f(pp))
    case = dict(name=name, kind="proportion", alpha=alpha,
                successes=[c[0] for c in counts], trials=[c[1] for c in counts], z=z, p_values=p)
    return abn_adjust(case, p, alpha)


def gen_abn():
    cases = []
    # Revenue per request: one variant better, one equal, one worse.
    cases.append(abn_means_case("revenue_three_variants", [
        rng5.exponential(2.0, 400), rng5.exponential(2.4, 380), rng5.exponential(2.0, 410),
        rng5.exponential(1.7, 395)]))
    # Test time with unequal spreads and sizes; five variants, small effects.
    cases.append(abn_means_case("test_time_five_variants", [
        rng5.normal(120.0, 10.0, 200)] + [rng5.normal(120.0 + d, s, n) for d, s, n in
                                          ((0.0, 12.0, 150), (-3.0, 8.0, 220), (1.0, 15.0, 90),
                                           (-6.0, 10.0, 200), (0.5, 9.0, 300))]))
    # Two arms: Holm and Bonferroni agree with the unadjusted test.
    cases.append(abn_means_case("two_arms", [rng5.normal(0.0, 1.0, 50), rng5.normal(0.6, 1.0, 60)]))
    # Nothing differs: nothing should be rejected.
    cases.append(abn_means_case("null_four_variants",
                                [rng5.normal(5.0, 2.0, 120) for _ in range(5)], alpha=0.10))
    # Conversion: one variant up, one flat, one down.
    cases.append(abn_proportions_case("conversion_three_variants",
                                      [(300, 2000), (372, 2000), (305, 1990), (250, 2010)]))
    # Accuracy with many arms and a strict alpha.
    cases.append(abn_proportions_case("accuracy_six_variants",
                                      [(880, 1000), (905, 1000), (884, 1000), (861, 1000),
                                       (930, 1000), (879, 1000), (890, 1000)], alpha=0.01))
    return write("abn.json", "scipy.stats.ttest_ind(equal_var=False) + confidence_interval; "
                 "statsmodels proportions_ztest; statsmodels multipletests(method='holm'|'bonferroni')",
                 cases, min_cases=MIN_CASES_NEW)


def cs_by_roots(d, v, tau, alpha):
    tau2 = tau * tau

    def excess(theta):
        ln_lambda = 0.5 * math.log(v / (v + tau2)) + tau2 * (d - theta) ** 2 / (2 * v * (v + tau2))
        return ln_lambda - math.log(1.0 / alpha)

    assert excess(d) < 0
    span = 1.0
    while excess(d + span) < 0:
        span *= 2.0
    lo = scipy.optimize.brentq(excess, d - span, d, xtol=1e-15, rtol=4 * np.finfo(float).eps, maxiter=500)
    hi = scipy.optimize.brentq(excess, d, d + span, xtol=1e-15, rtol=4 * np.finfo(float).eps, maxiter=500)
    ln_lambda0 = 0.5 * math.log(v / (v + tau2)) + tau2 * d * d / (2 * v * (v + tau2))
    return lo, hi, min(1.0, math.exp(-ln_lambda0))


def gen_confidence_sequence():
    cases = []
    for d, v, tau, alpha in ((0.0, 1e-4, 0.05, 0.05), (0.02, 4e-4, 0.05, 0.05),
                             (-0.3, 0.01, 0.2, 0.10), (1.5, 2.5, 1.0, 0.01),
                             (120.0, 900.0, 5.0, 0.05), (0.001, 1e-7, 0.01, 0.05)):
        lo, hi, p = cs_by_roots(d, v, tau, alpha)
        cases.append(dict(kind="bare", diff=f(d), variance=f(v), tau=tau, alpha=alpha,
                          ci_low=f(lo), ci_high=f(hi), p_value=f(p)))
    for n_a, n_b, shift, tau, alpha in ((40, 35, 0.0, 0.5, 0.05), (500, 450, 0.3, 0.2, 0.05),
                                       (2000, 2100, -0.1, 0.1, 0.01)):
        a = rng5.exponential(2.0, n_a)
        b = rng5.exponential(2.0, n_b) + shift
        d = float(np.mean(b) - np.mean(a))
        v = float(np.var(a, ddof=1) / n_a + np.var(b, ddof=1) / n_b)
        lo, hi, p = cs_by_roots(d, v, tau, alpha)
        cases.append(dict(kind="means", a=flist(a), b=flist(b), tau=tau, alpha=alpha,
                          diff=f(d), ci_low=f(lo), ci_high=f(hi), p_value=f(p)))
    for sa, na, sb, nb, tau, alpha in ((300, 1000, 330, 1000, 0.05, 0.05),
                                       (3000, 10000, 3150, 10000, 0.05, 0.05),
                                       (45, 150, 80, 160, 0.1, 0.10)):
        pa, pb = sa / na, sb / nb
        d, v = pb - pa, pa * (1 - pa) / na + pb * (1 - pb) / nb
        lo, hi, p = cs_by_roots(d, v, tau, alpha)
        cases.append(dict(kind="proportions", successes_a=sa, trials_a=na, successes_b=sb,
                          trials_b=nb, tau=tau, alpha=alpha, diff=f(d), ci_low=f(lo),
                          ci_high=f(hi), p_value=f(p)))
    return write("confidence_sequence.json", "the mSPRT's normal-mixture boundary solved by "
                 "scipy.optimize.brentq (no closed form)", cases, min_cases=MIN_CASES_NEW)


# --------------------------------------------------------------------------
# 17. Rank tests: Mann-Whitney's effect size, a heavy-tailed A/B/n
#     (their own generator, so the fixtures above keep their bytes)
# --------------------------------------------------------------------------

rng6 = np.random.default_rng(20261215)


def mw(a, b):
    r = st.mannwhitneyu(a, b, alternative="two-sided", method="asymptotic", use_continuity=True)
    return f(r.statistic), f(r.pvalue), f(r.statistic / (len(a) * len(b)))


def rank_arms_case(name, arms, alpha=0.05):
    arms = [np.round(np.asarray(a, dtype=float), 2) for a in arms]
    control = arms[0]
    case = dict(kind="arms", name=name, alpha=alpha, arms=[flist(a) for a in arms])
    for test in ("mann_whitney", "welch"):
        stat, p, cl = [], [], []
        for v in arms[1:]:
            if test == "welch":
                r = st.ttest_ind(v, control, equal_var=False)
                stat.append(f(r.statistic))
                p.append(f(r.pvalue))
            else:
                u, pv, c = mw(v, control)
                stat.append(u)
                p.append(pv)
                cl.append(c)
        case[test] = dict(statistic=stat, p_values=p)
        if cl:
            case[test]["common_language"] = cl
        for method in ("holm", "bonferroni"):
            reject, adjusted, _, _ = multipletests(np.asarray(p), alpha=alpha, method=method)
            case[test][method] = flist(adjusted)
            case[test][f"reject_{method}"] = [bool(x) for x in reject]
    return case


def gen_rank_tests():
    cases = []
    pairs = [
        ("normal_shift", rng6.normal(0.3, 1.0, 800), rng6.normal(0.0, 1.0, 900)),
        ("lognormal_heavy_tail", rng6.lognormal(0.2, 2.0, 300), rng6.lognormal(0.0, 2.0, 280)),
        ("rounded_ties", np.round(rng6.exponential(3.0, 400)), np.round(rng6.exponential(3.3, 410))),
        ("no_shift", rng6.normal(5.0, 2.0, 150), rng6.normal(5.0, 2.0, 170)),
        ("separated", np.arange(50, 70, dtype=float), np.arange(0, 25, dtype=float)),
        ("mostly_zero", np.concatenate([np.zeros(90), rng6.exponential(20.0, 10)]),
         np.concatenate([np.zeros(80), rng6.exponential(20.0, 20)])),
    ]
    for name, a, b in pairs:
        a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
        u, p, cl = mw(a, b)
        cases.append(dict(kind="pair", name=name, a=flist(a), b=flist(b), u=u, p_value=p,
                          common_language=cl))
    # Revenue per request: arm b is shifted up by 3% for nearly everyone, arm c is equal, and
    # the control has three whales (a few huge orders). The whales swamp Welch's t (the
    # control's mean and variance are theirs); the ranks see the shift.
    whales = np.array([20_000.0, 25_000.0, 30_000.0])
    control = np.concatenate([rng6.normal(100.0, 10.0, 597), whales])
    b = rng6.normal(103.0, 10.0, 600)
    c = rng6.normal(100.0, 10.0, 600)
    case = rank_arms_case("revenue_with_whales", [control, b, c])
    welch, ranks = case["welch"], case["mann_whitney"]
    assert welch["holm"][0] > 0.05 and welch["holm"][1] > 0.05, welch
    assert ranks["holm"][0] < 1e-3 and ranks["holm"][1] > 0.05, ranks
    assert ranks["common_language"][0] > 0.5
    cases.append(case)
    return write("rank_tests.json", "scipy.stats.mannwhitneyu(method='asymptotic'), "
                 "scipy.stats.ttest_ind(equal_var=False), statsmodels multipletests(method='holm'|"
                 "'bonferroni')", cases, min_cases=MIN_CASES_NEW)


def main():
    if not os.path.isdir(os.path.join("crates", "stats")):
        sys.exit("run from the repository root (crates/stats not found)")
    os.makedirs(OUT_DIR, exist_ok=True)
    print(
        f"python {sys.version.split()[0]}, numpy {np.__version__}, scipy {scipy.__version__}, "
        f"statsmodels {statsmodels.__version__}"
    )
    mc = gen_mcnemar()
    gen_ztest()
    ss = gen_sample_size()
    gen_ttest_paired()
    gen_welch()
    gen_chi2()
    gen_srm()
    gen_stratified()
    gen_mannwhitney()
    gen_bayes()
    gen_multiple()
    gen_wilcoxon()
    gen_classification()
    gen_drift()
    gen_shadow_pairs()
    gen_value_drift()
    gen_abn()
    gen_confidence_sequence()
    gen_rank_tests()

    seed_ss = next(c for c in ss if c["baseline"] == 0.90 and c["mde"] == 0.02)
    seed_mc = next(c for c in mc if c["b"] == 50 and c["c"] == 30)
    print(f"check: sample size 0.90 -> 0.92 per variant = {seed_ss['per_variant']} (expect 3213)")
    print(f"check: McNemar b=50, c=30 statistic = {seed_mc['statistic']} (expect 4.5125)")
    assert seed_ss["per_variant"] == 3213
    assert abs(seed_mc["statistic"] - 4.5125) < 1e-12


if __name__ == "__main__":
    main()
