#!/usr/bin/env python3
"""Independent labelled transaction streams, for checking fraud detection on traffic that
`trainer synth --patterns` (trainer/src/synth.rs, `patterned`) did not make.

A model, a feature set or a rule policy tuned on the trainer's own generator can learn that
generator's habits instead of fraud. This script makes differently built traffic so that the
same detection can be checked on data it never shaped. Deliberate differences from `patterned`:

* Cards (~rows/30) have Pareto-distributed activity (a few business-like cards with hundreds of
  transactions, many with a handful), not uniform card choice; typical amounts spread over
  5-500 (log-normal), not around 25.
* Cards pay *merchants* (`merchant_id`, one category per merchant) with Zipf-like popularity:
  each card has a few favourite merchants plus occasional new ones; busy merchants see many
  distinct cards per 15 minutes legitimately. Categories are not split into "normal" 0-5 and
  "rare" 6-9: every category is legitimate, each card just uses its own few.
* Time of day is a per-card mixture (lunch/evening peaks, night-shift cards, travellers whose
  hours shift), with weekday weights, so night activity is legitimate for some cards; there is
  no clamp to 06-23.
* Legitimate look-alikes of fraud: shopping clusters (3-8 purchases at different merchants in
  30-90 minutes), dormant cards that come back (daytime, normal amounts), occasional large
  purchases (2-6x typical), ATM withdrawals (round amounts) and transfers above typical.
* Fraud patterns are different sequences: `slow_card_testing` (4-12 tiny amounts minutes
  apart, within an hour, not seconds), `cash_out` (2-6 withdrawals/transfers of 3-15x typical
  within 2 h), `dormant_takeover` (a card silent >= 20 days, 1-4 night-time transactions at new
  merchants), `merchant_ring` (20-60 distinct cards at one quiet merchant within 15 min),
  `amount_outlier` (20-100x, at the card's own merchants and hours), `new_merchant_spree` (5-10
  new merchants in categories the card never used, within 40 min). "Typical" is the median of
  the card's legitimate purchases in the file. Takeover victims are extra cards with a short
  early history; other patterns use existing cards (each once, until the pool runs out at very
  high fraud rates). Files too small for 20 distinct ring cards get no rings.
* Two profiles, `a` and `b`, with different habits, rates and fraud mix, to tune on one and
  check on the other.

Rows are in arrival order: time order, except ~2% that arrive 10 s-15 min late. `--fraud-rate`
is the share of rows labelled fraud (every row of a multi-row pattern counts). Seeded with
numpy's PCG64: the same arguments give a byte-identical file.

    .venv/bin/python tools/fraud_streams.py --rows 100000 --fraud-rate 0.01 --seed 1 \\
        --profile a --output /tmp/streams-a.csv
"""

import argparse
import sys
import time

import numpy as np
import pandas as pd

PATTERNS = (
    "slow_card_testing",
    "cash_out",
    "dormant_takeover",
    "merchant_ring",
    "amount_outlier",
    "new_merchant_spree",
)
SLOW, CASH, DORMANT, RING, OUTLIER, SPREE = range(6)

DAY = 86_400
SPAN_DAYS = 30
N_CATEGORIES = 10
FINANCIAL = 8  # ATMs and money-transfer services: where withdrawals and transfers happen

