"""``python -m backtrader_ccxt.venues``: print the venue table (docs/venues.md)."""

from . import venue_table

if __name__ == "__main__":
    print(venue_table(), end="")
