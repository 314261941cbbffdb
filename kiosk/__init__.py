"""kiosk: an edge daemon that counts store visitors by age group and gender."""

__version__ = "0.1.0"
