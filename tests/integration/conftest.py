from __future__ import annotations

import os

import pytest


@pytest.fixture
def marks(home):
    """Marker files shared with tasks in tests.apps.scenarios (same GREENQ_HOME)."""
    return Marks(os.path.join(home, "marks"))


class Marks:
    def __init__(self, path: str) -> None:
        self.path = path

    def exists(self, name: str) -> bool:
        return os.path.exists(os.path.join(self.path, name))

    def count(self, name: str) -> int:
        try:
            with open(os.path.join(self.path, name)) as f:
                return sum(1 for _ in f)
        except FileNotFoundError:
            return 0

    def set(self, name: str) -> None:
        os.makedirs(self.path, exist_ok=True)
        with open(os.path.join(self.path, name), "a"):
            pass
