/* featurewatch feature browser, shared helpers: DOM building, number and token formatting,
 * on-demand data chunks. Plain JS, no build step, no network. All text goes in through
 * textContent, never innerHTML, so token text needs no escaping. */
(function () {
  "use strict";

  const LOG_MIN = -7; // density axis spans 1e-7 .. 1
  const SINGULAR = { features: "feature", neurons: "neuron" };
  const PLURAL = { feature: "features", neuron: "neurons" };
  const WHITESPACE = { " ": "·", "\n": "↵", "\t": "⇥", "\r": "␍", "\u00a0": "⍽" };
  const chunks = {}; // "kind:n" -> {promise, resolve}

  // ---------- DOM helpers ----------
  function el(tag, attrs, children) {
    return fill(document.createElement(tag), attrs, children);
  }
  function svg(tag, attrs, children) {
    return fill(document.createElementNS("http://www.w3.org/2000/svg", tag), attrs, children);
  }
  function fill(node, attrs, children) {
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "text") node.textContent = String(value);
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of [].concat(children || [])) {
      if (child === null || child === undefined) continue;
      node.appendChild(typeof child === "string" ? document.createTextNode(child) : child);
    }
    return node;
  }

  // ---------- formatting ----------
  function fmtNum(v, digits) {
    if (v === null || v === undefined) return "—";
    if (v === 0) return "0";
    const a = Math.abs(v);
    if (a >= 1e5 || a < 1e-3) return v.toExponential((digits || 3) - 1);
    return String(Number(v.toPrecision(digits || 3)));
  }
  function fmtDensity(d) {
    if (d === null || d === undefined) return "—";
    return d === 0 ? "dead" : d.toExponential(1);
  }
  function oneIn(d) {
    return d > 0 ? "1 in " + Math.round(1 / d).toLocaleString("en-US") + " tokens" : "never fired";
  }
  function densityFraction(d) {
    if (!(d > 0)) return 0;
    return Math.max(0, Math.min(1, (Math.log10(d) - LOG_MIN) / -LOG_MIN));
  }

  /* A token's text with whitespace and control characters made visible. */
  function tokenNodes(text) {
    if (text === "") return [el("span", { class: "ws", text: "∅" })];
    const out = [];
    let plain = "";
    for (const ch of text) {
      let mark = WHITESPACE[ch];
      if (!mark && /[\s\p{Cc}]/u.test(ch)) {
        mark = "\\u" + ch.codePointAt(0).toString(16).padStart(4, "0");
      }
      if (!mark) { plain += ch; continue; }
      if (plain) { out.push(document.createTextNode(plain)); plain = ""; }
      out.push(el("span", { class: "ws", text: mark }));
    }
    if (plain) out.push(document.createTextNode(plain));
    return out;
  }

  // ---------- data ----------
  function loadChunk(kind, n) {
    const key = kind + ":" + n;
    if (chunks[key]) return chunks[key].promise;
    const file = "data/" + kind + "_" + String(n).padStart(3, "0") + ".js";
    const entry = {};
    entry.promise = new Promise((resolve, reject) => {
      entry.resolve = resolve;
      const script = el("script", { src: file, async: true });
      script.addEventListener("error", () => {
        delete chunks[key];
        reject(new Error(file + " could not be loaded"));
      });
      document.head.appendChild(script);
    });
    chunks[key] = entry;
    return entry.promise;
  }
  window.featurewatchChunk = function (kind, n, records) {
    const entry = chunks[kind + ":" + n];
    if (entry) entry.resolve(records);
    else chunks[kind + ":" + n] = { promise: Promise.resolve(records) };
  };


  window.FW = { LOG_MIN, SINGULAR, PLURAL, POSITIVE_RGB: "255,106,0", NEGATIVE_RGB: "37,99,235",
    el, svg, fmtNum, fmtDensity, oneIn, densityFraction, tokenNodes, loadChunk };
})();
