"""The feature browser in a real headless Chromium, opened from disk (file://, no server).

Drives Debian's chromium through its chromedriver: search the list, open the planted feature,
check the shaded tokens and the histogram against features.parquet, look at the neurons, and
save a screenshot of the feature page (its path is printed; run pytest with -s to see it).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import polars as pl
import pytest
from feature_tables import example, synthetic_analysis, write_synthetic_bundle
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait
from servers import require_binary

from featurewatch.training.browser import write_browser
from featurewatch.training.report import write_report

pytestmark = pytest.mark.integration

CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--window-size=1400,1100")
PLANTED = 517
TOP = [example([" data", ":", "image", "/", "png", ";", "base", "64", ","],
               [0, 0, 0, 0, 0, 0.25, 1.5, 2.0, 3.75], "top", center=8),
       example(["src", "=\"", "iVBOR", "w0KGgo", "AAAA", "NSUhE", "<", "&", "\n"],
               [0, 0, 4.5, 7.3125, 6.25, 5.0, 0, 0, 0], "top", center=3),
       example(["\t", "QUJD", "REVG", "  ", "R0lG", "</script>", "'", "x", ""],
               [0, 5.5, 4.0, 0, 3.0, 1.0, 0, 0, 0], "top", center=1)]
INTERVALS = [example([" the", " base", "64", " string", " is", " long", ".", "\n", "A"],
                     [0, 0.2, 0.9, 0.1, 0, 0, 0, 0, 0.4], "0.0-2.4", center=2),
             example([" encoded", " as", " Zm9v", "YmFy", " and", " sent", " over", " the", " wire"],
                     [0, 0, 3.5, 2.9, 0, 0, 0, 0, 0], "2.4-4.9", center=2)]
HIST = {"act_hist_edges": [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.3125],
        "act_hist_counts": [412, 230, 96, 41, 17, 6, 2]}


@pytest.fixture
def chromium(tmp_path: Path):
    options = webdriver.ChromeOptions()
    options.binary_location = require_binary("chromium")
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(require_binary("chromedriver")), options=options)
    driver.implicitly_wait(0)
    yield driver
    driver.quit()


@pytest.fixture
def site(tmp_path: Path) -> tuple[Path, Path]:
    """A 600-feature bundle (3 chunks) with a planted base64 feature in the last chunk."""
    planted = {PLANTED: {"label": "base64 payload in data URIs", "max_activation": 7.3125,
                         "density": 3.2e-4, "interp_score": 0.81, "top_examples": TOP,
                         "interval_examples": INTERVALS, **HIST}}
    neurons = {7: {"label": "mixed: commas and base words"}}
    bundle = write_synthetic_bundle(tmp_path / "artifacts" / "dictionaries" / "d600",
                                    n_features=600, n_neurons=64, planted=planted,
                                    neuron_planted=neurons)
    links = [{"from": "d600", "feature": PLANTED, "to": "d4096",
              "children": [[3, 0.81], [77, 0.55], [12, 0.42]]}]
    analysis = synthetic_analysis([("d600", 600), ("d4096", 4096)], links=links)
    return bundle, write_browser(bundle, report=analysis)


def wait_for(driver, condition, timeout: float = 15.0):
    # The virtual list re-renders on scroll, search and navigation, so an element found a moment
    # ago may already be gone; that is "not yet", not a failure.
    return WebDriverWait(driver, timeout, ignored_exceptions=(StaleElementReferenceException,)
                         ).until(lambda d: condition(d) or None)


def click(driver, selector: str) -> None:
    """Click an element, finding it again if a re-render replaced it between find and click."""
    wait_for(driver, lambda d: d.find_element(By.CSS_SELECTOR, selector).click() or True)


def rows(driver) -> list[int]:
    """The rendered rows' ids, read in one script so a re-render cannot interleave."""
    return driver.execute_script(
        "return [...document.querySelectorAll('#list-spacer .row')]"
        ".map(r => Number(r.dataset.feature));")


