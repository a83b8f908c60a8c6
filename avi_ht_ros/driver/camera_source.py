"""Camera frame sources for the camera node (ROS-free).

Every source yields :class:`CameraFrame` objects — a mono8 image with its
*acquisition* time — paced in real time by :meth:`CameraSource.next_frame`
(which blocks until the frame is due) or unpaced by iterating ``frames()``.

* :class:`OpenCVDeviceSource` — a V4L2/USB camera via OpenCV; the acquisition
  time is the grab time minus a configurable latency (exposure + transfer).
* :class:`VideoFileSource` — a video file; stamps advance by 1/fps from the
  start time (optionally looping).
* :class:`ImageFolderSource` — an image sequence (sorted file names) at a
  given rate.
* :class:`SimBagSource` — the synthetic world: frames rendered by
  ``avi-ht simulate`` into a rosbag, replayed on a wall-clock-aligned loop so
  that a separately running simulated glove replaying the same bag stays
  consistent (see :func:`sim_loop_time`).

Conversion to grey: colour input is converted with OpenCV (BGR → GRAY).
"""
from __future__ import annotations

import dataclasses
import pathlib
import time
from typing import Callable, Iterator

import numpy as np

from avi_ht_ros.common.errors import AviHtError, ConfigError

NS = 1_000_000_000
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".pgm", ".tif", ".tiff")


class CameraSourceError(AviHtError):
    """The source cannot deliver frames (device gone, file unreadable...)."""


@dataclasses.dataclass(frozen=True)
class CameraFrame:
    stamp_ns: int              # acquisition time (ROS/wall clock)
    image: np.ndarray          # [H, W] uint8
    index: int                 # frame counter of this source
    extras: dict = dataclasses.field(default_factory=dict)  # e.g. simulator ground truth


def to_mono8(image: np.ndarray) -> np.ndarray:
    """A [H, W] uint8 grey image from grey/BGR/BGRA input of uint8 or uint16."""
    import cv2

    if image is None:
        raise CameraSourceError("no image")
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise CameraSourceError(f"unsupported image dtype {image.dtype}")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 3:
        code = cv2.COLOR_BGRA2GRAY if image.shape[2] == 4 else cv2.COLOR_BGR2GRAY
        image = cv2.cvtColor(image, code)
    if image.ndim != 2:
        raise CameraSourceError(f"unsupported image shape {image.shape}")
    return np.ascontiguousarray(image)


class CameraSource:
    """Base class: real-time pacing over an unpaced ``frames()`` generator."""

    def __init__(self, clock_ns: Callable[[], int] = time.time_ns,
                 sleep: Callable[[float], None] = time.sleep):
        self.clock_ns = clock_ns
        self.sleep = sleep
        self._iterator: Iterator[CameraFrame] | None = None

    def frames(self) -> Iterator[CameraFrame]:  # pragma: no cover - abstract
        raise NotImplementedError

    def next_frame(self) -> CameraFrame | None:
        """The next frame, waiting until its stamp is due; None when the source is exhausted."""
        if self._iterator is None:
            self._iterator = self.frames()
        frame = next(self._iterator, None)
        if frame is not None:
            delay = (frame.stamp_ns - self.clock_ns()) / NS
            if delay > 0:
                self.sleep(delay)
        return frame

    def close(self) -> None:
        pass


class OpenCVDeviceSource(CameraSource):
    """A live camera through ``cv2.VideoCapture`` (device index or path, e.g. /dev/video0)."""

    def __init__(self, device: str, width: int = 0, height: int = 0, fps: float = 0.0,
                 latency_s: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        import cv2

        target = int(device) if str(device).isdigit() else str(device)
        self.capture = cv2.VideoCapture(target)
        if not self.capture.isOpened():
            raise CameraSourceError(f"camera device {device!r}: cannot open")
        if width and height:
            self.capture.set(cv2.CAP_PROP_FRAME_WIDTH, width)
            self.capture.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
        if fps:
            self.capture.set(cv2.CAP_PROP_FPS, fps)
        self.latency_ns = int(latency_s * NS)
        self.device = device

    def frames(self) -> Iterator[CameraFrame]:
        index = 0
        while True:
            ok = self.capture.grab()
            grabbed_ns = self.clock_ns()
            if not ok:
                raise CameraSourceError(f"camera device {self.device!r}: grab failed (unplugged?)")
            ok, image = self.capture.retrieve()
            if not ok:
                raise CameraSourceError(f"camera device {self.device!r}: retrieve failed")
            yield CameraFrame(grabbed_ns - self.latency_ns, to_mono8(image), index)
            index += 1

    def next_frame(self) -> CameraFrame | None:  # the device paces itself
        if self._iterator is None:
            self._iterator = self.frames()
        return next(self._iterator, None)

    def close(self) -> None:
        self.capture.release()


class VideoFileSource(CameraSource):
    """Frames of a video file at its own frame rate (or ``fps`` if given)."""

    def __init__(self, path: str, fps: float = 0.0, loop: bool = False, **kwargs):
        super().__init__(**kwargs)
        import cv2

        self.path = pathlib.Path(path)
        if not self.path.is_file():
            raise ConfigError(str(path), "video file not found")
        self.capture = cv2.VideoCapture(str(self.path))
        if not self.capture.isOpened():
            raise ConfigError(str(path), "cannot decode video file")
        file_fps = self.capture.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps or file_fps or 30.0)
        self.loop = loop

    def frames(self) -> Iterator[CameraFrame]:
        import cv2

        start = self.clock_ns()
        index = 0
        period = NS / self.fps
        while True:
            ok, image = self.capture.read()
            if not ok:
                if not self.loop or index == 0:
                    return
                self.capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
                continue
            yield CameraFrame(start + int(round(index * period)), to_mono8(image), index)
            index += 1

    def close(self) -> None:
        self.capture.release()