# Category meanings (only for the amount factors): 0 grocery, 1 fuel, 2 cafe/restaurant,
# 3 clothing, 4 online retail, 5 travel, 6 electronics, 7 entertainment, 8 financial, 9 health.
PROFILES = {
    "a": dict(
        typical_median=35.0,
        typical_sigma=0.9,
        row_sigma=(0.25, 0.55),
        cat_pop=[0.20, 0.10, 0.16, 0.12, 0.12, 0.04, 0.06, 0.08, 0.07, 0.05],
        cat_factor=[1.0, 1.4, 0.5, 1.3, 0.9, 2.6, 2.2, 0.7, 1.0, 1.2],
        cats_per_card=(3, 6),
        pareto_alpha=1.25,
        max_rate_ratio=60.0,  # the busiest card gets at most this many times the mean rate
        night_share=0.04,
        traveller_share=0.03,
        travel_away=0.35,
        dormant_share=0.03,
        dormant_return_share=0.35,
        evening=(16.5, 21.0),
        lunch=(11.0, 14.0),
        hour_sd=(1.5, 3.0),
        cluster_beta=(1.0, 14.0),
        fav_count=(3, 8),
        fav_share=(0.65, 0.92),
        withdraw_beta=(1.2, 14.0),
        transfer_beta=(0.6, 16.0),
        weekday=[1.0, 0.95, 1.0, 1.05, 1.2, 1.4, 1.1],
        large_prob=0.008,
        merchant_zipf=1.05,
        late_share=0.02,
        fraud_weights=[1, 1, 1, 1, 1, 1],
        test_gap_min=(1.0, 15.0),
        test_amount_power=1.0,
        cashout_withdraw_share=0.7,
        ring_size=(20, 60),
        ring_window_min=(10.0, 15.0),
        spree_window_min=(25.0, 40.0),
        takeover_mult=(2.5, 6.0),
        outlier_log_uniform=False,
        cashout_log_uniform=False,
    ),
    "b": dict(
        typical_median=60.0,
        typical_sigma=0.75,
        row_sigma=(0.35, 0.7),
        cat_pop=[0.12, 0.05, 0.10, 0.08, 0.22, 0.09, 0.10, 0.11, 0.06, 0.07],
        cat_factor=[0.9, 1.2, 0.6, 1.5, 1.1, 3.0, 2.5, 0.8, 1.0, 1.0],
        cats_per_card=(2, 5),
        pareto_alpha=1.6,
        max_rate_ratio=40.0,
        night_share=0.10,
        traveller_share=0.06,
        travel_away=0.45,
        dormant_share=0.05,
        dormant_return_share=0.45,
        evening=(17.5, 22.5),
        lunch=(10.0, 13.5),
        hour_sd=(1.2, 2.6),
        cluster_beta=(1.5, 12.0),
        fav_count=(2, 5),
        fav_share=(0.75, 0.95),
        withdraw_beta=(1.5, 10.0),
        transfer_beta=(1.0, 14.0),
        weekday=[1.15, 1.1, 1.1, 1.1, 1.2, 0.8, 0.6],
        large_prob=0.015,
        merchant_zipf=0.9,
        late_share=0.02,
        fraud_weights=[0.22, 0.12, 0.12, 0.22, 0.12, 0.20],
        test_gap_min=(4.0, 15.0),
        test_amount_power=2.0,  # tiny amounts concentrated near 0.50
        cashout_withdraw_share=0.35,
        ring_size=(20, 45),
        ring_window_min=(6.0, 12.0),
        spree_window_min=(15.0, 40.0),
        takeover_mult=(3.0, 8.0),
        outlier_log_uniform=True,
        cashout_log_uniform=True,
    ),
}


def plan_fraud(rng, target, prof, max_ring):
    """Fraud episodes as (pattern, rows), adding up to exactly `target` rows, each pattern's
    share of rows close to its weight. Rings need distinct cards: at most `max_ring` of them
    (no rings when that is under 20, i.e. for tiny files)."""
    w = np.asarray(prof["fraud_weights"], float)
    if max_ring < prof["ring_size"][0]:
        w[RING] = 0.0
    w /= w.sum()
    sizes = {
        SLOW: (4, 12),
        CASH: (2, 6),
        DORMANT: (1, 4),
        RING: (prof["ring_size"][0], min(prof["ring_size"][1], max(max_ring, prof["ring_size"][0]))),
        OUTLIER: (1, 1),
        SPREE: (5, 10),
    }
    lo = np.array([sizes[p][0] for p in range(6)])
    alloc = np.zeros(6)
    plan = []
    total = 0
    mean = np.array([(sizes[p][0] + sizes[p][1]) / 2 for p in range(6)])
    while total < target:
        remaining = target - total
        fits = (lo <= remaining) & (w > 0)
        deficit = w * target - alloc
        # Mostly a random pattern, in proportion to how far it is below its share; at the end
        # the one furthest below, its episode cut to fit (so small files stay balanced too).
        cand = fits & (deficit >= mean / 2)
        n_max = remaining
        if cand.any():
            d = np.where(cand, deficit, 0.0)
            p = int(rng.choice(6, p=d / d.sum()))
        else:
            p = int(np.argmax(np.where(fits, deficit, -np.inf)))
            n_max = min(remaining, max(sizes[p][0], int(np.ceil(deficit[p]))))
        n = int(rng.integers(sizes[p][0], sizes[p][1] + 1))
        n = min(n, n_max)
        plan.append((p, n))
        alloc[p] += n
        total += n
    return plan