def token_table(driver) -> list[dict]:
    """Every shaded token of the top examples: activation, background alpha and text."""
    return driver.execute_script("""
      return [...document.querySelectorAll('#top-examples .tok')].map(t => {
        const m = getComputedStyle(t).backgroundColor.match(/rgba?\\(([^)]*)\\)/)[1].split(',');
        return {act: t.dataset.activation, alpha: m.length === 4 ? Number(m[3]) : 1,
                text: t.textContent, title: t.title};
      });""")


def test_search_open_and_inspect_a_feature(chromium, site, tmp_path: Path) -> None:
    bundle, page = site
    table = pl.read_parquet(bundle / "features.parquet")
    planted = table.filter(pl.col("feature") == PLANTED).row(0, named=True)
    chromium.get(page.as_uri())
    wait_for(chromium, lambda d: rows(d))
    assert chromium.find_element(By.ID, "list-count").text == "600 features"
    assert len(rows(chromium)) < 100  # virtual scrolling renders only the visible rows

    search = chromium.find_element(By.ID, "search")
    search.send_keys("base64 payload")
    wait_for(chromium, lambda d: rows(d) == [PLANTED])
    assert chromium.find_element(By.ID, "list-count").text == "1 of 600"
    # read through wait_for: a scroll-triggered re-render may replace the row meanwhile
    assert wait_for(chromium, lambda d: d.find_element(By.CSS_SELECTOR, ".row mark").text
                    ) == "base64"
    search.clear()
    search.send_keys(f"#{PLANTED}")
    wait_for(chromium, lambda d: rows(d) == [PLANTED])

    click(chromium, f'.row[data-feature="{PLANTED}"]')
    wait_for(chromium, lambda d: d.find_elements(By.CSS_SELECTOR, ".detail .tok"))
    assert chromium.current_url.endswith(f"#feature/{PLANTED}")
    assert chromium.find_element(By.ID, "feature-label").text == planted["label"]
    check_tokens(chromium, planted)
    check_histogram(chromium, planted)
    check_side_panels(chromium, planted)
    shot = tmp_path / "feature_page.png"
    chromium.save_screenshot(str(shot))
    print(f"\nscreenshot: {shot}")
    assert shot.read_bytes().startswith(b"\x89PNG") and shot.stat().st_size > 20_000
    assert not [e for e in chromium.get_log("browser") if e["level"] == "SEVERE"]


def check_tokens(driver, planted: dict) -> None:
    tokens = token_table(driver)
    assert len(tokens) == sum(len(e["tokens"]) for e in planted["top_examples"])
    peak = max(a for e in planted["top_examples"] for a in e["activations"])
    strongest = max(tokens, key=lambda t: t["alpha"])
    assert float(strongest["act"]) == peak == planted["max_activation"]
    assert strongest["alpha"] == 1.0 and strongest["text"] == "w0KGgo"
    for token in tokens:  # alpha ∝ activation / max activation (Chromium keeps 8 bits of it)
        assert token["alpha"] == pytest.approx(float(token["act"]) / peak, abs=1 / 255 + 1e-6)
    texts = [t["text"] for t in tokens]
    # special characters arrive as text; whitespace is drawn visibly
    assert "</script>" in texts and "&" in texts and "<" in texts and "'" in texts
    assert [texts[17], texts[18], texts[21], texts[26], texts[0]] == ["↵", "⇥", "··", "∅", "·data"]
    assert tokens[23]["title"].startswith('"</script>"')
    interval_heads = [h.text for h in driver.find_elements(By.CSS_SELECTOR, "h3.interval")]
    assert interval_heads == ["interval 0.0-2.4", "interval 2.4-4.9"]


def check_histogram(driver, planted: dict) -> None:
    bars = driver.find_elements(By.CSS_SELECTOR, "#activation-histogram rect.bar")
    assert [int(b.get_attribute("data-count")) for b in bars] == planted["act_hist_counts"]
    heights = [float(b.get_attribute("height")) for b in bars]
    assert heights == sorted(heights, reverse=True) and heights[0] > 50 * heights[-1]
    marker = driver.find_element(By.ID, "density-marker")
    assert float(marker.get_attribute("data-density")) == planted["density"]