class ImageFolderSource(CameraSource):
    """Images of a folder, sorted by name, at ``fps``."""

    def __init__(self, folder: str, fps: float = 30.0, loop: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.folder = pathlib.Path(folder)
        if not self.folder.is_dir():
            raise ConfigError(str(folder), "image folder not found")
        self.files = sorted(p for p in self.folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.files:
            raise ConfigError(str(folder), f"no images ({', '.join(IMAGE_SUFFIXES)})")
        if not fps > 0:
            raise ConfigError("fps", f"must be > 0, got {fps}")
        self.fps = float(fps)
        self.loop = loop
        self.unreadable = 0

    def frames(self) -> Iterator[CameraFrame]:
        import cv2

        start = self.clock_ns()
        period = NS / self.fps
        index = 0
        while True:
            for path in self.files:
                image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
                if image is None:
                    self.unreadable += 1  # counted, skipped
                    continue
                yield CameraFrame(start + int(round(index * period)), to_mono8(image), index)
                index += 1
            if not self.loop:
                return


def sim_loop_time(bag_start_ns: int, bag_duration_ns: int, now_ns: int) -> tuple[int, int]:
    """Map wall time onto a looping bag: ``(loop_index, bag_time_ns)``.

    Every process replaying the same bag computes the same mapping from the
    wall clock alone, so a simulated camera and a simulated glove started
    independently replay the same instant of the synthetic world.
    """
    loop, into = divmod(int(now_ns), int(bag_duration_ns))
    return loop, bag_start_ns + into


class SimBagSource(CameraSource):
    """Replays the rendered frames (and ground truth) of a simulated bag, looping on the wall clock."""

    def __init__(self, bag: str, camera_topic: str, ground_truth_topics: tuple[str, ...] = (), **kwargs):
        super().__init__(**kwargs)
        from avi_ht_ros.io import convert
        from avi_ht_ros.io.bag import read_messages

        self.bag = pathlib.Path(bag)
        images, truths = [], {}
        for message in read_messages(self.bag, [camera_topic, *ground_truth_topics]):
            stamp = convert.stamp_ns_of(message.msg.header.stamp)
            if message.topic == camera_topic:
                images.append((stamp, convert.image_from_msg(message.msg).copy()))
            else:
                truths.setdefault(stamp, {})[message.topic] = message.msg
        if len(images) < 2:
            raise ConfigError(str(bag), f"no frames on {camera_topic}")
        images.sort(key=lambda item: item[0])
        self.stamps = np.array([s for s, _ in images], np.int64)
        self.images = [img for _, img in images]
        self.truths = truths
        period = int(np.median(np.diff(self.stamps)))
        self.start_ns = int(self.stamps[0])
        self.duration_ns = int(self.stamps[-1] - self.stamps[0]) + period

    def frames(self) -> Iterator[CameraFrame]:
        loop, bag_now = sim_loop_time(self.start_ns, self.duration_ns, self.clock_ns())
        j = int(np.searchsorted(self.stamps, bag_now))
        index = 0
        while True:
            if j >= len(self.stamps):
                loop, j = loop + 1, 0
            bag_stamp = int(self.stamps[j])
            live_stamp = loop * self.duration_ns + (bag_stamp - self.start_ns)
            yield CameraFrame(live_stamp, self.images[j], index,
                              extras={"bag_stamp_ns": bag_stamp, "truth": self.truths.get(bag_stamp, {})})
            j += 1
            index += 1
