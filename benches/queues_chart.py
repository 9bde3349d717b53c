#!/usr/bin/env python3
"""Draws the table `bash benches/throughput.sh --queues "1 2 4"` prints as a PNG: packets/s
(bars) and CPU per packet (line) for each number of queues. Run by hand; the chart in docs/ is
committed, so neither the tests nor CI need matplotlib (Debian: python3-matplotlib).

    bash benches/throughput.sh --queues "1 2 4" | tee queues.txt
    python3 benches/queues_chart.py queues.txt docs/queues.png "2 vCPU AMD EPYC"
"""

import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)


def read_table(path):
    """The rows under the `queues packets/s ...` header: (queues, packets/s, CPU us/packet)."""
    rows = []
    in_table = False
    with open(path, encoding="utf-8") as text:
        for line in text:
            words = line.split()
            if words[:2] == ["queues", "packets/s"]:
                in_table = True
                continue
            if in_table and len(words) >= 3 and words[0].isdigit():
                cpu = float(words[2]) if words[2] != "n/a" else float("nan")
                rows.append((int(words[0]), int(words[1]), cpu))
    if not rows:
        sys.exit(f"{path}: no `queues packets/s` table found")
    return rows


def main():
    if len(sys.argv) not in (3, 4):
        sys.exit("usage: queues_chart.py TABLE.txt OUT.png [MACHINE]")
    rows = read_table(sys.argv[1])
    machine = sys.argv[3] if len(sys.argv) == 4 else ""
    labels = [str(queues) for queues, _, _ in rows]
    rates = [rate / 1000 for _, rate, _ in rows]
    cpus = [cpu for _, _, cpu in rows]

    figure, rate_axis = plt.subplots(figsize=(6, 3.6), dpi=100)
    bars = rate_axis.bar(labels, rates, color="#4c72b0", width=0.5, label="packets/s")
    rate_axis.bar_label(bars, fmt="%.0fk")
    rate_axis.set_xlabel("NFQUEUE queues (one reader thread each)")
    rate_axis.set_ylabel("thousand packets/s (bars)")
    rate_axis.set_ylim(0, max(rates) * 1.25)
    cpu_axis = rate_axis.twinx()
    cpu_axis.plot(labels, cpus, color="#dd8452", marker="o", label="CPU us/packet")
    for label, cpu in zip(labels, cpus):
        cpu_axis.annotate(
            f"{cpu:.2f} µs", (label, cpu), textcoords="offset points", xytext=(0, 8),
            ha="center", color="#8c3d0f",
        )
    cpu_axis.set_ylabel("CPU µs per packet (line)")
    # The line runs through the lower part of the bars, clear of their labels.
    cpu_axis.set_ylim(0, max(cpus) * 2.5)
    title = "nfsentry draining a deep queue"
    if machine:
        title += f" ({machine})"
    rate_axis.set_title(title, fontsize=10)
    figure.tight_layout()
    figure.savefig(sys.argv[2])


if __name__ == "__main__":
    main()
