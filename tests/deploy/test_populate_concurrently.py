"""`imgclf populate` from several containers at once (compose's `migrate`, or API replicas each
running it): one migrates and creates the admin, the others wait for it and find nothing to do."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg
from alembic.script import ScriptDirectory

from imgclf.db.migrate import MIGRATIONS_DIR
from imgclf.localservers import PostgresServer

IMGCLF = str(Path(sys.executable).with_name("imgclf"))


def test_populate_twice_at_once_on_postgres(postgres_server: PostgresServer) -> None:
    url = postgres_server.create_database(f"populate_{os.getpid()}")
    env = {**os.environ, "IMGCLF_DATABASE_URL": url}
    runs = [
        subprocess.Popen(
            [IMGCLF, "populate"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        for _ in range(2)
    ]
    outputs = [run.communicate(timeout=120)[0].decode() for run in runs]

    assert [run.returncode for run in runs] == [0, 0], outputs
    assert sorted("created." in out for out in outputs) == [False, True], outputs
    assert sum("already present" in out for out in outputs) == 1, outputs
    heads = ScriptDirectory(str(MIGRATIONS_DIR)).get_heads()
    with psycopg.connect(url.replace("postgresql+psycopg", "postgresql")) as connection:
        admins = connection.execute(
            "SELECT count(*) FROM users WHERE email = 'admin@example.com' AND is_admin"
        ).fetchone()
        versions = connection.execute("SELECT version_num FROM alembic_version").fetchall()
    assert admins == (1,)
    assert [row[0] for row in versions] == heads
