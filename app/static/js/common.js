/* Shared helpers of the clinician page: the /v1 client, formatting, and uPlot zoom/pan groups.
   Loaded as a classic script (CSP: script-src 'self'); exposes one global, `biofo`. */
(function () {
  "use strict";

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  function describe(body, status) {
    if (body && typeof body.detail === "string") return body.detail;
    if (body && Array.isArray(body.detail)) return body.detail.map((d) => d.msg).join("; ");
    return "request failed with HTTP " + status;
  }

  /* Same-origin JSON call; the session cookie authenticates it. */
  async function api(path, options) {
    const opts = options || {};
    const init = { method: opts.method || "GET", headers: { Accept: "application/json" }, credentials: "same-origin" };
    if (opts.body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(opts.body);
    }
    const response = await fetch(path, init);
    if (response.status === 401) {
      window.location.assign("/login");
      throw new ApiError(401, "signed out");
    }
    const text = await response.text();
    const body = text ? JSON.parse(text) : null;
    if (!response.ok) throw new ApiError(response.status, describe(body, response.status));
    return body;
  }

  function query(params) {
    const search = new URLSearchParams();
    Object.keys(params).forEach((key) => {
      if (params[key] !== undefined && params[key] !== null) search.set(key, String(params[key]));
    });
    return search.toString();
  }

  /* Every window of a patient stream in time order (the queue endpoint pages by 1000). */
  async function allWindows(modality, patient, cap) {
    const limit = 1000;
    const out = [];
    for (let offset = 0; offset < (cap || 20000); offset += limit) {
      const page = await api("/v1/windows?" + query({ patient_id: patient, modality: modality, order: "time", limit: limit, offset: offset }));
      out.push(...page.windows);
      if (page.windows.length < limit) break;
    }
    return out;
  }

  /* Starts of runs of windows labelled `seizureClass` (in time order): the onsets clinicians annotated. */
  function labelledOnsets(windows, seizureClass) {
    const onsets = [];
    let inRun = false;
    windows.forEach((w) => {
      const ictal = w.label === seizureClass;
      if (ictal && !inRun) onsets.push(w.offset_s);
      if (w.label !== null) inRun = ictal;
    });
    return onsets;
  }

  function clock(seconds) {
    const sign = seconds < 0 ? "-" : "";
    let s = Math.abs(seconds);
    const h = Math.floor(s / 3600);
    s -= h * 3600;
    const m = Math.floor(s / 60);
    s -= m * 60;
    const ss = s.toFixed(1).padStart(4, "0");
    return sign + (h ? h + ":" + String(m).padStart(2, "0") : String(m)) + ":" + ss;
  }

  function joules(j) {
    if (j === null || j === undefined) return "–";
    if (j === 0) return "0 J";
    if (j < 1e-3) return (j * 1e6).toFixed(1) + " µJ";
    if (j < 1) return (j * 1e3).toFixed(2) + " mJ";
    return j.toFixed(3) + " J";
  }

  function percent(x) {
    return x === null || x === undefined ? "–" : (100 * x).toFixed(1) + " %";
  }

  const rootStyle = () => getComputedStyle(document.documentElement);

  function classColor(name) {
    return rootStyle().getPropertyValue("--cls-" + name).trim() || "#37474f";
  }

  function cssVar(name) {
    return rootStyle().getPropertyValue(name).trim();
  }

  function el(tag, attrs, children) {
    const node = document.createElement(tag);
    Object.entries(attrs || {}).forEach(([key, value]) => {
      if (key === "text") node.textContent = value;
      else if (key === "class") node.className = value;
      else node.setAttribute(key, value);
    });
    (children || []).forEach((child) => node.append(child));
    return node;
  }

  /* A set of uPlot charts that share one x range: drag-zoom on one zooms all; buttons, keys and
     the mouse wheel zoom and pan around the visible centre, clamped to the data. */
  class ZoomGroup {
    /* onChange(min, max) is told every new visible x range. */
    constructor(onChange) {
      this.plots = [];
      this.full = null;
      this.syncing = false;
      this.onChange = onChange || (() => {});
    }

    setFull(min, max) {
      this.full = { min: min, max: max };
    }

    hooks() {
      return {
        setScale: [
          (u, key) => {
            if (key !== "x" || this.syncing) return;
            this.apply(u.scales.x.min, u.scales.x.max, u);
          },
        ],
        ready: [(u) => this.wheel(u)],
      };
    }

    add(plot) {
      this.plots.push(plot);
      return plot;
    }

    clear() {
      this.plots.forEach((p) => p.destroy());
      this.plots = [];
    }

    view() {
      const p = this.plots[0];
      return p ? { min: p.scales.x.min, max: p.scales.x.max } : this.full;
    }

    apply(min, max, source) {
      if (!this.full) return;
      const span = Math.min(max - min, this.full.max - this.full.min);
      let lo = Math.max(this.full.min, Math.min(min, this.full.max - span));
      const hi = lo + span;
      this.syncing = true;
      this.plots.forEach((p) => {
        if (p !== source || p.scales.x.min !== lo || p.scales.x.max !== hi) p.setScale("x", { min: lo, max: hi });
      });
      this.syncing = false;
      this.onChange(lo, hi);
    }

    zoom(factor, centre) {
      const v = this.view();
      if (!v) return;
      const mid = centre === undefined ? (v.min + v.max) / 2 : centre;
      const minSpan = (this.full.max - this.full.min) / 200;
      const span = Math.max(minSpan, (v.max - v.min) * factor);
      const ratio = (mid - v.min) / (v.max - v.min || 1);
      this.apply(mid - span * ratio, mid - span * ratio + span);
    }

    pan(direction) {
      const v = this.view();
      if (!v) return;
      const step = (v.max - v.min) * 0.25 * direction;
      this.apply(v.min + step, v.max + step);
    }

    reset() {
      if (this.full) this.apply(this.full.min, this.full.max);
    }

    wheel(u) {
      u.over.addEventListener("wheel", (event) => {
        event.preventDefault();
        const centre = u.posToVal(event.offsetX, "x");
        this.zoom(event.deltaY < 0 ? 0.8 : 1.25, centre);
      }, { passive: false });
      u.over.addEventListener("dblclick", () => this.reset());
    }

    /* Toolbar buttons with data-action zoom-in / zoom-out / pan-left / pan-right / zoom-reset. */
    bindToolbar(toolbar) {
      toolbar.addEventListener("click", (event) => {
        const button = event.target.closest("button[data-action]");
        if (!button) return;
        const actions = {
          "zoom-in": () => this.zoom(0.5),
          "zoom-out": () => this.zoom(2),
          "pan-left": () => this.pan(-1),
          "pan-right": () => this.pan(1),
          "zoom-reset": () => this.reset(),
        };
        if (actions[button.dataset.action]) actions[button.dataset.action]();
      });
    }

    /* Returns true when the key was a zoom/pan key. */
    key(event) {
      if (event.key === "+" || event.key === "=") this.zoom(0.5);
      else if (event.key === "-" || event.key === "_") this.zoom(2);
      else if (event.key === "0") this.reset();
      else if (event.shiftKey && event.key === "ArrowLeft") this.pan(-1);
      else if (event.shiftKey && event.key === "ArrowRight") this.pan(1);
      else return false;
      return true;
    }
  }

  /* Keys typed into form fields are theirs, not shortcuts. */
  function isTyping(event) {
    const t = event.target;
    return event.ctrlKey || event.metaKey || event.altKey ||
      (t && (t.tagName === "INPUT" || t.tagName === "TEXTAREA" || t.tagName === "SELECT" || t.isContentEditable));
  }

  function widthOf(node) {
    return Math.max(160, Math.floor(node.getBoundingClientRect().width));
  }

  /* Vertical dashed line at x value `x` across the plotting area, with a caption at its top (or bottom). */
  function markLine(u, x, color, caption, captionAtBottom) {
    if (x < u.scales.x.min || x > u.scales.x.max) return;
    const ctx = u.ctx;
    const px = Math.round(u.valToPos(x, "x", true));
    ctx.save();
    ctx.strokeStyle = color;
    ctx.lineWidth = 1.5 * devicePixelRatio;
    ctx.setLineDash([6 * devicePixelRatio, 4 * devicePixelRatio]);
    ctx.beginPath();
    ctx.moveTo(px, u.bbox.top);
    ctx.lineTo(px, u.bbox.top + u.bbox.height);
    ctx.stroke();
    if (caption) {
      ctx.setLineDash([]);
      ctx.fillStyle = color;
      ctx.font = "600 " + 12 * devicePixelRatio + "px system-ui, sans-serif";
      const y = captionAtBottom ? u.bbox.top + u.bbox.height - 4 * devicePixelRatio : u.bbox.top + 13 * devicePixelRatio;
      ctx.fillText(caption, px + 4 * devicePixelRatio, y);
    }
    ctx.restore();
  }

  /* EEG channels stacked top to bottom: channel k is drawn around y = -k, one band `spacing` µV tall.
     Returns the shifted rows, the y range and the y axis naming each band; nulls (gaps) stay null. */
  function eegStack(names, rows, spacing) {
    return {
      rows: rows.map((row, k) => row.map((v) => (v === null ? null : v / spacing - k))),
      range: [-(names.length - 1) - 1, 1],
      axis: {
        size: 70, stroke: "#111827", grid: { show: false }, gap: 2,
        splits: () => names.map((_, k) => -k),
        values: (u, splits) => splits.map((v) => names[-v] || ""),
        font: "11px system-ui, sans-serif",
      },
      series: names.map((name, k) => ({ label: name, stroke: k % 2 ? "#37474f" : "#0b3d91", width: 1 })),
    };
  }

  /* Server-sent events of one patient (or all, without arguments): handlers by event name
     ("windows", "model", "alarm", "overflow"). The browser reconnects by itself after a drop. */
  function live(modality, patient, handlers) {
    const source = new EventSource("/v1/events?" + query({ modality: modality, patient_id: patient }));
    Object.keys(handlers).forEach((name) => {
      source.addEventListener(name, (event) => handlers[name](JSON.parse(event.data)));
    });
    source.addEventListener("open", () => document.documentElement.setAttribute("data-live", "open"));
    source.addEventListener("error", () => document.documentElement.setAttribute("data-live", "reconnecting"));
    return source;
  }

  /* Run `fn` at most once per `ms`, trailing call kept: bursts of live events cost one refresh. */
  function throttle(fn, ms) {
    let timer = null;
    let again = false;
    return function () {
      if (timer) { again = true; return; }
      fn();
      timer = setTimeout(function tick() {
        timer = null;
        if (again) { again = false; fn(); timer = setTimeout(tick, ms); }
      }, ms);
    };
  }

  /* POST labels [{window_id, label, labeled_by}] in order, 1000 per request (the API's limit);
     returns every label id, in the same order. */
  async function postLabels(labels) {
    const ids = [];
    for (let i = 0; i < labels.length; i += 1000) {
      const out = await api("/v1/labels", { method: "POST", body: { labels: labels.slice(i, i + 1000) } });
      ids.push(...out.label_ids);
    }
    return ids;
  }

  window.biofo = {
    live: live,
    throttle: throttle,
    postLabels: postLabels,
    ApiError: ApiError,
    api: api,
    query: query,
    allWindows: allWindows,
    labelledOnsets: labelledOnsets,
    clock: clock,
    joules: joules,
    percent: percent,
    classColor: classColor,
    cssVar: cssVar,
    el: el,
    ZoomGroup: ZoomGroup,
    isTyping: isTyping,
    widthOf: widthOf,
    markLine: markLine,
    eegStack: eegStack,
  };
})();
