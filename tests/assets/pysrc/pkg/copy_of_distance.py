"""A duplicate of geometry.distance: extraction keeps only the first copy."""

import math


def distance(a, b):
    """Return the Euclidean distance between two points.

    Points are (x, y) tuples.
    """
    dx = a[0] - b[0]
    dy = a[1] - b[1]
    return math.hypot(dx, dy)


def fibonacci(n: int) -> int:
    """Return the n-th Fibonacci number, with fibonacci(0) == 0."""
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a
