// The search page: plain DOM, no build step, no third-party code. Result text is only ever put
// into the page as text nodes (highlights are <mark> elements built around text nodes), never
// as HTML, so a document cannot inject markup or script; the server's CSP forbids inline script
// on top of that.
"use strict";

(() => {
  const I18N = window.OSP_I18N;
  const LANG_KEY = "osp.lang";
  const TOKEN_KEY = "osp.token";
  const STATUSES = ["AKTIV", "ENTWURF", "FREIGEGEBEN", "OBSOLET"];
  const STOPWORDS = new Set(
    ("der die das den dem des ein eine einer eines und oder bei mit von vom zum zur für fuer " +
      "ist sind wie was wer wird werden auf aus nach über ueber unter nicht the and for with " +
      "what how are from into").split(" ")
  );

  const $ = (id) => document.getElementById(id);
  const state = {
    lang: I18N[localStorage.getItem(LANG_KEY)] ? localStorage.getItem(LANG_KEY) : "de",
    who: null,
    layers: [],
    checked: null, // Set of checked layer names; null = all (before the first render)
    result: null,
    terms: [],
    doc: null,
    docId: null,
    pending: null, // the action a 401 interrupted, retried after sign-in
    status: null, // {key, values}
    error: null, // {key, values}
    seen: { "doc-types": new Set(), tags: new Set(), statuses: new Set(STATUSES) },
  };

  // ---- strings -------------------------------------------------------------------------------

  function t(key, values) {
    const text = I18N[state.lang][key] ?? I18N.de[key] ?? key;
    return text.replace(/\{(\w+)\}/g, (m, k) => (values && k in values ? String(values[k]) : m));
  }

  function applyLang() {
    document.documentElement.lang = state.lang;
    for (const el of document.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
    for (const el of document.querySelectorAll("[data-i18n-placeholder]")) {
      el.placeholder = t(el.dataset.i18nPlaceholder);
    }
    for (const el of document.querySelectorAll("[data-i18n-title]")) el.title = t(el.dataset.i18nTitle);
    $("lang-switch").lang = state.lang === "de" ? "en" : "de";
    renderWho();
    renderLayers();
    renderStatus();
    renderError();
    renderResults();
    renderDoc();
  }

  // ---- API -----------------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  async function api(path, { method = "GET", body = null, raw = false } = {}) {
    const headers = { Accept: "application/json" };
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (token) headers.Authorization = "Bearer " + token;
    if (body !== null) headers["Content-Type"] = "application/json";
    let resp;
    try {
      resp = await fetch(path, {
        method,
        headers,
        body: body === null ? undefined : JSON.stringify(body),
        cache: "no-store",
      });
    } catch (err) {
      throw new ApiError(0, "network", err.message);
    }
    if (!resp.ok) {
      let code = "http_" + resp.status;
      let message = resp.statusText || "";
      try {
        const data = await resp.json();
        if (data && data.error) {
          code = String(data.error);
          message = String(data.message ?? "");
        }
      } catch (_) {
        // not JSON: keep the status line
      }
      throw new ApiError(resp.status, code, message);
    }
    return raw ? resp : resp.json();
  }

  /** Runs an action; a 401 asks for a token and retries the action after sign-in. */
  async function run(action) {
    try {
      await action();
    } catch (err) {
      if (err instanceof ApiError && err.status === 401) {
        state.pending = action;
        showAuth(false);
      } else {
        setStatus(null);
        setError(err);
      }
    }
  }

  // ---- status and errors ---------------------------------------------------------------------

  function setStatus(key, values) {
    state.status = key ? { key, values } : null;
    renderStatus();
  }

  function renderStatus() {
    $("status").textContent = state.status ? t(state.status.key, state.status.values) : "";
  }

  function setError(err) {
    if (err === null) state.error = null;
    else if (err instanceof ApiError && err.code === "network") {
      state.error = { key: "error.network", values: { message: err.message } };
    } else if (err instanceof ApiError) {
      state.error = { key: "error.line", values: { code: err.code, message: err.message } };
    } else if (err && err.key) state.error = err;
    else state.error = { key: "error.line", values: { code: "client", message: String(err) } };
    renderError();
  }

  function renderError() {
    const box = $("error");
    box.hidden = !state.error;
    // one readable line: newlines in a server message must not break the layout
    box.textContent = state.error ? t(state.error.key, state.error.values).replace(/\s+/g, " ") : "";
  }

  // ---- sign-in -------------------------------------------------------------------------------

  function showAuth(invalid) {
    state.who = null;
    renderWho();
    $("auth").hidden = false;
    $("search").hidden = true;
    $("auth-message").dataset.i18n = invalid ? "auth.invalid" : "auth.needed";
    $("auth-message").textContent = t($("auth-message").dataset.i18n);
    $("auth-message").className = invalid ? "error" : "";
    setStatus(null);
    $("token").focus();
  }

  async function loadSession() {
    state.who = await api("/api/v1/whoami");
    $("auth").hidden = true;
    $("search").hidden = false;
    renderWho();
    state.layers = (await api("/api/v1/layers")).layers;
    renderLayers();
  }

  function renderWho() {
    const who = state.who;
    const box = $("whoami");
    if (!who) {
      box.textContent = "";
      $("signout").hidden = true;
      return;
    }
    const values = { name: who.name, role: t("role." + who.role), clearance: who.clearance };
    box.textContent = t(who.auth === "local" ? "auth.local" : "auth.signedin", values);
    $("signout").hidden = !sessionStorage.getItem(TOKEN_KEY);
  }

  async function signIn(event) {
    event.preventDefault();
    const token = $("token").value.trim();
    if (!token) return;
    sessionStorage.setItem(TOKEN_KEY, token);
    $("token").value = "";
    setError(null);
    try {
      await loadSession();
    } catch (err) {
      if (err instanceof ApiError && err.status === 401) {
        sessionStorage.removeItem(TOKEN_KEY);
        showAuth(true);
      } else setError(err);
      return;
    }
    const pending = state.pending;
    state.pending = null;
    if (pending && pending !== start && pending !== loadSession) await run(pending);
    else {
      route();
      $("q").focus();
    }
  }

  function signOut() {
    sessionStorage.removeItem(TOKEN_KEY);
    state.who = null;
    state.result = null;
    state.doc = null;
    state.layers = [];
    setError(null);
    setStatus(null);
    renderResults();
    if (location.hash) location.hash = "";
    showView("results");
    run(loadSession);
  }

  // ---- layers and filters --------------------------------------------------------------------

  function layerClass(name) {
    const i = state.layers.findIndex((l) => l.name === name);
    return "badge layer-" + (i < 0 ? "x" : Math.min(i, 4));
  }

  function renderLayers() {
    const list = $("layer-list");
    if (state.checked === null && state.layers.length) {
      state.checked = new Set(state.layers.map((l) => l.name));
    }
    list.replaceChildren();
    for (const layer of state.layers) {
      const label = document.createElement("label");
      label.className = "check";
      label.title = layer.description || "";
      const box = document.createElement("input");
      box.type = "checkbox";
      box.name = "layer";
      box.value = layer.name;
      box.checked = state.checked.has(layer.name);
      box.addEventListener("change", () => {
        if (box.checked) state.checked.add(layer.name);
        else state.checked.delete(layer.name);
      });
      const badge = document.createElement("span");
      badge.className = layerClass(layer.name);
      badge.textContent = layer.name;
      label.append(box, " ", badge, ` (${layer.count})`);
      list.append(label);
    }
  }

  function buildWhere() {
    const clauses = [];
    const docType = $("f-doc-type").value.trim();
    const tag = $("f-tag").value.trim().toUpperCase();
    const status = $("f-status").value.trim().toUpperCase();
    if (docType) clauses.push({ doc_type: docType });
    if (tag) clauses.push({ $or: [{ tag }, { sub_tag: tag }] });
    if (status) clauses.push({ status });
    if (!clauses.length) return null;
    return clauses.length === 1 ? clauses[0] : { $and: clauses };
  }

  function learn(hits) {
    for (const hit of hits) {
      const m = hit.metadata || {};
      if (m.doc_type) state.seen["doc-types"].add(String(m.doc_type));
      if (m.tag) state.seen.tags.add(String(m.tag));
      if (m.sub_tag) state.seen.tags.add(String(m.sub_tag));
      if (m.status) state.seen.statuses.add(String(m.status));
    }
    for (const [id, values] of Object.entries(state.seen)) {
      $(id).replaceChildren(
        ...[...values].sort().map((v) => {
          const option = document.createElement("option");
          option.value = v;
          return option;
        })
      );
    }
  }

  // ---- search --------------------------------------------------------------------------------

  function queryTerms(query) {
    const out = new Set();
    for (const match of query.matchAll(/\p{N}+(?:[.,]\p{N}+)*|\p{L}[\p{L}\p{N}]*/gu)) {
      const word = match[0].toLowerCase();
      const numeric = /^\p{N}/u.test(word);
      if ((numeric && word.length >= 2) || (!numeric && word.length >= 3 && !STOPWORDS.has(word))) {
        out.add(word);
      }
    }
    return [...out].sort((a, b) => b.length - a.length);
  }

  /** Text with the query's terms in <mark>: built from text nodes, never parsed as HTML. */
  function highlighted(text, terms) {
    const frag = document.createDocumentFragment();
    if (!terms.length) {
      frag.append(text);
      return frag;
    }
    const escaped = terms.map((s) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"));
    const parts = String(text).split(new RegExp("(" + escaped.join("|") + ")", "giu"));
    parts.forEach((part, i) => {
      if (!part) return;
      if (i % 2 === 1) {
        const mark = document.createElement("mark");
        mark.textContent = part;
        frag.append(mark);
      } else frag.append(document.createTextNode(part));
    });
    return frag;
  }

  async function search(event) {
    if (event) event.preventDefault();
    const query = $("q").value.trim();
    if (!query) return;
    const layers = state.layers.map((l) => l.name).filter((n) => state.checked?.has(n));
    setError(null);
    if (state.layers.length && !layers.length) {
      setError({ key: "layers.none", values: {} });
      return;
    }
    const body = {
      query,
      n_results: Number($("f-n").value),
      layers: layers.length ? layers : null,
      where: buildWhere(),
      include_history: $("f-history").checked,
    };
    if ($("f-mode").value) body.mode = $("f-mode").value;
    setStatus("results.searching");
    await run(async () => {
      const result = await api("/api/v1/query", { method: "POST", body });
      state.result = result;
      state.terms = queryTerms(query);
      learn(result.hits);
      const ms = Object.values(result.timings_ms || {}).reduce((a, b) => Math.max(a, b), 0);
      setStatus(result.hits.length ? "results.count" : "results.none", {
        n: result.hits.length,
        ms: Math.round(ms),
      });
      renderResults();
      if (location.hash.startsWith("#doc/")) location.hash = "";
      showView("results");
    });
  }

  function metaBits(meta, extra) {
    const bits = [];
    if (meta.page !== undefined && meta.page !== null) bits.push(t("hit.page", { page: meta.page }));
    if (meta.version) bits.push(t("hit.version", { version: meta.version }));
    return bits.concat(extra || []);
  }

  function span(className, text, title) {
    const el = document.createElement("span");
    el.className = className;
    el.textContent = text;
    if (title) el.title = title;
    return el;
  }

  function renderResults() {
    const list = $("results");
    list.replaceChildren();
    if (!state.result) return;
    for (const hit of state.result.hits) {
      const meta = hit.metadata || {};
      const li = document.createElement("li");
      li.className = "hit";
      li.dataset.layer = hit.layer;
      const head = document.createElement("div");
      head.className = "hit-head";
      head.append(span(layerClass(hit.layer), hit.layer));
      head.append(span("source", meta.source || meta.title || hit.id));
      for (const bit of metaBits(meta)) head.append(span("meta", bit));
      if (meta.access_level !== undefined) {
        head.append(span("level", t("hit.level", { level: meta.access_level }), t("hit.level.title")));
      }
      const scores = [];
      if (hit.relevance !== null && hit.relevance !== undefined) {
        scores.push(t("hit.relevance", { value: Number(hit.relevance).toFixed(2) }));
      }
      scores.push(t("hit.score", { value: Number(hit.score).toFixed(3) }));
      head.append(span("score", scores.join(" · ")));
      li.append(head);
      if (meta.section) li.append(span("section", meta.section));
      const text = document.createElement("p");
      text.className = "text";
      text.append(highlighted(hit.text || "", state.terms));
      li.append(text);
      if (meta.doc_id) {
        const open = document.createElement("a");
        open.className = "open-doc";
        open.href = "#doc/" + encodeURIComponent(meta.doc_id);
        open.textContent = t("hit.open");
        li.append(open);
      }
      list.append(li);
    }
  }

  // ---- document view -------------------------------------------------------------------------

  function showView(which) {
    $("doc-view").hidden = which !== "doc";
    $("results-view").hidden = which === "doc";
  }

  async function openDoc(id) {
    state.docId = id;
    state.doc = null;
    showView("doc");
    setError(null);
    renderDoc();
    setStatus("doc.loading");
    await run(async () => {
      const doc = await api("/api/v1/documents/" + encodeURIComponent(id));
      if (state.docId !== id) return;
      state.doc = doc;
      setStatus(null);
      renderDoc();
      $("doc-title").focus();
    });
  }

  function renderDoc() {
    const chunks = $("doc-chunks");
    chunks.replaceChildren();
    const doc = state.doc;
    $("doc-file").hidden = !doc;
    if (!doc) {
      $("doc-title").textContent = "";
      $("doc-meta").replaceChildren();
      return;
    }
    const info = doc.document;
    $("doc-title").textContent = info.title || info.source;
    $("doc-meta").replaceChildren(
      span(layerClass(info.layer), info.layer),
      " ",
      span("source", info.source),
      " · ",
      t("doc.chunks", { n: doc.chunks.length, level: info.access_level, layer: info.layer })
    );
    $("doc-file").href = "/api/v1/documents/" + encodeURIComponent(info.id) + "/file";
    doc.chunks.forEach((chunk, i) => {
      const meta = chunk.metadata || {};
      const li = document.createElement("li");
      li.className = "chunk";
      li.dataset.chunkIndex = String(meta.chunk_index ?? i);
      const head = document.createElement("div");
      head.className = "hit-head";
      head.append(span("chunk-no", t("doc.chunk", { n: i + 1 })));
      if (meta.section) head.append(span("section", meta.section));
      for (const bit of metaBits(meta)) head.append(span("meta", bit));
      const text = document.createElement("p");
      text.className = "text";
      text.append(highlighted(chunk.text || "", state.terms));
      li.append(head, text);
      chunks.append(li);
    });
  }

  /** The original file, fetched with the token (a plain link would not send it). */
  function downloadFile(event) {
    event.preventDefault();
    const doc = state.doc;
    if (!doc) return;
    run(async () => {
      const resp = await api($("doc-file").getAttribute("href"), { raw: true });
      const url = URL.createObjectURL(await resp.blob());
      const a = document.createElement("a");
      a.href = url;
      a.download = doc.document.source.split("/").pop() || "document";
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 60000);
    });
  }

  function route() {
    const hash = location.hash;
    if (hash.startsWith("#doc/")) openDoc(decodeURIComponent(hash.slice(5)));
    else {
      state.docId = null;
      showView("results");
    }
  }

  // ---- start ---------------------------------------------------------------------------------

  async function start() {
    await loadSession();
    route();
  }

  function init() {
    $("lang-switch").addEventListener("click", () => {
      state.lang = state.lang === "de" ? "en" : "de";
      localStorage.setItem(LANG_KEY, state.lang);
      applyLang();
    });
    $("auth-form").addEventListener("submit", signIn);
    $("signout").addEventListener("click", signOut);
    $("search-form").addEventListener("submit", search);
    $("doc-file").addEventListener("click", downloadFile);
    $("doc-back").addEventListener("click", (event) => {
      event.preventDefault();
      if (location.hash) history.pushState(null, "", location.pathname + location.search);
      route();
      $("q").focus();
    });
    window.addEventListener("hashchange", route);
    applyLang();
    run(start);
    $("q").focus();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
