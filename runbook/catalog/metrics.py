"""Metric samples for capacity reports: one row per resource per moment (a PostgreSQL table's
size, a mount's bytes used, Redis memory, a Prometheus series), with the limit it had then
(max_connections, the mount's size, maxmemory; none for a table). `capacity-collect` records
them; a Prometheus backfill records past points once (a sample already kept for the same
resource and time is not stored twice); the capacity report reads each resource's history.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from pydantic import BaseModel
from sqlalchemy import Float, Index, Integer, String, UniqueConstraint, func, select
from sqlalchemy.orm import Mapped, mapped_column

from runbook.catalog.backups import Catalog
from runbook.catalog.db import Base, UTCDateTime


class SampleRow(Base):
    __tablename__ = "metric_samples"
    __table_args__ = (UniqueConstraint("resource", "time", name="uq_metric_samples_resource_time"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    resource: Mapped[str] = mapped_column(String(512))  # "app/table/public.orders"
    kind: Mapped[str] = mapped_column(String(63), index=True)  # "postgres.table"
    target: Mapped[str] = mapped_column(String(63), index=True)
    value: Mapped[float] = mapped_column(Float)
    limit: Mapped[float | None] = mapped_column(Float, nullable=True)
    unit: Mapped[str] = mapped_column(String(16))
    time: Mapped[datetime] = mapped_column(UTCDateTime())
    source: Mapped[str] = mapped_column(String(16))  # collect | backfill


# Per-resource history reads: WHERE resource = ? ORDER BY time.
Index("ix_metric_samples_resource_time", SampleRow.resource, SampleRow.time)


class Sample(BaseModel):
    """One measurement of one resource."""

    resource: str
    kind: str
    target: str
    value: float
    limit: float | None = None
    unit: str = ""
    time: datetime
    source: str = "collect"

    @property
    def percent(self) -> float | None:
        return 100 * self.value / self.limit if self.limit else None


class ResourceInfo(BaseModel):
    """A resource the catalog has samples of: its newest sample and how many it has."""

    latest: Sample
    count: int
    first: datetime


_COLUMNS = ("resource", "kind", "target", "value", "limit", "unit", "time", "source")


def _sample(row: SampleRow) -> Sample:
    return Sample.model_validate({c: getattr(row, c) for c in _COLUMNS})


class MetricSamples:
    """The catalog's metric samples: record, and read per resource."""

    def __init__(self, catalog: Catalog):
        self.catalog = catalog

    def record(self, samples: Iterable[Sample]) -> int:
        """Store the samples; one already kept for the same resource and time is skipped
        (a backfill read twice). Returns how many were stored."""
        fresh: dict[tuple[str, datetime], Sample] = {}
        for sample in samples:
            fresh.setdefault((sample.resource, sample.time), sample)
        if not fresh:
            return 0
        stored = 0
        with self.catalog.session() as session:
            by_resource: dict[str, list[Sample]] = {}
            for sample in fresh.values():
                by_resource.setdefault(sample.resource, []).append(sample)
            for resource, group in by_resource.items():
                times = [s.time for s in group]
                kept = {
                    t.timestamp()
                    for t in session.scalars(
                        select(SampleRow.time).where(
                            SampleRow.resource == resource,
                            SampleRow.time >= min(times),
                            SampleRow.time <= max(times),
                        )
                    )
                }
                new = [s for s in group if s.time.timestamp() not in kept]
                session.add_all(SampleRow(**s.model_dump(include=set(_COLUMNS))) for s in new)
                stored += len(new)
        return stored

    def history(self, resource: str, since: datetime | None = None) -> list[Sample]:
        """The resource's samples, oldest first."""
        query = select(SampleRow).where(SampleRow.resource == resource)
        if since is not None:
            query = query.where(SampleRow.time >= since)
        with self.catalog.session() as session:
            return [_sample(row) for row in session.scalars(query.order_by(SampleRow.time))]

    def newest(self, source: str) -> datetime | None:
        """The time of the newest sample from `source` (collect, backfill, health), of any
        resource; None when there is none."""
        with self.catalog.session() as session:
            return session.scalar(
                select(func.max(SampleRow.time)).where(SampleRow.source == source)
            )

    def resources(self) -> list[ResourceInfo]:
        """Every resource with samples, by name."""
        newest = (
            select(
                SampleRow.resource,
                func.max(SampleRow.time).label("newest"),
                func.min(SampleRow.time).label("first"),
                func.count().label("count"),
            )
            .group_by(SampleRow.resource)
            .subquery()
        )
        query = (
            select(SampleRow, newest.c.count, newest.c.first)
            .join(
                newest,
                (SampleRow.resource == newest.c.resource) & (SampleRow.time == newest.c.newest),
            )
            .order_by(SampleRow.resource)
        )
        with self.catalog.session() as session:
            return [
                ResourceInfo(latest=_sample(row), count=count, first=first)
                for row, count, first in session.execute(query)
            ]


__all__ = ["MetricSamples", "ResourceInfo", "Sample"]
