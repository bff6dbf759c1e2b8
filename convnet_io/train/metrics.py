"""Training logs: Caffe-like lines, a metrics file (JSON lines or CSV), and its plot."""
from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import Any, TextIO


class MetricsLog:
    """Appends one record per display/test event to ``path`` (``.csv`` for CSV, else JSON lines)."""

    def __init__(self, path: str | None):
        self.path = Path(path) if path else None
        self._file: TextIO | None = None
        self._csv_fields: list[str] | None = None
        if self.path:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "a", encoding="utf-8", newline="")

    def write(self, record: dict[str, Any]) -> None:
        if not self._file:
            return
        if self.path.suffix == ".csv":
            fields = ["phase", "iter", "loss", "lr", "images_per_s", "seconds"] + sorted(
                k for k in record if k not in {"phase", "iter", "loss", "lr", "images_per_s", "seconds"})
            if self._csv_fields is None:
                self._csv_fields = fields
                if self._file.tell() == 0:
                    csv.writer(self._file).writerow(fields)
            csv.writer(self._file).writerow([record.get(f, "") for f in self._csv_fields])
        else:
            self._file.write(json.dumps(record) + "\n")
        self._file.flush()

    def close(self) -> None:
        if self._file:
            self._file.close()
            self._file = None


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    p = Path(path)
    text = p.read_text(encoding="utf-8")
    if p.suffix == ".csv":
        rows = list(csv.DictReader(text.splitlines()))
        out = []
        for r in rows:
            rec: dict[str, Any] = {}
            for k, v in r.items():
                if v == "":
                    continue
                try:
                    rec[k] = float(v) if k != "phase" else v
                except ValueError:
                    rec[k] = v
            out.append(rec)
        return out
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def plot_metrics(records: list[dict[str, Any]], out_png: str | Path, title: str = "") -> None:
    """Loss (train and test) and the test metrics against iterations, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [r for r in records if r.get("phase") == "train"]
    test = [r for r in records if r.get("phase") == "test"]
    fig, ax_loss = plt.subplots(figsize=(8, 4.5), dpi=100)
    if train:
        ax_loss.plot([r["iter"] for r in train], [r["loss"] for r in train], label="train loss", color="tab:blue")
    test_loss = [r for r in test if "loss" in r]
    if test_loss:
        ax_loss.plot([r["iter"] for r in test_loss], [r["loss"] for r in test_loss], "o-", label="test loss",
                     color="tab:orange")
    ax_loss.set_xlabel("iteration")
    ax_loss.set_ylabel("loss")
    metric_names = sorted({k for r in test for k in r if k.startswith("accuracy")})
    handles, labels = ax_loss.get_legend_handles_labels()
    if metric_names:
        ax_acc = ax_loss.twinx()
        for name in metric_names:
            pts = [r for r in test if name in r]
            line, = ax_acc.plot([r["iter"] for r in pts], [r[name] for r in pts], "s--", label=f"test {name}")
            handles.append(line)
            labels.append(f"test {name}")
        ax_acc.set_ylabel("accuracy")
        ax_acc.set_ylim(0, 1)
    ax_loss.legend(handles, labels, loc="center right")
    ax_loss.set_title(title or "training")
    ax_loss.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out_png)
    plt.close(fig)


def log(message: str, stream: TextIO | None = None) -> None:
    print(message, file=stream or sys.stdout, flush=True)
