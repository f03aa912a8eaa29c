"""`batch-infer report` on a real run: a self-contained page, checked as text and in real Chromium."""

from __future__ import annotations

import base64
import html
import io
import re
from html.parser import HTMLParser

import numpy as np
import pyarrow.dataset as ds
import pytest
from PIL import Image

from support import browser
from batch_infer.cli import main
from conftest import BROKEN_NAME as BROKEN, ODD_NAME as ODD, invoke
from batch_infer.heads import Classification
from batch_infer.scorer import Rows
from batch_infer.sink import PartWriter

@pytest.fixture(scope="module")
def scored(scored_sample):
    return scored_sample


def report(capsys, *args: str) -> tuple[int, dict | None, str]:
    return invoke(capsys, "report", *args)


class References(HTMLParser):
    """Every tag name and every src/href value on a page."""

    def __init__(self):
        super().__init__()
        self.tags: set[str] = set()
        self.urls: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        self.urls += [value for name, value in attrs if name in ("src", "href", "xlink:href")]


@pytest.fixture(scope="module")
def page(scored, tmp_path_factory):
    images, out = scored
    html_file = tmp_path_factory.mktemp("page") / "report.html"
    assert main(["report", str(out), "--input", str(images), "--html", str(html_file)]) == 0
    return html_file


def test_summary_line_counts_rows_errors_and_thumbnails(scored, tmp_path, capsys):
    images, out = scored
    code, summary, err = report(capsys, str(out), "--input", str(images), "--html", str(tmp_path / "r.html"))
    assert (code, err) == (0, "")
    assert summary == {"report": str(tmp_path / "r.html"), "rows": 22, "errors": 1, "thumbnails": 21}


def test_page_is_self_contained(page):
    text = page.read_text()
    references = References()
    references.feed(text)
    assert references.urls and all(url.startswith("data:image/jpeg;base64,") for url in references.urls)
    assert not references.tags & {"script", "link", "iframe", "object", "embed"}
    assert not re.search(r"https?://|url\(|@import|@font-face", text)
    assert "Content-Security-Policy" in text


def test_page_lists_the_error_row_escaped_with_its_reason(scored, page):
    text = page.read_text()
    error = ds.dataset(scored[1]).to_table(filter=ds.field("status") == "error").to_pylist()[0]
    assert error["path"] == BROKEN and error["error"].startswith("decode: ")
    assert html.escape(BROKEN) in text and html.escape(error["error"]) in text
    assert html.escape(ODD) in text and "<script>" not in text and "<b>odd" not in text


def test_thumbnails_are_small_jpegs_of_the_images(page):
    text = page.read_text()
    uris = re.findall(r'src="data:image/jpeg;base64,([^"]+)"', text)
    assert len(uris) == text.count("<figure>") > 21  # all 21 ok rows are among the least confident
    for uri in uris:
        with Image.open(io.BytesIO(base64.b64decode(uri))) as thumbnail:
            assert thumbnail.format == "JPEG" and max(thumbnail.size) == 96


def test_without_input_the_page_says_why_there_are_no_thumbnails(scored, tmp_path, capsys):
    code, summary, _ = report(capsys, str(scored[1]), "--html", str(tmp_path / "r.html"))
    text = (tmp_path / "r.html").read_text()
    assert code == 0 and summary["thumbnails"] == 0
    assert "data:image" not in text and "No thumbnails: give <code>--input DIR</code>" in text


def test_page_renders_in_chromium_without_console_messages_or_requests(page, tmp_path):
    rendered = browser.load(page, tmp_path)
    assert "batch-infer report" in rendered.dom and "&lt;script&gt;broken &amp; 'odd'" in rendered.dom
    assert rendered.console == [] and rendered.requests == []
    png = tmp_path / "report.png"
    browser.screenshot(page, png, tmp_path)
    with Image.open(png) as shot:
        assert shot.size == (1280, 2000)
        assert len(shot.convert("RGB").getcolors(maxcolors=1 << 20)) > 100  # charts and thumbnails


