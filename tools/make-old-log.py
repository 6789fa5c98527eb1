#!/usr/bin/env python3
"""make-old-log.py PATH N: writes a prediction log of N requests in the layout every release
before lanes wrote (one `predictions` table, session 13's schema), every fifth request also
shadowed, to time the move into lanes on a gateway's first start (BENCHMARKS.md, "Proxy
cost"). Python's sqlite3 only; the rows are what a single-mode gateway with a shadow logs."""
import random, sqlite3, sys

path, n = sys.argv[1], int(sys.argv[2])
conn = sqlite3.connect(path)
conn.executescript("""
PRAGMA journal_mode=WAL;
CREATE TABLE predictions (
    id INTEGER PRIMARY KEY, request_id TEXT NOT NULL, ts_ms INTEGER NOT NULL,
    model TEXT NOT NULL, epoch INTEGER NOT NULL, variant TEXT NOT NULL, role TEXT NOT NULL,
    version TEXT NOT NULL, key_hash INTEGER, outcome TEXT NOT NULL, status INTEGER NOT NULL,
    latency_us INTEGER NOT NULL, output TEXT NOT NULL, input TEXT, paired_version TEXT,
    segments TEXT, artefact_id INTEGER);
CREATE INDEX predictions_request ON predictions(request_id);
""")
rng = random.Random(1)
t0 = 1_790_000_000_000


def rows():
    for i in range(n):
        ts = t0 + i // 50
        rid = f"{ts:012x}{rng.getrandbits(80):020x}"
        cls = '{"classes":["%d"]}' % (i % 2)
        yield (rid, ts, "m", 1, "primary", "serving", "v1", None, "ok", 200, 900 + i % 700, cls, None, None, None, 1)
        if i % 5 == 0:
            other = '{"classes":["%d"]}' % (i % 3 % 2)
            yield (rid, ts, "m", 1, "shadow", "shadow", "v2", None, "ok", 200, 1100 + i % 500, other, None, "v1", None, 2)


conn.executemany(
    "INSERT INTO predictions (request_id, ts_ms, model, epoch, variant, role, version, key_hash,"
    " outcome, status, latency_us, output, input, paired_version, segments, artefact_id)"
    " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
    rows(),
)
conn.commit()
print(conn.execute("SELECT COUNT(*) FROM predictions").fetchone()[0], "records in", path)
