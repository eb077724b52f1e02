"""A plotted line, shared by the dashboard's state and the piracy comparison's."""

from __future__ import annotations

import dataclasses

MAX_POINTS = 600


@dataclasses.dataclass
class Series:
    """One plotted line; thinned by half when it grows past MAX_POINTS."""

    x: list[float] = dataclasses.field(default_factory=list)
    y: list[float] = dataclasses.field(default_factory=list)

    def add(self, x: float, y: float) -> None:
        self.x.append(x)
        self.y.append(y)
        if len(self.x) > MAX_POINTS:
            self.x, self.y = self.x[::2], self.y[::2]