class World:
    """Merchants and cards with their habits, plus samplers over them."""

    def __init__(self, rng, prof, n_regular, n_victims, n_merchants):
        self.rng = rng
        self.prof = prof
        self.cat_pop = np.asarray(prof["cat_pop"], float)
        self.cat_pop /= self.cat_pop.sum()
        self.cat_factor = np.asarray(prof["cat_factor"], float)
        self._merchants(n_merchants)
        self._cards(n_regular, n_victims)

    # -- merchants -------------------------------------------------------------------------
    def _merchants(self, m):
        rng = self.rng
        self.n_merchants = m
        cat = rng.choice(N_CATEGORIES, size=m, p=self.cat_pop)
        cat[: 3 * N_CATEGORIES] = np.arange(3 * N_CATEGORIES) % N_CATEGORIES  # every category exists
        rng.shuffle(cat)
        self.mcat = cat
        # Popularity: Zipf over a random ranking (ids do not reveal popularity).
        rank = rng.permutation(m)
        self.pop = 1.0 / (rank + 3.0) ** self.prof["merchant_zipf"]
        self.pop_rank = rank
        cdf = np.cumsum(self.pop)
        self.pop_cdf = cdf / cdf[-1]
        # Within-category sampling: merchants sorted by category, G = category + within-CDF.
        order = np.lexsort((np.arange(m), cat))
        scat = cat[order]
        w = self.pop[order]
        g = np.empty(m)
        for c in range(N_CATEGORIES):
            idx = np.flatnonzero(scat == c)
            cw = np.cumsum(w[idx])
            cw /= cw[-1]
            cw[-1] = 1.0
            g[idx] = c + cw
        self.cat_order = order
        self.cat_g = g

    def merchant_any(self, n):
        i = np.searchsorted(self.pop_cdf, self.rng.random(n), side="right")
        return np.minimum(i, self.n_merchants - 1)

    def merchant_in(self, cats):
        cats = np.asarray(cats)
        x = cats + self.rng.random(cats.shape)
        i = np.searchsorted(self.cat_g, x, side="right")
        return self.cat_order[np.minimum(i, self.n_merchants - 1)]

    # -- cards -----------------------------------------------------------------------------
    def _cards(self, n_regular, n_victims):
        rng, prof = self.rng, self.prof
        n = n_regular + n_victims
        self.n_cards = n
        self.n_regular = n_regular
        self.typical = np.clip(
            np.exp(np.log(prof["typical_median"]) + prof["typical_sigma"] * rng.standard_normal(n)),
            5.0,
            500.0,
        )
        self.row_sigma = rng.uniform(*prof["row_sigma"], n)
        # Hours: 0 = day (lunch/evening mixture), 1 = night shift, 2 = traveller.
        u = rng.random(n)
        kind = np.zeros(n, np.int8)
        kind[u < prof["night_share"] + prof["traveller_share"]] = 2
        kind[u < prof["night_share"]] = 1
        self.kind = kind
        c1 = rng.uniform(*prof["lunch"], n)
        c2 = rng.uniform(*prof["evening"], n)
        night1 = rng.uniform(21.0, 25.0, n)
        night2 = night1 + rng.uniform(1.0, 4.0, n)
        self.c1 = np.where(kind == 1, night1, c1)
        self.c2 = np.where(kind == 1, night2, c2)
        self.p1 = rng.uniform(0.2, 0.8, n)
        self.hour_sd = rng.uniform(*prof["hour_sd"], n)
        self.shift = rng.choice([-1.0, 1.0], n) * rng.uniform(5.0, 10.0, n)
        # Categories: each card uses a few (Gumbel top-k by popularity), with its own weights.
        keys = np.log(self.cat_pop)[None, :] + rng.gumbel(size=(n, N_CATEGORIES))
        k = rng.integers(prof["cats_per_card"][0], prof["cats_per_card"][1] + 1, n)
        ranks = np.argsort(np.argsort(-keys, axis=1), axis=1)
        cw = np.where(ranks < k[:, None], self.cat_pop[None, :] * rng.gamma(1.0, size=(n, N_CATEGORIES)), 0.0)
        cw /= cw.sum(axis=1, keepdims=True)
        self.cat_cdf = np.cumsum(cw, axis=1)
        self.cat_cdf[:, -1] = 1.0
        # Favourite merchants in the card's categories, used with a skew to the first.
        fmax = prof["fav_count"][1]
        self.n_fav = rng.integers(prof["fav_count"][0], fmax + 1, n)
        fav_cats = self.card_category(np.repeat(np.arange(n), fmax)).reshape(n, fmax)
        self.fav = self.merchant_in(fav_cats)
        self.fav_share = rng.uniform(*prof["fav_share"], n)
        self.home_atm = self.merchant_in(np.full(n, FINANCIAL))
        self.cluster_q = rng.beta(*prof["cluster_beta"], n)
        self.p_withdraw = rng.beta(*prof["withdraw_beta"], n)
        self.p_transfer = rng.beta(*prof["transfer_beta"], n)
        # Activity windows in days: [a0, a1) and [b0, b1) (b empty unless dormant).
        self.a0 = np.zeros(n, np.int64)
        self.a1 = np.full(n, SPAN_DAYS, np.int64)
        self.b0 = np.full(n, SPAN_DAYS, np.int64)
        self.b1 = np.full(n, SPAN_DAYS, np.int64)
        self.dormant = np.zeros(n, bool)

    def card_category(self, cards):
        u = self.rng.random(len(cards))
        return (self.cat_cdf[cards] <= u[:, None]).sum(axis=1).clip(0, N_CATEGORIES - 1)

    def card_merchant(self, cards):
        """Merchants for purchases of these cards: a favourite, else an occasional new one."""
        rng = self.rng
        n = len(cards)
        slot = np.floor(self.n_fav[cards] * rng.random(n) ** 1.6).astype(np.int64)
        fav = self.fav[cards, slot]
        new = self.merchant_in(self.card_category(cards))
        return np.where(rng.random(n) < self.fav_share[cards], fav, new)

    def card_tod(self, cards, daytime=None):
        """Seconds into the day for transactions of these cards (daytime: forced 08-20)."""
        rng = self.rng
        n = len(cards)
        first = rng.random(n) < self.p1[cards]
        centre = np.where(first, self.c1[cards], self.c2[cards])
        away = (self.kind[cards] == 2) & (rng.random(n) < self.prof["travel_away"])
        centre = centre + np.where(away, self.shift[cards], 0.0)
        h = centre + self.hour_sd[cards] * rng.standard_normal(n)
        if daytime is not None:
            dc = rng.uniform(10.0, 17.0, n)
            hd = np.clip(dc + 1.5 * rng.standard_normal(n), 8.0, 20.9)
            h = np.where(daytime, hd, h)
        return np.mod(np.round(h * 3600.0).astype(np.int64), DAY)

    def weekday_days(self, lo, hi, start_dow):
        """A day in [lo, hi) per element, weighted by the profile's weekday weights."""
        rng = self.rng
        w = np.asarray(self.prof["weekday"], float)
        w /= w.max()
        day = np.empty(len(lo), np.int64)
        todo = np.arange(len(lo))
        while len(todo):
            d = lo[todo] + np.floor(rng.random(len(todo)) * (hi[todo] - lo[todo])).astype(np.int64)
            ok = rng.random(len(todo)) < w[(d + start_dow) % 7]
            day[todo[ok]] = d[ok]
            todo = todo[~ok]
        return day

    def purchase_amount(self, cards, merchants):
        rng = self.rng
        n = len(cards)
        a = self.typical[cards] * self.cat_factor[self.mcat[merchants]]
        a = a * np.exp(self.row_sigma[cards] * rng.standard_normal(n))
        big = rng.random(n) < self.prof["large_prob"]
        return np.where(big, a * rng.uniform(2.0, 6.0, n), a)