def check_side_panels(driver, planted: dict) -> None:
    promoted = driver.find_elements(By.CSS_SELECTOR, ".logits.pos .logit .lval")
    assert [float(v.text) for v in promoted] == pytest.approx(planted["logit_pos_values"], rel=1e-2)
    widths = [float(re.search(r"width:\s*([\d.]+)%", s.get_attribute("style"))[1]) for s in
              driver.find_elements(By.CSS_SELECTOR, ".logit .lbar span")]
    assert max(widths) == 100.0 and len(widths) == 10
    links = driver.find_elements(By.CSS_SELECTOR, "#splits .split-link")
    assert [link.get_attribute("data-feature") for link in links] == ["3", "77", "12"]
    assert links[0].get_attribute("href").endswith("/d4096/browser/index.html#feature/3")


def test_sort_and_neuron_toggle(chromium, site) -> None:
    bundle, page = site
    table = pl.read_parquet(bundle / "features.parquet")
    chromium.get(page.as_uri())
    wait_for(chromium, lambda d: rows(d))
    chromium.find_element(By.CSS_SELECTOR, 'button[data-sort="max_activation"]').click()
    top = table.sort(["max_activation", "feature"], descending=[True, False])["feature"][0]
    wait_for(chromium, lambda d: rows(d)[0] == top)
    chromium.find_element(By.CSS_SELECTOR, 'button[data-sort="density"]').click()
    densest = table.sort(["density", "feature"], descending=[True, False])["feature"][0]
    wait_for(chromium, lambda d: rows(d)[0] == densest)

    chromium.find_element(By.CSS_SELECTOR, '.tab[data-kind="neurons"]').click()
    wait_for(chromium, lambda d: d.find_element(By.ID, "list-count").text == "64 neurons")
    chromium.find_element(By.ID, "search").send_keys("commas")
    wait_for(chromium, lambda d: rows(d) == [7])
    click(chromium, '.row[data-feature="7"]')
    wait_for(chromium, lambda d: d.find_elements(By.CSS_SELECTOR, '.detail[data-kind="neurons"]'))
    assert chromium.find_element(By.CSS_SELECTOR, ".detail h1").text == "Neuron 7"
    neurons = pl.read_parquet(bundle / "neurons.parquet")
    counts = neurons.filter(pl.col("feature") == 7)["act_hist_counts"][0].to_list()
    bars = chromium.find_elements(By.CSS_SELECTOR, "#activation-histogram rect.bar")
    assert [int(b.get_attribute("data-count")) for b in bars] == counts
    click(chromium, ".back")  # back keeps the neuron search
    wait_for(chromium, lambda d: rows(d) == [7])
    assert not [e for e in chromium.get_log("browser") if e["level"] == "SEVERE"]


def test_report_page_opens_from_the_browser(chromium, site, tmp_path: Path) -> None:
    """The run report (log-density histogram, training curves, L0 vs loss recovered, ...) is
    one click from the browser header, and every plot loads from disk."""
    bundle, _ = site
    artifacts = bundle.parent.parent
    links = [{"from": "d600", "feature": PLANTED, "to": "d4096", "children": [[3, 0.81]]}]
    (artifacts / "report").mkdir()
    (artifacts / "report" / "analysis.json").write_text(json.dumps(
        synthetic_analysis([("d600", 600), ("d4096", 4096)], links=links)))
    write_report(artifacts)
    page = write_browser(bundle)  # finds report/ next to dictionaries/
    chromium.get(page.as_uri())
    wait_for(chromium, lambda d: rows(d))
    chromium.find_element(By.ID, "report-link").click()
    wait_for(chromium, lambda d: d.find_elements(By.TAG_NAME, "h1"))
    assert chromium.current_url.endswith("/report/index.html")
    loaded = wait_for(chromium, lambda d: d.execute_script(
        "const imgs = [...document.images];"
        "return imgs.every(i => i.complete) && imgs.map(i => [i.getAttribute('src'),"
        " i.naturalWidth]);"))
    assert {src for src, _ in loaded} >= {"feature_density.png", "training_curves.png",
                                          "l0_vs_loss_recovered.png", "feature_splitting.png"}
    assert all(width > 300 for _, width in loaded)
    shot = tmp_path / "report_page.png"
    chromium.save_screenshot(str(shot))
    print(f"\nscreenshot: {shot}")
