"""Tables shaped like the ones people export: ids, timestamps, booleans, junk columns.

Used by the tests (roles, the same scores through every door) and by
``benchmarks/messy.py``. Every table is generated from a seed; anomalies are
planted in the columns a practitioner would keep, so a model that reads the
junk columns as features does worse than one that leaves them out.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

#: The columns a practitioner would keep as features of the transactions table.
TRANSACTION_FEATURES = ["amount", "n_items", "card_present", "online", "country", "channel"]
#: The columns a practitioner would leave out (ids, timestamps, wide text, dead columns).
TRANSACTION_JUNK = ["txn_id", "row", "ts", "merchant", "currency", "note"]
COUNTRIES = ["DE", "FR", "NL", "BE", "AT", "ES", "IT", "PL", "Zürich-CH", "Île-FR"]


def transactions(n: int = 2000, *, seed: int = 0, anomaly_rate: float = 0.05) -> pd.DataFrame:
    """A card-transactions export with planted fraud.

    Columns: ``txn_id`` (unique text), ``row`` (1..n), ``ts`` (ISO
    timestamps), ``card_present`` (True/False), ``online`` (yes/no),
    ``merchant`` (text with far more values than any category cap),
    ``amount`` (decimals), ``n_items``, ``country``, ``channel``, ``currency``
    (constant), ``note`` (always empty) and the label ``is_fraud``. Fraud
    leans to larger amounts, more items, cards not present and the last
    countries of :data:`COUNTRIES`; no sign alone gives it away.
    """
    rng = np.random.default_rng(seed)
    fraud = rng.random(n) < anomaly_rate
    fraud[:2] = True  # never a table without anomalies
    # Each sign of fraud alone is weak; together they separate most of it.
    amount = np.round(rng.lognormal(3.0, 0.6, n), 2)
    amount[fraud] = np.round(rng.lognormal(3.7, 0.6, fraud.sum()), 2)
    n_items = rng.integers(1, 6, n)
    n_items[fraud] = rng.integers(3, 9, fraud.sum())
    card_present = rng.random(n) < 0.7
    card_present[fraud] = rng.random(fraud.sum()) < 0.35
    online = np.where(card_present, rng.random(n) < 0.15, rng.random(n) < 0.8)
    country = rng.choice(COUNTRIES, n, p=[0.3, 0.2, 0.12, 0.1, 0.1, 0.06, 0.04, 0.04, 0.02, 0.02])
    rare = fraud & (rng.random(n) < 0.5)
    country[rare] = rng.choice(COUNTRIES[6:], rare.sum())
    start = np.datetime64("2024-01-01T00:00:00")
    seconds = np.sort(rng.integers(0, 31 * 24 * 3600, n))
    ts = (start + seconds.astype("timedelta64[s]")).astype(str)
    return pd.DataFrame(
        {
            "txn_id": [f"TX-{i:07d}" for i in rng.permutation(n) + 1000],
            "row": np.arange(1, n + 1),
            "ts": ts,
            "card_present": np.where(card_present, "True", "False"),
            "online": np.where(online, "yes", "no"),
            "merchant": [f"Merchant {m:04d}" for m in rng.integers(0, 2000, n)],
            "amount": amount,
            "n_items": n_items,
            "country": country,
            "channel": rng.choice(["pos", "web", "app"], n),
            "currency": "EUR",
            "note": "",
            "is_fraud": fraud.astype(int),
        }
    )


def sensors(n: int = 600, *, seed: int = 0) -> pd.DataFrame:
    """Sensor readings with a dead sensor (always empty), a stuck one (constant),
    one with gaps, and planted faults."""
    rng = np.random.default_rng(seed)
    t = rng.normal(size=n)
    fault = rng.random(n) < 0.06
    fault[:2] = True
    temp = 20 + 2 * t + rng.normal(scale=0.1, size=n)
    pressure = 101 + t + rng.normal(scale=0.1, size=n)
    temp[fault] += rng.choice([-8.0, 8.0], fault.sum())
    humidity = 40 - 3 * t + rng.normal(scale=0.2, size=n)
    humidity[rng.random(n) < 0.1] = np.nan
    return pd.DataFrame(
        {
            "sensor_id": [f"S{i:05d}" for i in range(n)],
            "temp": np.round(temp, 3),
            "pressure": np.round(pressure, 3),
            "humidity": np.round(humidity, 3),
            "dead": np.nan,
            "stuck": 7.5,
            "fault": fault.astype(int),
        }
    )


def write_variants(frame: pd.DataFrame, folder: Path, stem: str) -> dict[str, dict]:
    """The same table written the ways people's files come: a plain CSV, an
    Excel-style copy (';', decimal commas, a BOM, CRLF line ends), a Latin-1 CSV
    and Parquet. Returns, per variant, its path and how pandas reads it back."""
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    plain = folder / f"{stem}.csv"
    frame.to_csv(plain, index=False)
    out["plain"] = {"path": plain, "read": {}}
    excel = folder / f"{stem}-excel.csv"
    text = frame.to_csv(index=False, sep=";", decimal=",", lineterminator="\r\n")
    excel.write_bytes("\ufeff".encode() + text.encode("utf-8"))
    out["excel"] = {"path": excel, "read": {"sep": ";", "decimal": ",", "encoding": "utf-8-sig"}}
    latin = folder / f"{stem}-latin1.csv"
    latin.write_bytes(frame.to_csv(index=False).encode("latin-1"))
    out["latin1"] = {"path": latin, "read": {"encoding": "latin-1"}}
    parquet = folder / f"{stem}.parquet"
    frame.to_parquet(parquet, index=False)
    out["parquet"] = {"path": parquet, "read": None}
    return out


def read_back(variant: dict) -> pd.DataFrame:
    """The variant as a user's own pandas code would read it."""
    if variant["read"] is None:
        return pd.read_parquet(variant["path"])
    return pd.read_csv(variant["path"], **variant["read"])
