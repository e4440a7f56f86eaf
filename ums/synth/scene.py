"""Procedural drone scenes seen from above: a visible image and a co-registered temperature map.

Everything is drawn in the wide camera's pixel grid from sizes in metres (ground sample distance
from altitude and focal length), so objects have the sizes a real nadir flight would see: a car is
about 150 px long in the 4000x3000 wide frame at 80 m, a person about 15 px. The temperature map is
drawn at half resolution, which is still twice the thermal camera's sampling of the same ground.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

TEMPERATURE_SCALE = 0.5  # temperature map resolution relative to the visible frame


@dataclass
class SceneObject:
    category: str  # "person" | "car"
    polygon: np.ndarray  # (N, 2) wide-frame pixels


@dataclass
class Scene:
    visible: np.ndarray  # (H, W, 3) uint8 BGR
    temperature: np.ndarray  # (H/2, W/2) float32 degrees Celsius
    objects: list[SceneObject] = field(default_factory=list)


def render_scene(
    width: int, height: int, metres_per_px: float, rng: np.random.Generator, night: bool = False
) -> Scene:
    """Ground, roads, buildings, trees, cars and people, drawn in both modalities."""
    painter = _Painter(width, height, metres_per_px, rng, night)
    painter.ground()
    roads = [painter.road() for _ in range(rng.integers(1, 3))]
    for _ in range(rng.integers(1, 4)):
        painter.building()
    for _ in range(rng.integers(6, 14)):
        painter.tree()
    for road in roads:
        for _ in range(rng.integers(2, 6)):
            painter.car(road)
    for _ in range(rng.integers(3, 9)):
        painter.person(roads[rng.integers(len(roads))])
    return painter.finish()


@dataclass
class _Road:
    start: np.ndarray
    direction: np.ndarray  # unit vector
    length: float
    width_px: float


class _Painter:
    def __init__(self, width, height, metres_per_px, rng, night):
        self.width, self.height, self.m_per_px, self.rng, self.night = width, height, metres_per_px, rng, night
        self.visible = np.empty((height, width, 3), np.uint8)
        self.temperature = np.empty(
            (round(height * TEMPERATURE_SCALE), round(width * TEMPERATURE_SCALE)), np.float32
        )
        self.objects: list[SceneObject] = []
        self.ambient = float(rng.uniform(4, 14) if night else rng.uniform(16, 28))

    def px(self, metres: float) -> float:
        return metres / self.m_per_px

    def ground(self) -> None:
        grass = np.array([60, 110, 70], np.float32) + self.rng.normal(0, 10, 3)
        soil = np.array([80, 120, 150], np.float32) + self.rng.normal(0, 10, 3)
        blend = _smooth_noise(self.rng, self.height, self.width, cells=12)
        fine = _fine_noise(self.rng, self.height, self.width, amplitude=14.0)
        # grass + (soil - grass) * blend + fine, per channel, saturated to uint8 in one OpenCV pass:
        # at 12 MP this is ten times faster than the same arithmetic in NumPy.
        channels = [
            cv2.addWeighted(blend, float(s - g), fine, 1.0, float(g), dtype=cv2.CV_8U)
            for g, s in zip(grass, soil)
        ]
        cv2.merge(channels, dst=self.visible)
        th, tw = self.temperature.shape
        blend_small = cv2.resize(blend, (tw, th), interpolation=cv2.INTER_AREA)
        warm_patches = _smooth_noise(self.rng, th, tw, cells=10)
        # Bare soil heats more than grass by day and cools more by night.
        soil_heating = -2.0 if self.night else 4.0
        self.temperature[:] = self.ambient + (warm_patches - 0.5) * 3.0 + blend_small * soil_heating

    def road(self) -> _Road:
        angle = self.rng.uniform(0, math.pi)
        direction = np.array([math.cos(angle), math.sin(angle)])
        centre = np.array([self.width, self.height]) * self.rng.uniform(0.3, 0.7, 2)
        length = math.hypot(self.width, self.height) * 1.2
        start = centre - direction * length / 2
        road = _Road(start, direction, length, self.px(self.rng.uniform(6, 9)))
        end = start + direction * length
        asphalt = tuple(int(v) for v in self.rng.integers(70, 100, 3))
        self._line(start, end, road.width_px, asphalt, self.ambient + (2.0 if self.night else 5.0))
        # Dashed centre line: visible paint, thermally almost the same as the asphalt.
        dash = self.px(3.0)
        for t in np.arange(0, length, dash * 2.5):
            a = start + direction * t
            self._line(a, a + direction * dash, self.px(0.15), (230, 230, 230),
                       self.ambient + (1.5 if self.night else 4.0))
        return road

    def building(self) -> None:
        centre = np.array([self.width, self.height]) * self.rng.uniform(0.05, 0.95, 2)
        size = np.array([self.px(self.rng.uniform(8, 20)), self.px(self.rng.uniform(8, 16))])
        polygon = _rectangle(centre, size, self.rng.uniform(0, math.pi))
        roof = tuple(int(v) for v in self.rng.integers(60, 200, 3))
        self._fill(polygon, roof, self.ambient + self.rng.uniform(-2, 3 if self.night else 12))

    def tree(self) -> None:
        centre = np.array([self.width, self.height]) * self.rng.uniform(0, 1, 2)
        radius = self.px(self.rng.uniform(2, 5))
        polygon = _ellipse(centre, (radius, radius), 0.0)
        crown = (int(self.rng.integers(30, 60)), int(self.rng.integers(80, 120)), int(self.rng.integers(30, 60)))
        self._fill(polygon, crown, self.ambient + (1.0 if self.night else -3.0))

    def car(self, road: _Road) -> None:
        along = self.rng.uniform(0.2, 0.8) * road.length
        lane = (self.rng.choice([-1, 1])) * road.width_px * 0.25
        normal = np.array([-road.direction[1], road.direction[0]])
        centre = road.start + road.direction * along + normal * lane
        if not self._inside(centre, margin=self.px(3)):
            return
        length, width = self.px(self.rng.uniform(4.0, 5.0)), self.px(self.rng.uniform(1.7, 2.0))
        angle = math.atan2(road.direction[1], road.direction[0])
        body = _rectangle(centre, np.array([length, width]), angle)
        paint = tuple(int(v) for v in self.rng.integers(20, 240, 3))
        self._fill(body, paint, self.ambient + self.rng.uniform(3, 8))
        # Engine at the front third: the warmest part of a car that has been driven.
        engine_centre = centre + road.direction * length * 0.33
        engine = _rectangle(engine_centre, np.array([length * 0.3, width * 0.85]), angle)
        windscreen = _rectangle(centre + road.direction * length * 0.1,
                                np.array([length * 0.18, width * 0.8]), angle)
        self._fill(engine, paint, self.ambient + self.rng.uniform(15, 30))
        self._fill(windscreen, (40, 35, 30), self.ambient + self.rng.uniform(1, 4))
        self.objects.append(SceneObject("car", body))

    def person(self, road: _Road) -> None:
        along = self.rng.uniform(0.1, 0.9) * road.length
        normal = np.array([-road.direction[1], road.direction[0]])
        side = self.rng.choice([-1, 1]) * (road.width_px / 2 + self.px(self.rng.uniform(0.8, 4.0)))
        centre = road.start + road.direction * along + normal * side
        if not self._inside(centre, margin=self.px(1)):
            return
        axes = (self.px(0.28), self.px(0.2))
        body = _ellipse(centre, axes, self.rng.uniform(0, math.pi))
        clothing = tuple(int(v) for v in self.rng.integers(10, 250, 3))
        self._fill(body, clothing, self.rng.uniform(28, 33))
        head = _ellipse(centre, (axes[1] * 0.6, axes[1] * 0.6), 0.0)
        self._fill(head, (40, 60, 90), self.rng.uniform(33, 35))
        self.objects.append(SceneObject("person", body))

    def finish(self) -> Scene:
        return Scene(self.visible, self.temperature, self.objects)

    # drawing in both modalities at once
    def _fill(self, polygon: np.ndarray, colour, temperature: float) -> None:
        cv2.fillPoly(self.visible, [_fixed(polygon)], colour, cv2.LINE_AA, shift=4)
        cv2.fillPoly(self.temperature, [_fixed(polygon * TEMPERATURE_SCALE)], float(temperature),
                     cv2.LINE_AA, shift=4)

    def _line(self, start, end, thickness_px, colour, temperature: float) -> None:
        direction = (end - start) / max(np.linalg.norm(end - start), 1e-9)
        normal = np.array([-direction[1], direction[0]]) * thickness_px / 2
        self._fill(np.array([start + normal, end + normal, end - normal, start - normal]), colour,
                   temperature)

    def _inside(self, point: np.ndarray, margin: float) -> bool:
        return margin <= point[0] <= self.width - margin and margin <= point[1] <= self.height - margin


def _fixed(polygon: np.ndarray) -> np.ndarray:
    # fillPoly with shift=4 takes 1/16-pixel fixed point: sub-pixel accurate edges.
    return np.round(np.asarray(polygon) * 16).astype(np.int32)


def _rectangle(centre: np.ndarray, size: np.ndarray, angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    half = size / 2
    corners = np.array([[-half[0], -half[1]], [half[0], -half[1]], [half[0], half[1]], [-half[0], half[1]]])
    return corners @ np.array([[c, s], [-s, c]]) + centre


def _ellipse(centre: np.ndarray, axes: tuple[float, float], angle: float, points: int = 24) -> np.ndarray:
    t = np.linspace(0, 2 * math.pi, points, endpoint=False)
    unit = np.stack([axes[0] * np.cos(t), axes[1] * np.sin(t)], axis=1)
    c, s = math.cos(angle), math.sin(angle)
    return unit @ np.array([[c, s], [-s, c]]) + centre


def _smooth_noise(rng: np.random.Generator, height: int, width: int, cells: int) -> np.ndarray:
    """Blotchy noise in [0, 1]: a coarse random grid upsampled with bicubic interpolation."""
    coarse = rng.random((cells, max(2, round(cells * width / height)))).astype(np.float32)
    smooth = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    return np.clip(smooth, 0, 1, out=smooth)


def _fine_noise(rng: np.random.Generator, height: int, width: int, amplitude: float) -> np.ndarray:
    # A tiled 256 px tile keeps texture cheap at 12 MP; ground texture repeating every 7 m is fine.
    tile = rng.normal(0, amplitude, (256, 256)).astype(np.float32)
    return np.tile(tile, (height // 256 + 1, width // 256 + 1))[:height, :width]
