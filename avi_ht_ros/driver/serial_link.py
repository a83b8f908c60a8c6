"""Serial transport for the glove: pyserial port -> FrameParser -> frame callback.

:class:`SerialGloveLink` owns a reconnecting read loop meant for a worker thread:

* opens the port by name (a /dev/tty* device, a pty or a stable symlink to either),
* reads whatever has arrived (blocking at most ``read_timeout_s``), stamps the read
  with the host clock and feeds the parser,
* hands every frame to ``on_frame(frame, host_receive_time_ns)`` (called in the
  reader thread; frames completed by one read share its receive time),
* on an unplug (``SerialException``/``OSError`` from pyserial, the port path vanishing,
  or no bytes for ``silence_timeout_s``) closes the port, drops the parser's partial
  frame and reopens with exponential backoff,
* never lets an exception out of :meth:`SerialGloveLink.run`: failures are counted in
  :class:`LinkStats`, logged with ``logging`` and reported to ``on_event(kind, message)``.

Parameters: :class:`SerialLinkConfig`.  The host clock is injectable (``host_clock_ns``)
so the ROS node can stamp reads with its node clock.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from typing import Callable

import serial

from avi_ht_ros.common.errors import ConfigError
from avi_ht_ros.common.params import param, validate_params
from avi_ht_ros.driver.protocol import FrameParser, GloveFrame

LOGGER = logging.getLogger(__name__)

FrameCallback = Callable[[GloveFrame, int], None]
EventCallback = Callable[[str, str], None]

# Event kinds passed to on_event.
EVENT_CONNECTED = "connected"
EVENT_DISCONNECTED = "disconnected"
EVENT_OPEN_FAILED = "open_failed"
EVENT_CALLBACK_ERROR = "callback_error"
EVENT_INTERNAL_ERROR = "internal_error"


@dataclasses.dataclass
class LinkStats:
    connects: int = 0
    disconnects: int = 0  # read errors + vanished port + silence
    open_failures: int = 0
    read_errors: int = 0
    port_vanished: int = 0
    silence_reconnects: int = 0
    callback_errors: int = 0
    internal_errors: int = 0  # anything unexpected caught by the loop's last guard
    bytes_read: int = 0
    frames_delivered: int = 0


@dataclasses.dataclass(frozen=True)
class SerialLinkConfig:
    """Parameters of :class:`SerialGloveLink` (validated on construction)."""

    port: str = param("/dev/ttyACM0", "serial device (or a stable symlink such as /dev/serial/by-id/...)")
    baudrate: int = param(921600, "UART baud rate (ignored by USB CDC devices)", range=(1200, 16_000_000),
                          unit="baud")
    read_timeout_s: float = param(0.02, "longest a read blocks waiting for bytes", range=(0.001, 1.0), unit="s")
    reconnect_initial_s: float = param(0.05, "first wait before reopening a lost port (doubles per failure)",
                                       range=(0.001, 60.0), unit="s")
    reconnect_max_s: float = param(2.0, "longest wait between reopen attempts", range=(0.001, 600.0), unit="s")
    silence_timeout_s: float = param(2.0, "reopen the port after this long without bytes (0: never)",
                                     range=(0.0, 3600.0), unit="s")
    exclusive: bool = param(True, "lock the port against a second reader (POSIX flock)")
    max_read_bytes: int = param(4096, "largest single read", range=(1, 1 << 20), unit="B")

    def __post_init__(self):
        validate_params(self)
        if self.reconnect_max_s < self.reconnect_initial_s:
            raise ConfigError("SerialLinkConfig.reconnect_max_s",
                              f"{self.reconnect_max_s} must be >= reconnect_initial_s ({self.reconnect_initial_s})")


class SerialGloveLink:
    """Reconnecting serial reader feeding a :class:`FrameParser`; see the module docstring."""

    def __init__(
        self,
        config: SerialLinkConfig,
        *,
        on_frame: FrameCallback,
        parser: FrameParser | None = None,
        host_clock_ns: Callable[[], int] = time.time_ns,
        on_event: EventCallback | None = None,
        serial_factory: Callable[..., serial.Serial] = serial.Serial,
    ):
        self.config = config
        self.port = config.port
        self.on_frame = on_frame
        self.parser = parser if parser is not None else FrameParser()
        self.host_clock_ns = host_clock_ns
        self.on_event = on_event
        self.serial_factory = serial_factory
        self.stats = LinkStats()
        self._serial: serial.Serial | None = None
        self._thread: threading.Thread | None = None
        self._stop_event: threading.Event | None = None
        self._open_failure_streak = 0

    # ------------------------------------------------------------------ thread helpers

    @property
    def connected(self) -> bool:
        return self._serial is not None

    def start(self) -> None:
        """Run :meth:`run` in a daemon thread until :meth:`stop`."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop_event = threading.Event()
        self._thread = threading.Thread(
            target=self.run, args=(self._stop_event,), name=f"glove-serial:{self.port}", daemon=True
        )
        self._thread.start()

    def stop(self, timeout_s: float = 2.0) -> None:
        """Stop the thread started by :meth:`start` and close the port."""
        if self._stop_event is None or self._thread is None:
            return
        self._stop_event.set()
        port = self._serial
        if port is not None:
            try:
                port.cancel_read()  # wakes a blocked read at once
            except Exception:  # noqa: BLE001 - the port may be half closed; the timeout covers it
                pass
        self._thread.join(timeout_s)
        self._thread = None

    # ------------------------------------------------------------------ loop

    def run(self, stop_event: threading.Event) -> None:
        """Connect, read and reconnect until ``stop_event`` is set.  Never raises."""
        backoff = self.config.reconnect_initial_s
        while not stop_event.is_set():
            try:
                port = self._open()
                if port is None:
                    stop_event.wait(backoff)
                    backoff = min(backoff * 2.0, self.config.reconnect_max_s)
                    continue
                backoff = self.config.reconnect_initial_s
                try:
                    self._read_until_disconnect(port, stop_event)
                finally:
                    self._close(port)
            except Exception as error:  # noqa: BLE001 - last guard: the loop must survive
                self.stats.internal_errors += 1
                LOGGER.exception("glove link %s: unexpected error", self.port)
                self._emit(EVENT_INTERNAL_ERROR, f"{type(error).__name__}: {error}")
                stop_event.wait(backoff)
                backoff = min(backoff * 2.0, self.config.reconnect_max_s)

    def _open(self) -> serial.Serial | None:
        try:
            port = self.serial_factory(
                self.port, self.config.baudrate, timeout=self.config.read_timeout_s, exclusive=self.config.exclusive
            )
        except (serial.SerialException, OSError, ValueError) as error:
            self.stats.open_failures += 1
            self._open_failure_streak += 1
            message = f"cannot open {self.port}: {error}"
            if self._open_failure_streak == 1:
                LOGGER.warning("glove link: %s (retrying)", message)
            else:
                LOGGER.debug("glove link: %s", message)
            self._emit(EVENT_OPEN_FAILED, message)
            return None
        self._open_failure_streak = 0
        self._serial = port
        self.stats.connects += 1
        LOGGER.info("glove link: connected to %s at %d baud", self.port, self.config.baudrate)
        self._emit(EVENT_CONNECTED, f"connected to {self.port}")
        return port

    def _close(self, port: serial.Serial) -> None:
        self._serial = None
        try:
            port.close()
        except Exception:  # noqa: BLE001 - closing a vanished device may fail; it is gone either way
            pass
        # A partial frame from before the disconnect can never complete.
        self.parser.reset_buffer()

    def _disconnected(self, counter: str, message: str) -> None:
        setattr(self.stats, counter, getattr(self.stats, counter) + 1)
        self.stats.disconnects += 1
        LOGGER.warning("glove link %s: %s; reconnecting", self.port, message)
        self._emit(EVENT_DISCONNECTED, message)

    def _read_until_disconnect(self, port: serial.Serial, stop_event: threading.Event) -> None:
        last_data = time.monotonic()
        while not stop_event.is_set():
            try:
                waiting = port.in_waiting
                data = port.read(min(max(1, waiting), self.config.max_read_bytes))
            except (serial.SerialException, OSError, TypeError, ValueError) as error:
                # TypeError/ValueError: pyserial on a file descriptor closed under it.
                self._disconnected("read_errors", f"read failed: {error}")
                return
            receive_time_ns = self.host_clock_ns()
            if data:
                last_data = time.monotonic()
                self.stats.bytes_read += len(data)
                self._deliver(self.parser.feed(data), receive_time_ns)
                continue
            if not os.path.exists(self.port):
                self._disconnected("port_vanished", f"{self.port} vanished")
                return
            silence_s = self.config.silence_timeout_s
            if silence_s > 0 and time.monotonic() - last_data > silence_s:
                self._disconnected("silence_reconnects", f"no data for {silence_s:.1f} s")
                return

    def _deliver(self, frames: list[GloveFrame], receive_time_ns: int) -> None:
        for frame in frames:
            try:
                self.on_frame(frame, receive_time_ns)
                self.stats.frames_delivered += 1
            except Exception as error:  # noqa: BLE001 - a consumer bug must not stop the link
                self.stats.callback_errors += 1
                if self.stats.callback_errors == 1 or self.stats.callback_errors % 1000 == 0:
                    LOGGER.exception(
                        "glove link %s: frame callback failed (%d so far)", self.port, self.stats.callback_errors
                    )
                self._emit(EVENT_CALLBACK_ERROR, f"{type(error).__name__}: {error}")

    def _emit(self, kind: str, message: str) -> None:
        if self.on_event is None:
            return
        try:
            self.on_event(kind, message)
        except Exception:  # noqa: BLE001
            LOGGER.exception("glove link %s: event callback failed", self.port)