def legit_traffic(w, n_rows_card, start_dow):
    """Legitimate rows for every card: (t, card, merchant, amount, type)."""
    rng, prof = w.rng, w.prof
    n_legit = int(n_rows_card.sum())
    # Sessions: singles, or shopping clusters of 3-8 (the last one of a card may be cut short).
    cand_card = np.repeat(np.arange(w.n_cards), n_rows_card)
    is_cl = rng.random(n_legit) < w.cluster_q[cand_card]
    size = np.where(is_cl, rng.integers(3, 9, n_legit), 1)
    before = np.cumsum(size) - size
    first_cand = np.cumsum(n_rows_card) - n_rows_card
    within = before - before[first_cand][cand_card]
    keep = within < n_rows_card[cand_card]
    s_card = cand_card[keep]
    s_size = np.minimum(size, n_rows_card[cand_card] - within)[keep]
    n_s = len(s_card)
    # Session start: a day in the card's window (dormant cards: second window sometimes).
    last_of_card = np.r_[s_card[1:] != s_card[:-1], True]
    in_b = w.dormant[s_card] & ((rng.random(n_s) < prof["dormant_return_share"]) | last_of_card)
    lo = np.where(in_b, w.b0[s_card], w.a0[s_card])
    hi = np.where(in_b, w.b1[s_card], w.a1[s_card])
    day = w.weekday_days(lo, hi, start_dow)
    s_t = day * DAY + w.card_tod(s_card, daytime=in_b)
    # Rows.
    r_sess = np.repeat(np.arange(n_s), s_size)
    s_first = np.cumsum(s_size) - s_size
    j = np.arange(n_legit) - s_first[r_sess]
    card = s_card[r_sess]
    k = s_size[r_sess]
    gaps = rng.exponential(1.0, n_legit)
    gaps[j == 0] = 0.0
    cg = np.cumsum(gaps)
    cg = cg - cg[s_first][r_sess]
    tot = cg[s_first + s_size - 1][r_sess]
    span = rng.uniform(30.0, 90.0, n_s)[r_sess] * 60.0
    min_gap = 120.0
    frac = np.where(k > 1, cg / np.where(tot > 0, tot, 1.0), 0.0)
    off = frac * (span - (k - 1) * min_gap) + j * min_gap
    t = s_t[r_sess] + np.round(off).astype(np.int64)
    # Types: cluster rows are purchases; singles are sometimes withdrawals or transfers.
    u = rng.random(n_legit)
    single = k == 1
    ttype = np.zeros(n_legit, np.int8)
    ttype[single & (u < w.p_withdraw[card] + w.p_transfer[card])] = 2
    ttype[single & (u < w.p_withdraw[card])] = 1
    # Merchants: clusters go to (distinct) merchants in the card's categories.
    merchant = w.card_merchant(card)
    cl = ~single
    merchant[cl] = w.merchant_in(w.card_category(card[cl]))
    for _ in range(6):  # redraw repeats within a cluster
        order = np.lexsort((merchant, r_sess))
        dup = np.zeros(n_legit, bool)
        dup[order[1:]] = (r_sess[order[1:]] == r_sess[order[:-1]]) & (
            merchant[order[1:]] == merchant[order[:-1]]
        )
        if not dup.any():
            break
        merchant[dup] = w.merchant_in(w.card_category(card[dup]))
    fin = ttype > 0
    atm = w.merchant_in(np.full(int(fin.sum()), FINANCIAL))
    home = rng.random(int(fin.sum())) < 0.6
    merchant[fin] = np.where(home & (ttype[fin] == 1), w.home_atm[card[fin]], atm)
    # Amounts.
    amount = w.purchase_amount(card, merchant)
    wd = ttype == 1
    a_wd = w.typical[card[wd]] * np.exp(0.6 + 0.5 * rng.standard_normal(int(wd.sum())))
    amount[wd] = np.maximum(10.0, np.round(a_wd / 10.0) * 10.0)
    tr = ttype == 2
    amount[tr] = w.typical[card[tr]] * np.exp(0.8 + 0.8 * rng.standard_normal(int(tr.sum())))
    amount = np.maximum(amount, 0.30)
    return t, card, merchant, amount, ttype


