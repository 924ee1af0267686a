"""The embedded section's baseline: rows like posthorn's message rows, inserted into SQLite one per
transaction, in WAL mode with synchronous=FULL (as posthorn opens its database), for a number of
seconds. The payload (envelope and body JSON) is copied from a message posthorn stored.

    sqlite_insert.py --db NEW.db --payload-from POSTHORN.db --seconds 15

Prints {"rows": N, "seconds": S, "rate": N/S}.
"""

import argparse
import json
import os
import sqlite3
import time
import uuid


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", required=True)
    parser.add_argument("--payload-from", required=True)
    parser.add_argument("--seconds", type=float, default=15)
    args = parser.parse_args()

    source = sqlite3.connect(f"file:{args.payload_from}?mode=ro", uri=True)
    envelope, body = source.execute("SELECT envelope, body FROM messages LIMIT 1").fetchone()
    source.close()

    if os.path.exists(args.db):
        os.remove(args.db)
    db = sqlite3.connect(args.db, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute(
        "CREATE TABLE messages (id TEXT PRIMARY KEY, message_id TEXT NOT NULL, caller TEXT NOT NULL,"
        " status TEXT NOT NULL, envelope TEXT NOT NULL, body TEXT NOT NULL, created_at INTEGER NOT NULL,"
        " due_at INTEGER NOT NULL)"
    )
    insert = (
        "INSERT INTO messages (id, message_id, caller, status, envelope, body, created_at, due_at)"
        " VALUES (?, ?, 'bench', 'queued', ?, ?, ?, ?)"
    )
    rows = 0
    start = time.monotonic()
    deadline = start + args.seconds
    while time.monotonic() < deadline:
        now = int(time.time() * 1e6)
        message = uuid.uuid4().hex
        db.execute("BEGIN")
        db.execute(insert, (message, f"<{message}@example.com>", envelope, body, now, now))
        db.execute("COMMIT")
        rows += 1
    seconds = time.monotonic() - start
    print(json.dumps({"rows": rows, "seconds": round(seconds, 3), "rate": round(rows / seconds)}))


if __name__ == "__main__":
    main()
