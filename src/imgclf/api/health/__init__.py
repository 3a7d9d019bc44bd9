"""Operations: the index, liveness and readiness."""
