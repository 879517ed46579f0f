/* featurewatch feature browser, one feature's (or neuron's) page: stats, density on a log
 * axis, activation histogram, logit effects, split links and examples shaded by activation. */
(function () {
  "use strict";

  const { el, svg, fmtNum, fmtDensity, oneIn, densityFraction, tokenNodes } = window.FW;
  const { LOG_MIN, SINGULAR, POSITIVE_RGB, NEGATIVE_RGB } = window.FW;
  const INDEX = window.FEATUREWATCH_INDEX;

  function detailPage(st, pos, record) {
    const d = st.data;
    const scale = d.max_activation[pos] || exampleMax(record);
    const left = el("div", { class: "col" }, [
      statsCard(st, pos), histogramCard(record.hist, scale), logitCard(record)]);
    const right = el("div", { class: "col wide" }, [
      splitsCard(record.splits),
      examplesCard("Top activations", record.top, scale, false),
      examplesCard("Examples across activation intervals", record.intervals, scale, true)]);
    return el("article", { class: "detail", "data-kind": st.kind, "data-feature": record.feature }, [
      detailHeader(st, pos), el("div", { class: "columns" }, [left, right])]);
  }

  function exampleMax(record) {
    let m = 0;
    for (const ex of record.top.concat(record.intervals)) {
      for (const a of ex[1]) if (a !== null) m = Math.max(m, Math.abs(a));
    }
    return m;
  }

  function detailHeader(st, pos) {
    const d = st.data;
    const name = SINGULAR[st.kind];
    const neighbour = (p) => p >= 0 && p < d.count ? "#" + name + "/" + d.feature[p] : null;
    const prev = neighbour(pos - 1), next = neighbour(pos + 1);
    return el("div", { class: "detail-head" }, [
      el("a", { class: "back", href: "#" + st.kind, text: "← all " + st.kind }),
      el("h1", {}, [el("span", { class: "kind", text: name + " " }),
        el("span", { class: "fid", text: String(d.feature[pos]) })]),
      el("p", { class: "label" + (d.label[pos] ? "" : " muted"), id: "feature-label",
        text: d.label[pos] || "(no label)" }),
      el("nav", { class: "pager" }, [
        el("a", { class: "button", href: prev, "aria-disabled": !prev, text: "‹ prev" }),
        el("a", { class: "button", href: next, "aria-disabled": !next, text: "next ›" })]),
    ]);
  }

  function statsCard(st, pos) {
    const d = st.data;
    const score = d.interp_score[pos];
    const stat = (name, value, extra) => el("div", { class: "stat" }, [
      el("div", { class: "stat-name", text: name }),
      el("div", { class: "stat-value", text: value }),
      extra ? el("div", { class: "stat-extra", text: extra }) : null]);
    return el("section", { class: "card" }, [
      el("div", { class: "stats" }, [
        stat("density", fmtDensity(d.density[pos]), oneIn(d.density[pos])),
        stat("max activation", fmtNum(d.max_activation[pos], 4)),
        stat("mean activation", fmtNum(d.mean_activation[pos], 4)),
        stat("interp score", score === null ? "—" : score.toFixed(3),
          score === null ? "not scored" : "simulated vs true")]),
      densityAxis(st, d.density[pos])]);
  }

  function densityBins(st) {
    if (!st.densityBins) {
      const bins = new Array(-LOG_MIN * 8).fill(0);
      for (const v of st.data.density) {
        if (v > 0) bins[Math.min(bins.length - 1, Math.floor(densityFraction(v) * bins.length))]++;
      }
      st.densityBins = bins;
    }
    return st.densityBins;
  }

  /* The density of all entries of this kind on a log axis, with this one marked. */
  function densityAxis(st, density) {
    const W = 420, H = 74, L = 12, R = 12, base = 50, plotW = W - L - R;
    const bins = densityBins(st);
    const top = Math.max(1, ...bins);
    const parts = bins.map((c, i) => svg("rect", { class: "dbin", x: L + (i * plotW) / bins.length,
      width: plotW / bins.length - 0.5, y: base - (36 * c) / top, height: (36 * c) / top }));
    for (let e = LOG_MIN; e <= 0; e++) {
      const x = L + ((e - LOG_MIN) / -LOG_MIN) * plotW;
      parts.push(svg("line", { class: "tick", x1: x, x2: x, y1: base, y2: base + 4 }));
      parts.push(svg("text", { class: "axis", x, y: base + 15, "text-anchor": "middle",
        text: e === 0 ? "1" : "1e" + e }));
    }
    parts.push(svg("line", { class: "axisline", x1: L, x2: W - R, y1: base, y2: base }));
    const x = L + densityFraction(density) * plotW;
    parts.push(svg("line", { class: "marker", id: "density-marker", x1: x, x2: x, y1: 6, y2: base,
      "data-density": density }));
    return el("figure", { class: "density-axis" }, [
      svg("svg", { viewBox: "0 0 " + W + " " + H, role: "img",
        "aria-label": "log10 density of this " + SINGULAR[st.kind] }, parts),
      el("figcaption", { text: "log density among all " + st.data.count.toLocaleString("en-US")
        + " " + st.kind + " (marker: this one)" })]);
  }

  function histogramCard(hist, scale) {
    const [edges, counts] = hist;
    const body = counts.length ? activationHistogram(edges, counts, scale)
      : el("p", { class: "muted", text: "No histogram recorded." });
    return el("section", { class: "card" }, [el("h2", { text: "Activation histogram" }), body]);
  }

  function activationHistogram(edges, counts, scale) {
    const W = 420, H = 170, L = 44, R = 8, T = 8, base = 140, plotW = W - L - R;
    const top = Math.max(1, ...counts);
    const n = counts.length;
    const hasEdges = edges.length === n + 1;
    const parts = [svg("line", { class: "axisline", x1: L, x2: W - R, y1: base, y2: base })];
    counts.forEach((c, i) => {
      const lo = hasEdges ? edges[i] : i, hi = hasEdges ? edges[i + 1] : i + 1;
      const h = ((base - T) * c) / top;
      const shade = scale > 0 ? Math.min(1, Math.abs((lo + hi) / 2) / scale) : 0.5;
      parts.push(svg("rect", { class: "bar", x: L + (i * plotW) / n, width: Math.max(1, plotW / n - 1),
        y: base - h, height: h, "data-count": c, "data-lo": lo, "data-hi": hi,
        fill: "rgba(" + POSITIVE_RGB + "," + (0.3 + 0.7 * shade).toFixed(3) + ")" },
        [svg("title", { text: fmtNum(lo) + " – " + fmtNum(hi) + ": " + c.toLocaleString("en-US") })]));
    });
    parts.push(svg("text", { class: "axis", x: L - 6, y: T + 8, "text-anchor": "end",
      text: top.toLocaleString("en-US") }));
    parts.push(svg("text", { class: "axis", x: L - 6, y: base, "text-anchor": "end", text: "0" }));
    if (hasEdges) {
      parts.push(svg("text", { class: "axis", x: L, y: base + 16, text: fmtNum(edges[0]) }));
      parts.push(svg("text", { class: "axis", x: W - R, y: base + 16, "text-anchor": "end",
        text: fmtNum(edges[n]) }));
    }
    parts.push(svg("text", { class: "axis", x: L + plotW / 2, y: base + 26, "text-anchor": "middle",
      text: "activation (non-zero)" }));
    return svg("svg", { id: "activation-histogram", viewBox: "0 0 " + W + " " + H, role: "img",
      "aria-label": "histogram of non-zero activations" }, parts);
  }

  function logitCard(record) {
    const all = record.pos.concat(record.neg).map((p) => Math.abs(p[1] || 0));
    const scale = Math.max(1e-12, ...all);
    const table = (title, items, cls) => el("div", { class: "logits " + cls }, [
      el("h3", { text: title }),
      items.length ? el("ol", {}, items.map(([tok, v]) => el("li", { class: "logit",
        title: JSON.stringify(tok) + ": " + v }, [
        el("code", { class: "tok-text" }, tokenNodes(tok)),
        el("span", { class: "lbar" }, [el("span", {
          style: "width:" + (100 * Math.abs(v || 0) / scale).toFixed(1) + "%" })]),
        el("span", { class: "lval", text: (v > 0 ? "+" : "") + fmtNum(v) })])))
        : el("p", { class: "muted", text: "none" })]);
    return el("section", { class: "card" }, [
      el("h2", { text: "Logit effects" }),
      el("p", { class: "hint", text: "direct effect on next-token logits, median-centred" }),
      el("div", { class: "logit-tables" }, [
        table("promotes", record.pos, "pos"), table("suppresses", record.neg, "neg")])]);
  }

  function dictionaryHref(id) {
    const found = (INDEX.meta.split_dictionaries || []).find((d) => d.id === id);
    return found ? found.href : "../../" + encodeURIComponent(id) + "/browser/index.html";
  }
  function dictionaryName(id) {
    const found = (INDEX.meta.split_dictionaries || []).find((d) => d.id === id);
    return found && found.d_sae ? id + " (" + found.d_sae.toLocaleString("en-US") + ")" : id;
  }

  function splitsCard(splits) {
    if (!splits || (!splits.children.length && !splits.parents.length)) return null;
    const link = ([dict, j, sim]) => el("a", { class: "split-link", href: dictionaryHref(dict)
      + "#feature/" + j, "data-dictionary": dict, "data-feature": j }, [
      "#" + j, el("span", { class: "sim", text: "sim " + fmtNum(sim, 2) })]);
    const group = (title, items) => {
      const byDict = new Map();
      for (const item of items) byDict.set(item[0], (byDict.get(item[0]) || []).concat([item]));
      return [...byDict].map(([dict, its]) => el("div", { class: "split-row" }, [
        el("span", { class: "split-title", text: title + " " + dictionaryName(dict) + ":" }),
        ...its.map(link)]));
    };
    return el("section", { class: "card splits", id: "splits" }, [
      el("h2", { text: "Across dictionary sizes" }),
      ...group("comes from", splits.parents), ...group("splits into", splits.children)]);
  }

  function examplesCard(title, examples, scale, grouped) {
    const card = el("section", { class: "card examples",
      id: grouped ? "interval-examples" : "top-examples" }, [el("h2", { text: title })]);
    if (!examples.length) {
      card.appendChild(el("p", { class: "muted", text: "none recorded" }));
      return card;
    }
    let lastInterval = null;
    for (const ex of examples) {
      if (grouped && ex[4] !== lastInterval) {
        lastInterval = ex[4];
        card.appendChild(el("h3", { class: "interval", text: "interval " + (ex[4] || "?") }));
      }
      card.appendChild(exampleRow(ex, scale));
    }
    return card;
  }

  function exampleRow(ex, scale) {
    const [tokens, acts, center, maxAct] = ex;
    const text = el("div", { class: "ex-tokens" });
    tokens.forEach((tok, i) => text.appendChild(tokenSpan(tok, acts[i] || 0, scale, i === center)));
    return el("div", { class: "example" }, [el("span", { class: "ex-max", text: fmtNum(maxAct) }), text]);
  }

  /* One token: background alpha is |activation| / the entry's max activation. */
  function tokenSpan(tok, act, scale, isCenter) {
    const alpha = scale > 0 ? Math.min(1, Math.abs(act) / scale) : 0;
    return el("span", { class: "tok" + (isCenter ? " center" : ""), "data-activation": String(act),
      title: JSON.stringify(tok) + "  activation " + act,
      style: "background-color:rgba(" + (act < 0 ? NEGATIVE_RGB : POSITIVE_RGB) + ","
        + alpha.toFixed(3) + ")" }, tokenNodes(tok));
  }

  window.FW.detailPage = detailPage;
})();
