"""Board power from jetson-stats (jtop), sampled in a thread; "n/a" when jtop is absent.

``jetson.power['tot']['power']`` is the board input power in mW (VDD_IN on Orin); it needs the
jtop service (`sudo pip3 install -U jetson-stats`, then reboot or `sudo systemctl restart jtop`).
"""
from __future__ import annotations

import threading
from typing import Dict, List, Optional


class PowerSampler:
    """``with PowerSampler() as p: ...; p.mean_watts()`` -> float, or None when unavailable."""

    def __init__(self, interval: float = 0.1) -> None:
        self.interval = interval
        self.samples: List[float] = []
        self.error: Optional[str] = None
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._jetson = None

    def __enter__(self) -> "PowerSampler":
        try:
            from jtop import jtop  # noqa: PLC0415 - optional, Jetson only
        except ImportError:
            self.error = "jetson-stats (jtop) not installed"
            return self
        try:
            self._jetson = jtop(interval=self.interval)
            self._jetson.start()
        except Exception as e:  # noqa: BLE001 - jtop raises JtopException (service down) and others
            self.error = f"jtop unavailable: {e}"
            self._jetson = None
            return self
        self._thread = threading.Thread(target=self._loop, name="edge-power", daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.is_set() and self._jetson.ok():
            tot = (self._jetson.power or {}).get("tot", {})
            mw = tot.get("power")
            if mw is not None:
                self.samples.append(float(mw) / 1000.0)

    def reset(self) -> None:
        self.samples = []

    def mean_watts(self) -> Optional[float]:
        return sum(self.samples) / len(self.samples) if self.samples else None

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        if self._jetson is not None:
            self._jetson.close()


def energy_report(watts: Optional[float], seconds: float, frames: int) -> Dict[str, object]:
    """Average power and energy per frame; "n/a" (never a guess) without a measurement."""
    if watts is None or frames <= 0:
        return {"power_w": "n/a", "energy_mj_per_frame": "n/a"}
    return {"power_w": round(watts, 3), "energy_mj_per_frame": round(watts * seconds / frames * 1e3, 3)}