class CardPool:
    """Cards handed out in a seeded order, each once before any repeats."""

    def __init__(self, rng, cards):
        self.rng = rng
        self.cards = np.asarray(cards)
        self.order = rng.permutation(self.cards)
        self.i = 0

    def next(self):
        if self.i >= len(self.order):
            self.order = self.rng.permutation(self.cards)
            self.i = 0
        c = int(self.order[self.i])
        self.i += 1
        return c


def fraud_traffic(w, plan, legit, victims):
    rng, prof = w.rng, w.prof
    t_l, card_l, merch_l, amt_l, _ = legit
    nm = w.n_merchants
    used = np.unique(card_l.astype(np.int64) * nm + merch_l)
    used_cats = np.zeros(w.n_cards, np.int64)
    np.bitwise_or.at(used_cats, card_l, 1 << w.mcat[merch_l].astype(np.int64))
    last_t = np.full(w.n_cards, -1, np.int64)
    np.maximum.at(last_t, card_l, t_l)
    n_rows = np.bincount(card_l, minlength=w.n_cards)
    # "Typical" for the multiples below is what the card's history shows: the median of its
    # legitimate purchases (its habit parameter where it has none).
    buy = legit[4] == 0
    med = pd.Series(amt_l[buy]).groupby(card_l[buy]).median()
    typical = w.typical.copy()
    typical[med.index.to_numpy()] = med.to_numpy()

    def is_used(c, m):
        code = c * nm + m
        i = np.searchsorted(used, code)
        return i < len(used) and used[i] == code

    regular = np.flatnonzero((np.arange(w.n_cards) < w.n_regular) & ~w.dormant & (n_rows >= 3))
    if len(regular) == 0:
        regular = np.arange(w.n_regular)
    pool = CardPool(rng, regular)
    ring_cards = np.flatnonzero((np.arange(w.n_cards) < w.n_regular) & ~w.dormant & (n_rows >= 1))
    quiet = np.flatnonzero(w.pop_rank >= nm // 2)  # in the less popular half
    ring_merchants = CardPool(rng, quiet)
    victim_iter = iter(victims)

    T, C, M, A, K, P = [], [], [], [], [], []

    def emit(ts, c, ms, amts, kinds, p):
        n = len(ts)
        T.append(np.asarray(ts, np.int64))
        C.append(np.broadcast_to(np.asarray(c), (n,)).astype(np.int64))
        M.append(np.asarray(ms, np.int64))
        A.append(np.asarray(amts, float))
        K.append(np.broadcast_to(np.asarray(kinds), (n,)).astype(np.int8))
        P.append(np.full(n, p + 1, np.int8))

    def some_day():
        return int(rng.integers(2, SPAN_DAYS))

    def own_time(c):
        return some_day() * DAY + int(w.card_tod(np.array([c]))[0])

    def any_time():
        return some_day() * DAY + int(rng.integers(0, DAY))

    for p, n in plan:
        if p == SLOW:
            c = pool.next()
            gaps = rng.uniform(*prof["test_gap_min"], n - 1) * 60.0
            if gaps.sum() > 3600.0:  # spread over at most an hour
                gaps = 60.0 + (gaps - 60.0) * (3600.0 - 60.0 * (n - 1)) / (gaps.sum() - 60.0 * (n - 1))
            t0 = any_time() if rng.random() < 0.6 else own_time(c)
            ts = t0 + np.concatenate([[0.0], np.cumsum(gaps)]).round().astype(np.int64)
            # Several different merchants: each of k distinct ones at least once.
            k = int(rng.integers(2, min(5, n) + 1))
            shop = []
            while len(shop) < k:
                m = int(w.merchant_any(1)[0])
                if m not in shop:
                    shop.append(m)
            shop = np.array(shop)
            ms = rng.permutation(np.concatenate([shop, shop[rng.integers(0, k, n - k)]]))
            amts = 0.5 + 4.5 * rng.random(n) ** prof["test_amount_power"]
            emit(ts, c, ms, amts, 0, p)
        elif p == CASH:
            c = pool.next()
            t0 = own_time(c) if rng.random() < 0.5 else any_time()
            offs = np.sort(rng.uniform(0.0, 7200.0, n))
            offs -= offs[0]
            ts = t0 + offs.round().astype(np.int64)
            if prof["cashout_log_uniform"]:
                mult = np.exp(rng.uniform(np.log(3.0), np.log(15.0), n))
            else:
                mult = rng.uniform(3.0, 15.0, n)
            amts = typical[c] * mult
            kinds = np.where(rng.random(n) < prof["cashout_withdraw_share"], 1, 2)
            amts = np.where(kinds == 1, np.maximum(10.0, np.round(amts / 10.0) * 10.0), amts)
            ms = w.merchant_in(np.full(n, FINANCIAL))
            emit(ts, c, ms, amts, kinds, p)
        elif p == DORMANT:
            c = next(victim_iter)
            d_min = (int(last_t[c]) + 20 * DAY) // DAY + 1
            day = int(rng.integers(d_min, max(d_min, SPAN_DAYS - 1) + 1))
            t0 = day * DAY + int(rng.integers(0, 5 * 3600))
            offs = np.sort(rng.uniform(0.0, min(3 * 3600.0, 6 * 3600.0 - (t0 - day * DAY)), n))
            offs -= offs[0]
            ts = t0 + offs.round().astype(np.int64)
            kinds = np.where(rng.random(n) < 0.8, 0, 2)
            ms = []
            while len(ms) < n:  # merchants new to the card (transfers: a transfer service)
                if kinds[len(ms)] == 2:
                    m = int(w.merchant_in(np.array([FINANCIAL]))[0])
                else:
                    m = int(w.merchant_any(1)[0])
                if not is_used(c, m) and m not in ms:
                    ms.append(m)
            amts = typical[c] * rng.uniform(*prof["takeover_mult"], n)
            emit(ts, c, ms, amts, kinds, p)
        elif p == RING:
            m = ring_merchants.next()
            t0 = any_time() if rng.random() < 0.3 else some_day() * DAY + int(rng.integers(9 * 3600, 21 * 3600))
            window = rng.uniform(*prof["ring_window_min"]) * 60.0
            ts = t0 + np.sort(rng.uniform(0.0, window, n)).round().astype(np.int64)
            cs = rng.choice(ring_cards, size=n, replace=False)
            amts = w.typical[cs] * w.cat_factor[w.mcat[m]] * np.exp(0.35 * rng.standard_normal(n))
            T.append(ts)
            C.append(cs.astype(np.int64))
            M.append(np.full(n, m, np.int64))
            A.append(amts)
            K.append(np.zeros(n, np.int8))
            P.append(np.full(n, p + 1, np.int8))
        elif p == OUTLIER:
            c = pool.next()
            ts = [own_time(c)]
            ms = w.card_merchant(np.array([c]))
            if prof["outlier_log_uniform"]:
                mult = np.exp(rng.uniform(np.log(20.0), np.log(100.0)))
            else:
                mult = rng.uniform(20.0, 100.0)
            emit(ts, c, ms, [typical[c] * mult], 0, p)
        elif p == SPREE:
            c = pool.next()
            for _ in range(50):
                free = [x for x in range(N_CATEGORIES) if not (used_cats[c] >> x) & 1 and x != FINANCIAL]
                if len(free) >= 2:
                    break
                c = pool.next()
            if not free:
                free = [x for x in range(N_CATEGORIES) if x != FINANCIAL]
            fw = w.cat_pop[free] / w.cat_pop[free].sum()
            ms = []
            while len(ms) < n:
                m = int(w.merchant_in(np.array([rng.choice(free, p=fw)]))[0])
                if m not in ms:
                    ms.append(m)
            ms = np.array(ms)
            t0 = own_time(c)
            window = rng.uniform(*prof["spree_window_min"]) * 60.0
            offs = np.sort(rng.uniform(0.0, window, n))
            offs -= offs[0]
            ts = t0 + offs.round().astype(np.int64)
            amts = w.typical[c] * w.cat_factor[w.mcat[ms]] * np.exp(0.2 + 0.4 * rng.standard_normal(n))
            emit(ts, c, ms, amts, 0, p)
    if not T:
        e = np.zeros(0, np.int64)
        return e, e, e, np.zeros(0), np.zeros(0, np.int8), np.zeros(0, np.int8)
    return (
        np.concatenate(T),
        np.concatenate(C),
        np.concatenate(M),
        np.concatenate(A),
        np.concatenate(K),
        np.concatenate(P),
    )


def generate(rows, fraud_rate, seed, profile, start):
    if rows < 100:
        raise ValueError("--rows must be at least 100")
    if not 0.0 <= fraud_rate <= 0.5:
        raise ValueError("--fraud-rate must be in [0, 0.5]")
    prof = PROFILES[profile]
    rng = np.random.Generator(np.random.PCG64(seed))
    start_day = np.datetime64(start, "D")
    start_dow = int((start_day.astype(np.int64) + 3) % 7)  # 1970-01-01 was a Thursday

    n_cards_total = max(rows // 30, 20)
    target = int(round(rows * fraud_rate))
    plan = plan_fraud(rng, target, prof, n_cards_total // 3)
    n_fraud = sum(n for _, n in plan)
    n_legit = rows - n_fraud
    n_victims = sum(1 for p, _ in plan if p == DORMANT)

    n_merchants = int(min(99_999, max(60, rows // 150)))
    # Victim cards: a short history early on, then silence (they make 2-10 legit rows).
    victim_rows = rng.integers(2, 11, n_victims) if n_victims else np.zeros(0, np.int64)
    n_legit_regular = n_legit - int(victim_rows.sum())
    # (At high fraud rates the victims come on top of ~rows/30 cards rather than out of them.)
    n_regular = max(10, min(max(n_cards_total - n_victims, n_cards_total // 2), n_legit_regular // 2))
    w = World(rng, prof, n_regular, n_victims, n_merchants)

    # Rows per regular card: at least one, the rest by a capped Pareto rate.
    rate = rng.pareto(prof["pareto_alpha"], n_regular) + 1.0
    rate = np.minimum(rate, prof["max_rate_ratio"] * rate.mean())
    # Dormant legit cards: low-rate cards, active early and back after >= 20 days.
    low = np.flatnonzero(rate <= np.median(rate))
    n_dorm = int(round(prof["dormant_share"] * n_regular))
    dorm = rng.choice(low, size=min(n_dorm, len(low)), replace=False)
    rate[dorm] = np.minimum(rate[dorm], 1.5)
    n_rows_card = np.ones(w.n_cards, np.int64)
    n_rows_card[:n_regular] += rng.multinomial(n_legit_regular - n_regular, rate / rate.sum())
    n_rows_card[n_regular:] = victim_rows
    w.dormant[dorm] = True
    w.a1[dorm] = rng.integers(3, 9, len(dorm))
    w.b0[dorm] = w.a1[dorm] + 20 + rng.integers(0, 3, len(dorm))
    w.b0[dorm] = np.minimum(w.b0[dorm], SPAN_DAYS - 1)
    n_rows_card[dorm] = np.maximum(n_rows_card[dorm], 2)
    vic = np.arange(n_regular, w.n_cards)
    w.a1[vic] = rng.integers(2, 9, n_victims)
    # Keep the total exact after the dormant minimum: take surplus rows from the busiest cards.
    extra = int(n_rows_card.sum()) - n_legit
    busiest = np.argsort(-n_rows_card[:n_regular], kind="stable")
    i = 0
    while extra > 0:
        c = busiest[i % len(busiest)]
        if n_rows_card[c] > 3:
            n_rows_card[c] -= 1
            extra -= 1
        i += 1

    legit = legit_traffic(w, n_rows_card, start_dow)
    fraud = fraud_traffic(w, plan, legit, vic)

    t = np.concatenate([legit[0], fraud[0]])
    card = np.concatenate([legit[1], fraud[1]])
    merchant = np.concatenate([legit[2], fraud[2]])
    amount = np.concatenate([legit[3], fraud[3]])
    ttype = np.concatenate([legit[4], fraud[4]])
    pat = np.concatenate([np.zeros(len(legit[0]), np.int8), fraud[5]])
    t = np.maximum(t, 0)

    # Arrival order: by time (stable on generation order), then ~2% late by 10 s-15 min.
    order = np.argsort(t, kind="stable")
    late = rng.random(len(t)) < prof["late_share"]
    delay = np.where(late, rng.integers(10, 901, len(t)), 0)
    arrival = t[order] + delay
    order = order[np.argsort(arrival, kind="stable")]

    t, card, merchant, amount, ttype, pat = (x[order] for x in (t, card, merchant, amount, ttype, pat))
    card_ids = rng.permutation(w.n_cards) + 1
    merchant_ids = rng.permutation(w.n_merchants) + 1
    stamps = np.datetime_as_string(start_day.astype("datetime64[s]") + t.astype("timedelta64[s]"), unit="s")
    names = np.array(("normal",) + PATTERNS)
    amount = np.maximum(np.round(amount, 2), 0.01)
    return pd.DataFrame(
        {
            "timestamp": np.char.add(stamps, "Z"),
            "card_id": ["c%07d" % x for x in card_ids[card].tolist()],
            "merchant_id": ["m%05d" % x for x in merchant_ids[merchant].tolist()],
            "amount": amount,
            "hour": (t % DAY) // 3600,
            "day_of_week": (start_dow + t // DAY) % 7,
            "merchant_category": w.mcat[merchant].astype(np.int64),
            "transaction_type": ttype.astype(np.int64),
            "label": (pat > 0).astype(np.int64),
            "pattern": names[pat],
        }
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, required=True)
    ap.add_argument("--fraud-rate", type=float, required=True, help="share of rows labelled fraud")
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--profile", choices=sorted(PROFILES), default="a")
    ap.add_argument("--start", default="2024-03-04", help="first day (UTC), YYYY-MM-DD")
    ap.add_argument("--output", required=True, help="CSV file to write")
    args = ap.parse_args()
    t0 = time.perf_counter()
    try:
        df = generate(args.rows, args.fraud_rate, args.seed, args.profile, args.start)
    except ValueError as e:
        print(f"fraud_streams: {e}", file=sys.stderr)
        return 2
    df.to_csv(args.output, index=False, float_format="%.2f", lineterminator="\n")
    counts = df["pattern"].value_counts()
    summary = ", ".join(f"{p} {int(counts.get(p, 0))}" for p in PATTERNS)
    print(
        f"{args.output}: {len(df)} rows, {int(df['label'].sum())} fraud "
        f"({df['label'].mean():.4f}); {summary}; {time.perf_counter() - t0:.1f} s",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
