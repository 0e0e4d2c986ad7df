"""The feed's ``tz``: the zone backtrader shows bar times in and reads naive
``fromdate``/``todate`` in, while the lines themselves stay UTC.

backtrader localises with ``tz.localize(dt)`` (pytz's API). Its own ``tzparse`` needs pytz for
a zone *name* (not installed with backtrader, nor pulled in by pandas 3) and fails on
``zoneinfo.ZoneInfo`` and ``datetime.timezone``, which have no ``localize`` and cannot be
given one. :func:`resolve_tz` accepts all of them and returns a ``tzinfo`` that has it.
"""

from __future__ import annotations

import zoneinfo
from datetime import datetime, timedelta, tzinfo

from .errors import ConfigurationError

__all__ = ["resolve_tz", "to_utc_ms"]

_EPOCH = datetime(1970, 1, 1)
_CHOICES = (
    "valid choices: None (UTC), an IANA zone name such as 'America/New_York', a "
    "zoneinfo.ZoneInfo, a datetime.timezone, or a pytz zone"
)


class _Zone(zoneinfo.ZoneInfo):
    """A ZoneInfo with pytz's ``localize``: a naive time read in this zone."""

    def localize(self, dt: datetime) -> datetime:
        return dt if dt.tzinfo is not None else dt.replace(tzinfo=self)


class _Fixed(tzinfo):
    """A fixed UTC offset (what ``datetime.timezone`` gives) with ``localize``."""

    def __init__(self, offset: timedelta, name: str) -> None:
        self._offset, self._name = offset, name

    def utcoffset(self, dt):
        return self._offset

    def dst(self, dt):
        return timedelta(0)

    def tzname(self, dt):
        return self._name

    def fromutc(self, dt):
        return (dt + self._offset).replace(tzinfo=self)

    def localize(self, dt: datetime) -> datetime:
        return dt if dt.tzinfo is not None else dt.replace(tzinfo=self)

    def __repr__(self) -> str:
        return f"_Fixed({self._name})"


def resolve_tz(value) -> tzinfo | None:
    """``value`` as a tzinfo with ``localize``, or None; raises ConfigurationError."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            return _Zone(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ConfigurationError(f"tz {value!r} is not a known time zone; {_CHOICES}") from None
    if isinstance(value, zoneinfo.ZoneInfo):
        if value.key is None:  # built from a file: keep it, wrapped as a fixed zone is wrong
            raise ConfigurationError(f"tz {value!r} has no zone key; {_CHOICES}")
        return _Zone(value.key)
    if isinstance(value, tzinfo):
        if hasattr(value, "localize"):  # pytz, or already one of ours
            return value
        offset = value.utcoffset(None)
        if offset is not None:  # datetime.timezone: a fixed offset
            return _Fixed(offset, value.tzname(None) or str(offset))
    raise ConfigurationError(f"tz {value!r} is not usable; {_CHOICES}")


def to_utc_ms(dt: datetime, tz: tzinfo | None) -> int:
    """A ``fromdate``/``todate`` as epoch ms, read as backtrader reads it: naive times are in
    ``tz`` (UTC without one); aware times keep their own zone."""
    if dt.tzinfo is None and tz is not None:
        dt = tz.localize(dt)
    if dt.tzinfo is not None:
        offset = dt.utcoffset()
        dt = dt.replace(tzinfo=None) - (offset or timedelta(0))
    return int((dt - _EPOCH) / timedelta(milliseconds=1))
