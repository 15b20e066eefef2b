"""The performance page's pictures (q3build.speech.bench.plots): one PNG per measurement a bench JSON
holds, none for a measurement it lacks, embedded in the page; and the committed page embeds pictures
that exist, regenerated from the committed JSON. Integration tier: matplotlib runs fc-list once to
build its font cache."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest

from q3build import cli
from q3build.speech.bench import plots, report

from ..conftest import REPO

PNG = b"\x89PNG\r\n\x1a\n"
RUN = json.loads((REPO / "docs" / "bench" / "0.6b.json").read_text())


def _with_everything(run: dict) -> dict:
    run = copy.deepcopy(run)
    run["decoder_curve"] = [{"quant": "q8_0", "threads": 2, "max_batch": 8,
                             "curve": {"1": {"ms_per_call": 90.0, "ms_per_frame": 90.0},
                                       "4": {"ms_per_call": 200.0, "ms_per_frame": 50.0},
                                       "8": {"ms_per_call": 320.0, "ms_per_frame": 40.0}}}]
    run["concurrency"] = [{"quant": "q8_0", "threads": 2, "streams": n, "audio_s_per_s": v}
                          for n, v in ((1, 0.4), (2, 0.7), (4, 0.9))]
    return run


def test_each_measurement_gets_its_picture(tmp_path):
    drawn = plots.write_plots([_with_everything(RUN), {"shape": "tiny", "frames": 4, "configs": []}], tmp_path,
                              names=["0.6b", "empty"])
    assert [f for _, f in drawn[0]] == ["0.6b-stages.png", "0.6b-ttfa.png", "0.6b-decoder.png",
                                        "0.6b-concurrency.png"]
    assert drawn[1] == []
    for _, f in drawn[0]:
        assert (tmp_path / f).read_bytes()[:8] == PNG


def test_a_measurement_the_json_lacks_has_no_picture(tmp_path):
    run = copy.deepcopy(RUN)
    for c in run["configs"]:
        c["server"] = {"ttfa_ms": None}
        c["reference"] = None
    drawn = plots.write_plots([run], tmp_path, names=["r"])
    assert [f for _, f in drawn[0]] == ["r-stages.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r-stages.png"]


def test_pictures_are_reproducible_and_stale_ones_go(tmp_path):
    (tmp_path / "old-ttfa.png").write_bytes(PNG)
    plots.write_plots([RUN], tmp_path, names=["a"])
    first = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert "old-ttfa.png" not in first
    plots.write_plots([RUN], tmp_path, names=["a"])
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == first


def test_page_embeds_the_pictures_under_their_run(tmp_path):
    drawn = plots.write_plots([RUN], tmp_path, names=["0.6b"])
    md = report.render_markdown([RUN], drawn, plots_dir="performance/")
    lines = md.splitlines()
    head = lines.index("## 0.6b shape, 48 frames")
    images = [i for i, ln in enumerate(lines) if ln.startswith("![")]
    assert lines[images[0]] == "![0.6b shape: time per frame by stage, ours vs the reference](performance/0.6b-stages.png)"
    assert head < images[0] < lines.index(next(ln for ln in lines if ln.startswith("| quant |")))
    assert len(images) == 2


def test_bench_markdown_out_writes_the_page_and_its_pictures(tmp_path, monkeypatch):
    src = tmp_path / "bench"
    src.mkdir()
    (src / "0.6b.json").write_text(json.dumps(_with_everything(RUN)))
    out = tmp_path / "docs" / "performance.md"
    out.parent.mkdir()
    assert cli.main(["--project", str(REPO), "bench", "--markdown", str(src / "0.6b.json"), "--out", str(out)]) == 0
    embedded = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", out.read_text())
    assert embedded == [f"performance/0.6b-{n}.png" for n in ("stages", "ttfa", "decoder", "concurrency")]
    assert all((out.parent / e).read_bytes()[:8] == PNG for e in embedded)


@pytest.mark.parametrize("page", ["performance.md"])
def test_committed_page_embeds_pictures_that_exist(page):
    """docs/performance.md is regenerated from docs/bench/*.json; every picture it shows is committed
    and every committed picture is shown."""
    doc = REPO / "docs" / page
    embedded = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", doc.read_text())
    assert embedded, f"{page} embeds no plots: run `q3build bench --markdown docs/bench/*.json --out docs/{page}`"
    for e in embedded:
        assert (doc.parent / e).is_file(), e
    folder = doc.parent / Path(page).stem
    assert sorted(p.name for p in folder.glob("*.png")) == sorted(Path(e).name for e in embedded)


def test_committed_page_is_the_committed_json_rendered(tmp_path):
    """As the page says: `q3build bench --markdown docs/bench/*.json --out docs/performance.md` (C-locale
    glob order). The pictures' bytes depend on the matplotlib and FreeType versions; their names must match."""
    runs = sorted(str(p) for p in (REPO / "docs" / "bench").glob("*.json"))
    out = tmp_path / "performance.md"
    assert cli.main(["--project", str(REPO), "bench", "--markdown", *runs, "--out", str(out)]) == 0
    assert out.read_text() == (REPO / "docs" / "performance.md").read_text(), \
        "docs/performance.md is stale: run `q3build bench --markdown docs/bench/*.json --out docs/performance.md`"
    assert sorted(p.name for p in (tmp_path / "performance").glob("*.png")) == \
        sorted(p.name for p in (REPO / "docs" / "performance").glob("*.png"))
