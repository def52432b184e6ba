"""Benchmark: the members list's answer body for 100 rows (`GET …/members/?per_page=100`).

    .venv/bin/python -m bench.serialize [--rows 100] [--repeat 2000]

The rows are real asyncpg records, the columns `db.members.listed` selects (70% active members,
30% removed for 2FA, one in ten of the active ones exempt), read once from the PostgreSQL at
DATABASE_URL (default 127.0.0.1:5432; no table is touched). Times building the body from the
rows and encoding it as the handler does (`api.serializers.serialize_member` for each row, the
list encoded by orjson with `api.jsonio`'s options), best of 5 runs of `--repeat` loops; prints
one JSON object with microseconds per row.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import timeit

import asyncpg
import orjson

from api.jsonio import _OPTIONS
from api.serializers import serialize_member
from db.pool import _init_connection as init_connection

QUERY = """
select
    i::bigint as id,
    'member' || i || '@example.com' as email,
    case when i % 10 < 7 then i::bigint end as user_id,
    case when i % 10 < 7 then 'member' || i || '@example.com' end as user_email,
    case when i % 10 < 7 then 'Member ' || i end as user_name,
    i % 10 < 5 as has2fa,
    i % 10 < 5 as meets_level,
    'member' as role,
    array['ops', 'web']::text[] as team_slugs,
    '{"weekly": false}'::jsonb as settings,
    case when i % 10 >= 7 then '2fa' end as pending_reason,
    case when i % 10 >= 7 then '2fa-level' end as removal_reason,
    case when i % 10 >= 7 then now() + interval '90 days' end as reinstate_by,
    case when i % 10 = 8 then now() end as last_reminded_at,
    i % 10 = 1 as exempt_2fa,
    case when i % 10 = 1 then 1::bigint end as exempt_2fa_by,
    case when i % 10 = 1 then 'owner@example.com' end as exempt_2fa_by_label,
    case when i % 10 = 1 then 'CI bot' end as exempt_2fa_reason,
    case when i % 10 = 1 then now() + interval '30 days' end as exempt_2fa_until,
    now() - i * interval '1 minute' as created_at
from generate_series(1, $1) as i
"""


def members_json(rows: list[asyncpg.Record]) -> bytes:
    return orjson.dumps([serialize_member(row) for row in rows], option=_OPTIONS)


async def fetch(rows: int) -> list[asyncpg.Record]:
    url = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    conn = await asyncpg.connect(url)
    try:
        await init_connection(conn)
        return await conn.fetch(QUERY, rows)
    finally:
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=2000)
    args = parser.parse_args()
    rows = asyncio.run(fetch(args.rows))
    best = min(timeit.repeat(lambda: members_json(rows), number=args.repeat, repeat=5))
    body = members_json(rows)
    print(
        json.dumps(
            {
                "rows": len(rows),
                "bytes": len(body),
                "us_per_row": round(best / args.repeat / len(rows) * 1e6, 3),
            }
        )
    )


if __name__ == "__main__":
    main()
