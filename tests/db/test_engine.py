"""The engine: errors never show statement parameters, which may hold password hashes."""

from __future__ import annotations

import pytest
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from imgclf.db.engine import make_engine
from imgclf.db.migrate import upgrade
from imgclf.db.models import User
from imgclf.settings import Settings


def test_database_errors_hide_the_parameters(database_url: str) -> None:
    engine = make_engine(Settings(database_url=database_url))
    upgrade(engine)
    secret_hash = "$argon2id$v=19$m=65536,t=3,p=4$c2VjcmV0$aGFzaA"
    with Session(engine) as session, session.begin():
        session.add(User(name="Ada", email="ada@example.com", hashed_password=secret_hash))
    with pytest.raises(IntegrityError) as raised, Session(engine) as session, session.begin():
        session.add(User(name="Eve", email="ada@example.com", hashed_password=secret_hash))
    assert "argon2" not in str(raised.value)
    engine.dispose()
