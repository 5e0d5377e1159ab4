"""A new sending domain's warm-up (issue 18): how many sends each day has used of its allowance."""

from sqlalchemy import Column, String
from sqlmodel import Field, SQLModel


class SendDay(SQLModel, table=True):
    """One row per day of a warm-up (``day``: ISO date in DIGEST_TIMEZONE): sends leased that day, by every
    sender and worker. Locked while a sender claims, so two of them never both take the last of the allowance."""

    __tablename__ = "send_day"
    day: str = Field(sa_column=Column(String(10), primary_key=True))
    used: int = 0