def test_chromium_check_sees_requests_and_console_errors(tmp_path):
    """The test above proves something only if the same check catches a page that does fetch."""
    bad = tmp_path / "bad.html"
    bad.write_text('<!doctype html><img src="https://example.com/x.png"><script>missing()</script>')
    rendered = browser.load(bad, tmp_path)
    assert rendered.requests == ["https://example.com/x.png"]
    assert any("Uncaught ReferenceError" in line for line in rendered.console)


def test_report_of_100k_rows_stays_small(tmp_path, capsys):
    """200 classes and 2,000 errors in ten parts, written by the real PartWriter: galleries, class
    list and error list are capped, so the page stays small."""
    out, rng = tmp_path / "out", np.random.default_rng(0)
    out.mkdir()
    labels = np.array([f"class {i:03d}" for i in range(199)] + ["<cat & dog>"], dtype=object)
    rows = Rows([Classification("probabilities", "none", "probabilities", labels, "test", top_k=5)])
    writer = PartWriter(str(out), "0of1-20240101T000000Z-abcdef", rows.schema,
                        {"run_id": "20240101T000000Z-abcdef"}, max_rows=10_000)
    for chunk in range(10):
        logits = rng.normal(size=(9_800, 200)).astype(np.float32) * 3
        logits[:, -1] += 1  # the most frequent class, so it is charted and sampled
        scores = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        writer.add(rows.ok([f"dir {chunk}/{i:05d}.jpg" for i in range(9_800)], {"probabilities": scores}))
        writer.add(rows.errors([f"bad/{chunk}-{i}.jpg" for i in range(200)], ["decode: truncated"] * 200))
    writer.commit()
    code, summary, _ = report(capsys, str(out), "--html", str(tmp_path / "r.html"))
    text = (tmp_path / "r.html").read_text()
    assert code == 0 and summary == {"report": str(tmp_path / "r.html"), "rows": 100_000, "errors": 2_000,
                                     "thumbnails": 0}
    assert len(text.encode()) < 2_000_000
    assert text.count("<figure>") == 24 + 4 * 50
    assert "150 more classes not shown" in text and "1500 more error rows not shown" in text
    assert "&lt;cat &amp; dog&gt;" in text and "<cat & dog>" not in text


@pytest.mark.parametrize("make, message", [
    (lambda tmp: tmp / "missing", "does not exist"),
    (lambda tmp: tmp, "has no part-*.parquet files"),
])
def test_not_an_output_directory_is_a_usage_error(tmp_path, capsys, make, message):
    code, summary, err = report(capsys, str(make(tmp_path)), "--html", str(tmp_path / "r.html"))
    assert (code, summary) == (2, None)
    assert message in err and len(err.strip().splitlines()) == 1


def test_thumbnails_show_files_only_pillow_reads_and_turn_by_exif(tmp_path):
    """A TIFF (TensorFlow has no decoder for it) is drawn, not an empty box; a JPEG stored
    sideways with EXIF orientation 6 is drawn upright, as a viewer shows it."""
    from batch_infer.reporting import Thumbnails

    wide = (np.arange(60 * 30 * 3) % 251).astype(np.uint8).reshape(30, 60, 3)  # 60 wide, 30 high
    Image.fromarray(wide).save(tmp_path / "wide.tif")
    exif = Image.Exif()
    exif[0x0112] = 6  # turn 90 degrees clockwise to show
    Image.fromarray(wide).save(tmp_path / "sideways.jpg", exif=exif)
    thumbnails = Thumbnails(str(tmp_path))
    sizes = {}
    for name in ("wide.tif", "sideways.jpg"):
        uri = thumbnails(name)
        assert uri is not None, name
        with Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))) as thumbnail:
            sizes[name] = thumbnail.size
    assert sizes == {"wide.tif": (96, 48), "sideways.jpg": (48, 96)}
    assert thumbnails("missing.png") is None and thumbnails.count == 2
