"""A real MJPEG-over-HTTP camera for tests: serves JPEG frames until stopped."""

from __future__ import annotations

import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import cv2
import numpy as np


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def demo_frames(first: int, last: int) -> list[np.ndarray]:
    """Frames [first, last) of the bundled demo clip."""
    from kiosk.frames import demo_video_path

    cap = cv2.VideoCapture(str(demo_video_path()))
    frames = []
    for i in range(last):
        ok, image = cap.read()
        assert ok
        if i >= first:
            frames.append(image)
    cap.release()
    return frames


class MjpegServer:
    """Streams `frames` (looping) as multipart/x-mixed-replace at `fps`.

    While `paused` is set, connections stay open and send nothing: a hung camera.
    """

    def __init__(self, frames: list[np.ndarray], port: int, fps: float = 15.0) -> None:
        self.jpegs = [cv2.imencode(".jpg", f)[1].tobytes() for f in frames]
        self.port, self.fps = port, fps
        self.sent = 0
        self._httpd: ThreadingHTTPServer | None = None
        self._running = threading.Event()
        self.paused = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/stream.mjpg"

    def start(self) -> MjpegServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                i = 0
                try:
                    while server._running.is_set():
                        if server.paused.is_set():
                            time.sleep(0.05)
                            continue
                        jpg = server.jpegs[i % len(server.jpegs)]
                        self.wfile.write(
                            b"--frame\r\nContent-Type: image/jpeg\r\n"
                            + f"Content-Length: {len(jpg)}\r\n\r\n".encode()
                            + jpg
                            + b"\r\n"
                        )
                        server.sent += 1
                        i += 1
                        time.sleep(1 / server.fps)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        ThreadingHTTPServer.allow_reuse_address = True
        self._httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._httpd.daemon_threads = True
        self._running.set()
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self._running.clear()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
