"""The leaderboard's bar chart, leaderboard.png: the optimized metric per job, drawn with PIL."""

from __future__ import annotations

from typing import Any

__all__ = ["draw_bars"]


def draw_bars(rows: list[dict[str, Any]], metric: str, mode: str) -> Any:
    """A horizontal bar per job in leaderboard order, drawn with PIL (no matplotlib)."""
    from PIL import Image, ImageDraw, ImageFont  # only when drawing: Hydra imports this module at startup

    font = ImageFont.load_default()
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    line_h = max(12, probe.textbbox((0, 0), "Ag", font=font)[3]) + 8
    labels = [f"#{r['num']}  {r['varying'] or '(no overrides)'}" for r in rows]
    label_w = min(380, max(int(probe.textlength(t, font=font)) for t in labels) + 10)
    bar_w, value_w, pad = 320, 150, 10
    width = pad + label_w + bar_w + value_w + pad
    top = pad + 2 * line_h
    height = top + line_h * len(rows) + line_h + pad
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    draw.text((pad, pad), f"{metric} per job ({mode} is best)", fill="black", font=font)

    values = [r["value"] for r in rows if r["value"] is not None]
    lo, hi = min([0.0, *values]), max([0.0, *values])
    hi = hi if hi > lo else lo + 1.0
    x0 = pad + label_w

    def x_of(v: float) -> int:
        return x0 + round((v - lo) / (hi - lo) * bar_w)

    for i, (row, label) in enumerate(zip(rows, labels)):
        y = top + i * line_h
        draw.text((pad, y + 3), _fit(draw, label, label_w - 10, font), fill="black", font=font)
        if row["value"] is not None:
            color = (46, 125, 50) if row["best"] else (74, 120, 181)
            draw.rectangle(
                [min(x_of(0), x_of(row["value"])), y + 2, max(x_of(0), x_of(row["value"])), y + line_h - 3],
                fill=color,
            )
            text = f"{row['value']:.4f}" + ("  best" if row["best"] else "")
            draw.text((x0 + bar_w + 6, y + 3), text, fill=color, font=font)
        elif row["status"] == "FAILED":
            draw.rectangle([x0, y + 2, x0 + bar_w, y + line_h - 3], outline=(198, 40, 40))
            error = row["error"].split(":")[0] or "error"
            draw.text(
                (x0 + 6, y + 3),
                _fit(draw, f"FAILED ({error})", bar_w - 12, font),
                fill=(198, 40, 40),
                font=font,
            )
        else:
            draw.text((x0 + 6, y + 3), f"{row['status']}, no value", fill="gray", font=font)
    axis_y = top + line_h * len(rows)
    draw.line([x_of(0), top - 2, x_of(0), axis_y], fill="black")
    draw.line([x0, axis_y, x0 + bar_w, axis_y], fill="black")
    for v in (lo, hi):
        text = f"{v:.3g}"
        tx = min(max(x_of(v) - int(draw.textlength(text, font=font)) // 2, 0), width - 40)
        draw.text((tx, axis_y + 3), text, fill="black", font=font)
    return image


def _fit(draw: Any, text: str, width: int, font: Any) -> str:
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "...", font=font) > width:
        text = text[:-1]
    return text + "..."
