"""The tables: users, their predictions and their feedback; a user's rows go with them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, DateTime, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from imgclf.db.base import Base, CreatedAtMixin


class User(CreatedAtMixin, Base):
    __tablename__ = "users"
    # AUTOINCREMENT on SQLite: ids are never reused, so a deleted user's token
    # can never become someone else's.
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(50))
    email: Mapped[str] = mapped_column(String(320), unique=True, index=True)
    hashed_password: Mapped[str] = mapped_column(String(256))
    is_admin: Mapped[bool] = mapped_column(default=False)
    # Bytes of the distinct uploads stored for the user, added to as the recorder stores them:
    # the storage quota reads it instead of summing the user's whole history at every upload.
    storage_bytes: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    # Bytes (UTF-8) of the user's feedback notes, kept as they are written, replaced and
    # removed: the feedback quota reads it.
    feedback_bytes: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")

    predictions: Mapped[list[Prediction]] = relationship(
        back_populates="user", cascade="all, delete-orphan", passive_deletes=True
    )
    feedbacks: Mapped[list[Feedback]] = relationship(
        back_populates="user", cascade="all, delete-orphan", passive_deletes=True
    )


class Prediction(CreatedAtMixin, Base):
    __tablename__ = "predictions"
    __table_args__ = (
        # What a user has stored, file by file, and its size: the storage quota's question,
        # answered from the index alone however often the file was sent.
        Index(
            "ix_predictions_user_id_image_file_name",
            "user_id",
            "image_file_name",
            "image_bytes",
        ),
        # The quality figures read a window of time.
        Index("ix_predictions_created_at", "created_at"),
        # Whether anyone's prediction still names a file, before it is removed.
        Index("ix_predictions_image_file_name", "image_file_name"),
        # A user's predictions, newest first (History) or from either end (the retention).
        Index("ix_predictions_user_id_id", "user_id", "id"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # Indexed with the id (ix_predictions_user_id_id above).
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    image_file_name: Mapped[str] = mapped_column(String(100))
    image_bytes: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # The name the file had on the user's machine, shown in History; never used as a path.
    original_name: Mapped[str | None] = mapped_column(String(255), default=None)
    label: Mapped[str] = mapped_column(String(200))
    score: Mapped[float] = mapped_column(Float)
    top_k: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    model_id: Mapped[str] = mapped_column(String(200))
    latency_ms: Mapped[float] = mapped_column(Float)
    cached: Mapped[bool] = mapped_column(default=False)

    user: Mapped[User] = relationship(back_populates="predictions")


class Feedback(CreatedAtMixin, Base):
    __tablename__ = "feedbacks"
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    # Unique: a prediction has one current feedback (its owner's); a new one replaces it.
    prediction_id: Mapped[int | None] = mapped_column(
        ForeignKey("predictions.id", ondelete="SET NULL"), index=True, unique=True
    )
    score: Mapped[float] = mapped_column(Float)
    predicted_class: Mapped[str] = mapped_column(String(200))
    image_file_name: Mapped[str] = mapped_column(String(255))
    feedback: Mapped[str] = mapped_column(Text)
    # The verdict: True right, False wrong, None not said (free text only).
    correct: Mapped[bool | None] = mapped_column(default=None)
    # The right class when the prediction was wrong: a label name of the model, and its
    # WordNet id when that is known without doubt (some ImageNet names are used twice).
    correct_class: Mapped[str | None] = mapped_column(String(200), default=None)
    correct_wnid: Mapped[str | None] = mapped_column(String(20), default=None)

    user: Mapped[User] = relationship(back_populates="feedbacks")


class LoginSession(CreatedAtMixin, Base):
    """A login that may renew its access tokens until ``expires_at`` (a refresh token).

    Only the token's SHA-256 is stored: a copy of the database does not let anyone in.
    """

    __tablename__ = "login_sessions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ShadowComparison(CreatedAtMixin, Base):
    """One upload answered by a model's live version and, off the request path, by its shadow
    candidate: how far they agreed and how long each took."""

    __tablename__ = "shadow_comparisons"
    __table_args__ = (Index("ix_shadow_comparisons_model_created_at", "model", "created_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # The model's name, and the two versions compared (name@version each).
    model: Mapped[str] = mapped_column(String(100))
    live: Mapped[str] = mapped_column(String(200))
    candidate: Mapped[str] = mapped_column(String(200))
    agreed: Mapped[bool] = mapped_column()
    # Labels both top-5 lists hold (0..5).
    top5_overlap: Mapped[int] = mapped_column(Integer)
    # The candidate's top-1 score minus the live version's.
    score_difference: Mapped[float] = mapped_column(Float)
    live_latency_ms: Mapped[float] = mapped_column(Float)
    candidate_latency_ms: Mapped[float] = mapped_column(Float)
