"""Draw docs/img/reconnect-delays.svg from ReconnectPolicy itself (no plotting library).

    python docs/gen_policy_plot.py          # rewrites the SVG; deterministic (seeded)

The line is ``ReconnectPolicy().ceiling(n)``, the largest delay the n-th consecutive
failed attempt can wait; the dots are ``delay(n, rng)`` draws (full jitter: uniform
between 0 and the ceiling).
"""

from __future__ import annotations

import random
from pathlib import Path

from resilient_tg import ReconnectPolicy

OUT = Path(__file__).resolve().parent / "img" / "reconnect-delays.svg"
ATTEMPTS = range(1, 13)
SAMPLES = 40  # draws per attempt
SEED = 2024

WIDTH, HEIGHT = 720, 400
LEFT, RIGHT, TOP, BOTTOM = 60, 20, 40, 50


def render(policy: ReconnectPolicy, rng: random.Random) -> str:
    top = policy.max_delay * 1.1
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(attempt: float) -> float:
        return LEFT + (attempt - 0.5) / len(ATTEMPTS) * plot_w

    def y(seconds: float) -> float:
        return TOP + plot_h - seconds / top * plot_h

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">',
        "<title>ReconnectPolicy() delays: ceiling and full-jitter draws, attempts 1-12</title>",
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>',
        f'<text x="{WIDTH / 2}" y="22" text-anchor="middle" font-size="14">'
        f"ReconnectPolicy(initial_delay={policy.initial_delay:g}, "
        f"multiplier={policy.multiplier:g}, max_delay={policy.max_delay:g}, "
        f"jitter={policy.jitter!r})</text>",
    ]
    # Axes, grid and labels.
    step = 5.0
    tick = 0.0
    while tick <= top:
        out.append(
            f'<line x1="{LEFT}" y1="{y(tick):.1f}" x2="{WIDTH - RIGHT}" y2="{y(tick):.1f}" '
            'stroke="#e0e0e0"/>'
        )
        out.append(f'<text x="{LEFT - 8}" y="{y(tick) + 4:.1f}" text-anchor="end">{tick:g}</text>')
        tick += step
    for n in ATTEMPTS:
        out.append(
            f'<text x="{x(n):.1f}" y="{HEIGHT - BOTTOM + 18}" text-anchor="middle">{n}</text>'
        )
    out.append(
        f'<text x="{LEFT + plot_w / 2}" y="{HEIGHT - 12}" text-anchor="middle">'
        "consecutive failed attempt</text>"
    )
    out.append(
        f'<text x="16" y="{TOP + plot_h / 2}" text-anchor="middle" '
        f'transform="rotate(-90 16 {TOP + plot_h / 2})">delay before the attempt (s)</text>'
    )
    out.append(
        f'<polyline fill="none" stroke="#555" points="{LEFT},{TOP} {LEFT},{TOP + plot_h} '
        f'{WIDTH - RIGHT},{TOP + plot_h}"/>'
    )
    # Jittered draws, spread a little sideways so that they do not hide each other.
    for n in ATTEMPTS:
        for i in range(SAMPLES):
            dx = (i / (SAMPLES - 1) - 0.5) * 0.5
            out.append(
                f'<circle cx="{x(n + dx):.1f}" cy="{y(policy.delay(n, rng)):.1f}" r="2.2" '
                'fill="#1e88e5" fill-opacity="0.55"/>'
            )
    # The ceiling.
    points = " ".join(f"{x(n):.1f},{y(policy.ceiling(n)):.1f}" for n in ATTEMPTS)
    out.append(f'<polyline fill="none" stroke="#d32f2f" stroke-width="2.5" points="{points}"/>')
    for n in ATTEMPTS:
        out.append(
            f'<circle cx="{x(n):.1f}" cy="{y(policy.ceiling(n)):.1f}" r="3.5" fill="#d32f2f"/>'
        )
    # Legend.
    lx, ly = LEFT + 20, TOP + 16
    out += [
        f'<rect x="{lx - 10}" y="{ly - 14}" width="300" height="44" fill="white" stroke="#ccc"/>',
        f'<line x1="{lx}" y1="{ly - 4}" x2="{lx + 24}" y2="{ly - 4}" stroke="#d32f2f" '
        'stroke-width="2.5"/>',
        f'<text x="{lx + 32}" y="{ly}">ceiling(n) = min(max_delay, initial x mult^(n-1))</text>',
        f'<circle cx="{lx + 12}" cy="{ly + 16}" r="3" fill="#1e88e5"/>',
        f'<text x="{lx + 32}" y="{ly + 20}">delay(n): uniform in [0, ceiling(n)], '
        f"{SAMPLES} draws each</text>",
        "</svg>",
    ]
    return "\n".join(out) + "\n"


def main() -> None:
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(render(ReconnectPolicy(), random.Random(SEED)))
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
