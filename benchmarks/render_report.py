"""Render a report in headless Chromium, offline, and check what it shows (a script, not a test:
it needs Debian's ``chromium``, which the README's set-up does not install).

Checks, on the page as Chromium rendered it (``--dump-dom``) with every host unresolvable
(``--host-resolver-rules``, so any network reference would fail to load):

- the answer section and the recommended metric are in the rendered DOM;
- every ``<img>`` is an embedded ``data:`` PNG that decodes;
- the screenshot (``--screenshot``) is not blank: the share of non-white pixels in the top part
  (the answer) and in the figures below it.

Prints the checks and the render time, writes ``screenshot.png`` (top of the page) and
``summary.md`` to ``--out``.

Usage: ``python benchmarks/render_report.py REPORT.html [--out benchmarks/results/report_render]``
(``bayes-cmma demo --out DIR`` writes ``DIR/report.html``).
"""

from __future__ import annotations

import argparse
import base64
import io
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from matplotlib import image as mpimg

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--host-resolver-rules=MAP * ~NOTFOUND", "--hide-scrollbars"]


def chromium(args: list[str], profile: Path) -> subprocess.CompletedProcess:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        sys.exit("chromium not found: apt-get install chromium (Debian) to run this check.")
    return subprocess.run([exe, *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True, text=True,
                          timeout=120, check=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report")
    parser.add_argument("--out", default="benchmarks/results/report_render")
    parser.add_argument("--height", type=int, default=2400, help="screenshot height in pixels")
    args = parser.parse_args()
    report = Path(args.report).resolve()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    url = report.as_uri()
    checks = []
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        dom = chromium(["--dump-dom", url], Path(tmp) / "p1")
        t_dom = time.perf_counter() - t0
        shot = out / "screenshot.png"
        t0 = time.perf_counter()
        chromium([f"--screenshot={shot}", f"--window-size=1200,{args.height}", url], Path(tmp) / "p2")
        t_shot = time.perf_counter() - t0
    html = dom.stdout
    best = re.search(r"Recommended north-star metric: <b>([^<]+)</b>", html)
    answer = '<h2 id="answer">The answer</h2>' in html
    checks.append(("rendered DOM has the answer section", answer and best is not None))
    srcs = re.findall(r'<img [^>]*src="([^"]+)"', html)
    decoded = 0
    for src in srcs:
        if src.startswith("data:image/png;base64,"):
            png = mpimg.imread(io.BytesIO(base64.b64decode(src.split(",", 1)[1])), format="png")
            decoded += png.size > 0
    checks.append((f"all {len(srcs)} images are embedded PNGs that decode", len(srcs) > 0 and decoded == len(srcs)))
    checks.append(("no http(s) reference in the rendered page", "http://" not in html and "https://" not in html))
    img = mpimg.imread(shot)[..., :3]
    ink = lambda a: float(np.mean(a.min(axis=-1) < 0.9))  # noqa: E731 - share of non-white pixels
    top, rest = ink(img[:400]), ink(img[400:])
    checks.append((f"screenshot not blank (non-white share: answer {top:.3f}, figures {rest:.3f})",
                   top > 0.01 and rest > 0.02))
    lines = ["# Report rendered in headless Chromium (offline)", "",
             f"Report: `{report.name}`; Chromium: {chromium(['--version'], Path('/tmp/unused')).stdout.strip()}.",
             f"Render: --dump-dom {t_dom:.1f} s, --screenshot {t_shot:.1f} s (includes browser start).",
             f"Recommended metric in the rendered page: {best.group(1) if best else 'NOT FOUND'}.", "",
             "| check | result |", "|---|---|"]
    lines += [f"| {name} | {'pass' if ok else 'FAIL'} |" for name, ok in checks]
    lines += ["", "Command: `python benchmarks/render_report.py REPORT.html --out " + args.out + "`",
              "", "![top of the rendered report](screenshot.png)"]
    text = "\n".join(lines) + "\n"
    (out / "summary.md").write_text(text)
    print(text)
    sys.exit(0 if all(ok for _, ok in checks) else 1)


if __name__ == "__main__":
    main()
