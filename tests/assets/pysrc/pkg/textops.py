"""String helpers: a fixture for mmpt's extraction tests."""

from collections import Counter


def word_counts(text: str) -> dict[str, int]:
    """Count how often each word occurs in `text`, ignoring case."""
    words = [w.strip(".,;:!?").lower() for w in text.split()]
    return dict(Counter(w for w in words if w))


def is_palindrome(s: str) -> bool:
    """Return True when `s` reads the same forwards and backwards."""
    cleaned = "".join(ch.lower() for ch in s if ch.isalnum())
    return cleaned == cleaned[::-1]


def chunk(items: list, size: int) -> list[list]:
    """Split `items` into consecutive lists of at most `size` elements."""
    if size <= 0:
        raise ValueError("size must be positive")
    return [items[i : i + size] for i in range(0, len(items), size)]


class Stack:
    """A last-in, first-out stack backed by a list."""

    def __init__(self):
        """Create an empty stack."""
        self._items = []

    def push(self, item) -> None:
        """Put `item` on top of the stack."""
        self._items.append(item)

    def pop(self):
        """Remove and return the top item; raise IndexError when empty."""
        if not self._items:
            raise IndexError("pop from an empty stack")
        return self._items.pop()

    def __len__(self) -> int:
        """Number of items on the stack."""
        return len(self._items)
