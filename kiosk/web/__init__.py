"""The local web page kioskd serves (`web:` config section, the `web` extra): Today, Reports,
Health, the JSON API and, with `web.live_view`, the live setup view.

Threads: the server (kiosk/web/server.py) and one thread per connection, in kioskd's process.
The frame loop hands the live view a snapshot only while a viewer asks (kiosk/web/live.py);
everything else reads the database through a read-only store, or plain counters. This package
never writes the database and never sends a face image anywhere but the live view's frame.
"""
