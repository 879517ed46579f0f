/* featurewatch feature browser: plain JS, no build step, no network.
 * Data comes from data/index.js (window.FEATUREWATCH_INDEX) and data/<kind>_NNN.js chunks that
 * call featurewatchChunk(kind, n, records); the layout is documented in training/browser.py.
 * All text is inserted with textContent, never innerHTML, so token text needs no escaping. */
(function () {
  "use strict";

  const ROW_HEIGHT = 34;
  const OVERSCAN = 12;
  const { el, fmtNum, fmtDensity, oneIn, densityFraction, loadChunk, SINGULAR, PLURAL } = window.FW;
  const INDEX = window.FEATUREWATCH_INDEX;
  const lists = {}; // kind -> list state
  const page = { kind: "features", seq: 0 };
  const $ = (id) => document.getElementById(id);

  // ---------- data ----------
  function listState(kind) {
    const data = INDEX.kinds[kind];
    if (!data) return null;
    if (!lists[kind]) {
      const position = new Map(data.feature.map((f, i) => [f, i]));
      lists[kind] = { kind, data, position, lower: data.label.map((s) => s.toLowerCase()),
        query: "", sort: "feature", desc: false, order: [], scrollTop: 0, densityBins: null };
      applyFilter(lists[kind]);
    }
    return lists[kind];
  }

  function applyFilter(st) {
    const q = st.query.trim().toLowerCase();
    const idMatch = /^#?(\d+)$/.exec(q);
    const id = idMatch ? Number(idMatch[1]) : null;
    const terms = q.split(/\s+/).filter(Boolean);
    const order = [];
    for (let i = 0; i < st.data.count; i++) {
      if (!q || st.data.feature[i] === id || terms.every((t) => st.lower[i].includes(t))) {
        order.push(i);
      }
    }
    const key = st.sort === "label" ? st.lower : st.data[st.sort];
    const sign = st.desc ? -1 : 1;
    order.sort((a, b) => {
      const x = key[a], y = key[b];
      if (x === y) return st.data.feature[a] - st.data.feature[b];
      if (x === null) return 1; // missing values last in either direction
      if (y === null) return -1;
      return (x < y ? -1 : 1) * sign;
    });
    st.order = order;
  }

  // ---------- list view ----------
  function showList(kind) {
    page.kind = kind;
    page.seq++;
    setTabs(kind);
    $("detail-view").hidden = true;
    $("list-view").hidden = false;
    const st = listState(kind);
    const empty = $("list-empty");
    if (!st) {
      empty.hidden = false;
      empty.textContent = "No " + kind + " table in this bundle (see the note above).";
      $("list-spacer").replaceChildren();
      $("list-count").textContent = "";
      return;
    }
    empty.hidden = st.data.count > 0;
    empty.textContent = "This table has no rows.";
    $("search").value = st.query;
    $("search").placeholder = "Search " + kind + " by label, or #id";
    $("list-viewport").scrollTop = st.scrollTop;
    renderList();
  }

  function renderList() {
    const st = lists[page.kind];
    if (!st) return;
    const viewport = $("list-viewport");
    const spacer = $("list-spacer");
    spacer.style.height = st.order.length * ROW_HEIGHT + "px";
    const top = viewport.scrollTop;
    const height = viewport.clientHeight || 800;
    const first = Math.max(0, Math.floor(top / ROW_HEIGHT) - OVERSCAN);
    const last = Math.min(st.order.length, Math.ceil((top + height) / ROW_HEIGHT) + OVERSCAN);
    const rows = [];
    for (let k = first; k < last; k++) rows.push(listRow(st, st.order[k], k));
    spacer.replaceChildren(...rows);
    const total = st.data.count.toLocaleString("en-US");
    $("list-count").textContent = st.order.length === st.data.count
      ? total + " " + st.kind : st.order.length.toLocaleString("en-US") + " of " + total;
    for (const button of document.querySelectorAll("#list-head button")) {
      const active = button.dataset.sort === st.sort;
      button.classList.toggle("active", active);
      button.dataset.dir = active ? (st.desc ? "desc" : "asc") : "";
    }
  }

  function highlighted(label, query) {
    const term = query.trim().toLowerCase().split(/\s+/)[0];
    const at = term ? label.toLowerCase().indexOf(term) : -1;
    if (at < 0) return [label];
    return [label.slice(0, at), el("mark", { text: label.slice(at, at + term.length) }),
      label.slice(at + term.length)];
  }

  function listRow(st, i, k) {
    const d = st.data;
    const id = d.feature[i];
    const label = d.label[i];
    return el("a", { class: "row", href: "#" + SINGULAR[st.kind] + "/" + id, "data-feature": id,
      style: "top:" + k * ROW_HEIGHT + "px" }, [
      el("span", { class: "c-id", text: "#" + id }),
      el("span", { class: "c-label" + (label ? "" : " muted"), title: label },
        label ? highlighted(label, st.query) : ["(no label)"]),
      el("span", { class: "c-density", title: oneIn(d.density[i]) }, [
        el("span", { class: "dbar" }, [el("span", {
          style: "width:" + (100 * densityFraction(d.density[i])).toFixed(1) + "%" })]),
        el("span", { text: fmtDensity(d.density[i]) })]),
      el("span", { class: "c-num", text: fmtNum(d.max_activation[i]) }),
      el("span", { class: "c-num", text: d.interp_score[i] === null ? "—"
        : d.interp_score[i].toFixed(2) }),
    ]);
  }

  // ---------- detail view ----------
  async function showDetail(kind, id) {
    const seq = ++page.seq;
    page.kind = kind;
    setTabs(kind);
    const view = $("detail-view");
    $("list-view").hidden = true;
    view.hidden = false;
    const st = listState(kind);
    const pos = st ? st.position.get(id) : undefined;
    if (pos === undefined) {
      view.replaceChildren(el("p", { class: "empty" }, [
        "There is no " + SINGULAR[kind] + " " + id + " in this bundle. ",
        el("a", { href: "#" + kind, text: "All " + kind + " →" })]));
      return;
    }
    view.replaceChildren(el("p", { class: "empty", text: "Loading " + SINGULAR[kind] + " " + id + "…" }));
    let records;
    try {
      records = await loadChunk(kind, Math.floor(pos / INDEX.chunk_size));
    } catch (err) {
      if (seq === page.seq) view.replaceChildren(el("p", { class: "empty error", text: err.message }));
      return;
    }
    if (seq !== page.seq) return; // the user navigated on meanwhile
    const record = records[pos % INDEX.chunk_size];
    view.replaceChildren(window.FW.detailPage(st, pos, record));
    window.scrollTo(0, 0);
  }

  // ---------- chrome: header, tabs, missing-data notes, routing ----------
  function setTabs(kind) {
    for (const tab of document.querySelectorAll("#kind-tabs .tab")) {
      tab.classList.toggle("active", tab.dataset.kind === kind);
      tab.classList.toggle("unavailable", !INDEX.kinds[tab.dataset.kind]);
    }
  }

  function renderChrome() {
    const meta = INDEX.meta;
    document.title = "featurewatch · " + meta.dictionary_id;
    $("dict-title").textContent = meta.dictionary_id;
    $("dict-title").title = [meta.model_id, meta.hook_point].filter(Boolean).join(" · ");
    const m = meta.metrics || {};
    const parts = [];
    if (meta.d_sae) parts.push("d_sae " + meta.d_sae.toLocaleString("en-US"));
    if (m.l0 !== undefined) parts.push("L0 " + fmtNum(m.l0));
    if (m.loss_recovered !== undefined) parts.push("loss recovered " + (100 * m.loss_recovered).toFixed(1) + "%");
    if (m.dead !== undefined) parts.push("dead " + m.dead);
    $("dict-metrics").textContent = parts.join(" · ");
    if (meta.report_href) {
      $("report-link").href = meta.report_href;
      $("report-link").hidden = false;
    }
    const missing = meta.missing || [];
    if (missing.length) {
      $("missing").hidden = false;
      $("missing").replaceChildren(el("strong", { text: "Not available: " }), ...missing.map((m2) =>
        el("span", { class: "missing-item" }, [el("code", { text: m2.file }), " — " + m2.why])));
    }
  }

  function route() {
    const hash = decodeURIComponent(location.hash.replace(/^#\/?/, ""));
    const match = /^(feature|neuron)\/(\d+)$/.exec(hash);
    if (match) return showDetail(PLURAL[match[1]], Number(match[2]));
    if (hash === "features" || hash === "neurons") return showList(hash);
    return showList(INDEX.kinds.features || !INDEX.kinds.neurons ? "features" : "neurons");
  }

  function bindEvents() {
    let frame = 0;
    $("list-viewport").addEventListener("scroll", () => {
      if (lists[page.kind]) lists[page.kind].scrollTop = $("list-viewport").scrollTop;
      if (!frame) frame = requestAnimationFrame(() => { frame = 0; renderList(); });
    });
    $("search").addEventListener("input", () => {
      const st = lists[page.kind];
      if (!st) return;
      st.query = $("search").value;
      applyFilter(st);
      $("list-viewport").scrollTop = 0;
      renderList();
    });
    $("list-head").addEventListener("click", (event) => {
      const button = event.target.closest("button[data-sort]");
      const st = lists[page.kind];
      if (!button || !st) return;
      const key = button.dataset.sort;
      st.desc = st.sort === key ? !st.desc : key !== "feature" && key !== "label";
      st.sort = key;
      applyFilter(st);
      renderList();
    });
    window.addEventListener("resize", renderList);
    window.addEventListener("hashchange", route);
    document.addEventListener("keydown", onKey);
  }

  function onKey(event) {
    if (event.target.matches("input, textarea")) {
      if (event.key === "Escape") event.target.blur();
      return;
    }
    if (event.key === "/" && !$("list-view").hidden) {
      event.preventDefault();
      $("search").focus();
    } else if (!$("detail-view").hidden) {
      const target = { ArrowLeft: "‹ prev", ArrowRight: "next ›" }[event.key];
      const link = [...document.querySelectorAll(".pager a")].find((a) => a.textContent === target);
      if (link && link.getAttribute("href")) location.hash = link.getAttribute("href");
      if (event.key === "Escape") location.hash = page.kind;
    }
  }

  if (!INDEX) {
    document.querySelector("main").replaceChildren(el("p", { class: "empty error",
      text: "data/index.js is missing or failed to load: rebuild the browser with write_browser()." }));
    return;
  }
  renderChrome();
  bindEvents();
  route();
})();
