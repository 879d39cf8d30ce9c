"""Tiny geometry helpers: a fixture for mmpt's extraction tests (not imported by mmpt)."""

import math
from dataclasses import dataclass
from functools import lru_cache


def distance(a, b):
    """Return the Euclidean distance between two points.

    Points are (x, y) tuples.
    """
    dx = a[0] - b[0]
    dy = a[1] - b[1]
    return math.hypot(dx, dy)


def no_docstring(x):
    return x + 1


def only_docstring():
    """This function has nothing but a docstring."""


def one_liner(x): """Docstring on the def line."""; return x


@lru_cache(maxsize=None)
def area_of_polygon(
    points: tuple[tuple[float, float], ...],
    absolute: bool = True,
) -> float:
    """Compute the area of a simple polygon with the shoelace formula."""
    total = 0.0
    for (x1, y1), (x2, y2) in zip(points, points[1:] + points[:1]):
        total += x1 * y2 - x2 * y1
    return abs(total) / 2 if absolute else total / 2


@dataclass
class Circle:
    """A circle given by its centre and radius."""

    centre: tuple[float, float]
    radius: float

    def area(self) -> float:
        """Area of the circle."""
        return math.pi * self.radius**2

    @property
    def diameter(self) -> float:
        """Twice the radius."""
        # a comment inside the body stays in the body
        return 2 * self.radius

    def contains(self, point, *, strict: bool = False) -> bool:
        """Whether `point` lies inside the circle.

            With `strict`, points on the border are outside.
        """
        d = distance(self.centre, point)
        text = """a multi-line string
whose lines are not indented"""
        del text
        return d < self.radius if strict else d <= self.radius

    class Unit:
        """A nested class."""

        def scale(self, factor):
            """Scale the unit circle by `factor`."""
            return Circle((0.0, 0.0), factor)


def outer(values):
    """Sum the squares of `values` using a helper."""

    def square(v):
        """Square one value."""
        return v * v

    return sum(square(v) for v in values)


async def fetch_all(urls, fetch):
    """Fetch every url concurrently and return the results in order."""
    results = []
    for url in urls:
        results.append(await fetch(url))
    return results


def typed_lambda_default(key=lambda item: item[0], table: dict[str, int] = {}) -> int:
    """Has colons inside the header before the real one."""
    return len(table) + (key is None)
