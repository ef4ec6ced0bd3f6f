"""Regenerate the small synthetic spectrum files in this folder (no measured data).

    python tests/data/make_fixtures.py
"""

from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def synthetic_mu(energy, e0, step=1.0, white_line=0.5):
    """arctan edge + Lorentzian white line + sloping background (a made-up K edge)."""
    edge = step * (0.5 + np.arctan((energy - e0) / 1.5) / np.pi)
    line = white_line * step * 2.0**2 / ((energy - e0 - 4.0) ** 2 + 2.0**2)
    return 0.2 - 2e-4 * (energy - e0) + edge + line


def cu_grid():
    return np.concatenate([np.arange(8829.0, 8959.0, 5.0), np.arange(8959.0, 9009.0, 0.5), np.arange(9009.0, 9300.0, 3.0)])


def write_xdi():
    energy = cu_grid()
    i0 = 1.0e5 * (1 + 0.01 * np.sin(energy / 37.0))
    it = i0 * np.exp(-synthetic_mu(energy, 8980.0))
    lines = [
        "# XDI/1.0 sfn-stream-tests/1.0",
        "# Column.1: energy eV",
        "# Column.2: i0",
        "# Column.3: itrans",
        "# Element.symbol: Cu",
        "# Element.edge: K",
        "# Mono.d_spacing: 3.13555",
        "# Sample.name: synthetic Cu edge",
        "# ///",
        "# made-up arctan edge with a white line, for reader tests",
        "#----",
        "# energy i0 itrans",
    ]
    lines += [f"{e:10.3f} {a:12.3f} {b:12.3f}" for e, a, b in zip(energy, i0, it)]
    (HERE / "cu_synthetic.xdi").write_text("\n".join(lines) + "\n")


def write_csv():
    energy = np.concatenate([np.arange(6962.0, 7092.0, 5.0), np.arange(7092.0, 7142.0, 0.5), np.arange(7142.0, 7400.0, 3.0)])
    mu = synthetic_mu(energy, 7114.0, step=0.8)
    lines = ["# source=synthetic test fixture", "# energy_eV,mu"]
    lines += [f"{e:.4f},{m:.6f}" for e, m in zip(energy, mu)]
    (HERE / "fe_synthetic.csv").write_text("\n".join(lines) + "\n")


def write_xy():
    angle = np.arange(10.0, 20.0, 0.2)
    counts = 100 + 900 * np.exp(-((angle - 15.0) ** 2) / 0.02)
    (HERE / "pattern.xy").write_text("".join(f"{a:.2f}\t{c:.1f}\n" for a, c in zip(angle, counts)))


def write_malformed():
    (HERE / "malformed.xdi").write_text(
        "# XDI/1.0\n# Column.1: energy eV\n# Column.2: mutrans\n# Element.symbol: Cu\n#----\n"
        "# energy mutrans\n8970.0 0.10\n8975.0 0.12\n8980.0 oops\n8985.0 1.10\n"
    )
    (HERE / "ragged.txt").write_text("# energy mu\n8970.0 0.10\n8975.0 0.12 7.0\n")
    (HERE / "no_energy.csv").write_text("# angle,intensity\n10.0,5.0\n10.1,6.0\n10.2,5.5\n")


if __name__ == "__main__":
    write_xdi()
    write_csv()
    write_xy()
    write_malformed()
