/* EEG pages: 10 s of every channel of the montage, paged the way EEG is reviewed. A seizure is marked
   as an interval, by dragging across the page or with the cursor keys and [ / ]; Enter labels the page
   in one action (POST /v1/intervals: each 2 s window at least half inside becomes seizure, the rest of
   the page background), and U undoes the last interval, all its labels in one rebuild. */
(function () {
  "use strict";
  const b = window.biofo;
  const root = document.getElementById("eeg-pages");
  if (!root) return;
  const patient = root.dataset.patient;
  const user = root.dataset.user;
  const SPAN = 10;
  const SEIZURE = "seizure";
  const pagePath = "/v1/strips/eeg/" + encodeURIComponent(patient);
  const modelPath = "/v1/models/eeg/" + encodeURIComponent(patient);
  const $ = (id) => document.getElementById(id);
  const ui = { title: $("page-title"), meta: $("page-meta"), plots: $("page-plots"), interval: $("interval"), last: $("last-action"), scale: $("eeg-scale") };
  const params = new URLSearchParams(window.location.search);
  const state = {
    page: null,
    start: params.has("start") ? Math.max(0, Number(params.get("start")) || 0) : null,
    onset: null,
    offset: null,
    cursor: 0,
    actions: [], // intervals labelled from this page, newest last: their label ids, for undo
    chain: Promise.resolve(), // label and undo requests go out one at a time, in key order
    plot: null,
    loading: 0,
  };

  const seconds = (x) => x.toFixed(2) + " s";
  const round = (x) => Math.round(x * 100) / 100;

  async function load(start) {
    const ticket = ++state.loading;
    const page = await b.api(pagePath + "?" + b.query({ start: start.toFixed(3), duration: SPAN }));
    if (ticket !== state.loading) return;
    const moved = !state.page || page.start !== state.page.start;
    state.page = page;
    state.start = page.start;
    if (moved) {
      state.onset = null;
      state.offset = null;
      state.cursor = page.start;
    }
    render();
  }

  function bounds() {
    const p = state.page;
    return [p.start, p.start + p.duration];
  }

  function clamp(x) {
    const [lo, hi] = bounds();
    return round(Math.min(hi, Math.max(lo, x)));
  }

  function render() {
    const p = state.page;
    root.dataset.start = p.start.toFixed(1);
    root.dataset.windows = String(p.windows.length);
    root.dataset.seizureLabels = String(p.windows.filter((w) => w.label === SEIZURE).length);
    root.dataset.labelled = String(p.windows.filter((w) => w.label).length);
    ui.title.textContent = "EEG " + b.clock(p.start) + " – " + b.clock(p.start + p.duration);
    const labelled = p.windows.filter((w) => w.label).length;
    ui.meta.textContent = p.windows.length + " windows of " + p.window_s + " s · " + labelled + " labelled · " +
      p.channels.length + " channels · stream " + b.clock(p.stream_start) + " – " + b.clock(p.stream_end);
    if (state.plot) state.plot.destroy();
    ui.plots.replaceChildren();
    const n = p.samples.length ? p.samples[0].length : 0;
    const t = Array.from({ length: n }, (_, i) => p.start + i / p.fs);
    const stack = b.eegStack(p.channels, p.samples, Number(ui.scale.value));
    state.plot = new uPlot({
      width: b.widthOf(ui.plots),
      height: Math.max(360, Math.min(16 * p.channels.length + 90, window.innerHeight - 280)),
      legend: { show: false },
      // A drag marks the interval instead of zooming: the page is the reviewer's unit.
      cursor: { drag: { x: true, y: false, setScale: false }, points: { show: false } },
      scales: { x: { time: false, range: bounds() }, y: { range: stack.range } },
      axes: [
        { label: "seconds since the stream began", labelSize: 18, size: 34, stroke: "#111827", grid: { stroke: "#e3e7ee" } },
        stack.axis,
      ],
      series: [{}, ...stack.series.map((s) => Object.assign({ spanGaps: false, points: { show: false } }, s))],
      hooks: { draw: [marks], setSelect: [selected] },
    }, [t, ...stack.rows], ui.plots);
    showInterval();
  }

  /* Window boundaries with each window's prediction (and label), the interval, and the cursor. */
  function marks(u) {
    const p = state.page;
    const ctx = u.ctx;
    const px = (x) => u.valToPos(x, "x", true);
    ctx.save();
    if (state.onset !== null && state.offset !== null) {
      ctx.fillStyle = "rgba(183, 28, 28, 0.14)";
      ctx.fillRect(px(state.onset), u.bbox.top, px(state.offset) - px(state.onset), u.bbox.height);
    }
    ctx.font = "700 " + 12 * devicePixelRatio + "px system-ui, sans-serif";
    ctx.textAlign = "left";
    ctx.textBaseline = "top";
    p.windows.forEach((w) => {
      const x = px(w.offset_s);
      const caption = w.predicted + (w.label ? " [" + w.label + "]" : "");
      ctx.fillStyle = "#9ca3af";
      ctx.fillRect(x, u.bbox.top, devicePixelRatio, u.bbox.height);
      ctx.fillStyle = "rgba(255, 255, 255, 0.85)";
      ctx.fillRect(x + 2 * devicePixelRatio, u.bbox.top, ctx.measureText(caption).width + 4 * devicePixelRatio, 15 * devicePixelRatio);
      ctx.fillStyle = b.classColor(w.label || w.predicted);
      ctx.fillText(caption, x + 4 * devicePixelRatio, u.bbox.top + 2 * devicePixelRatio);
    });
    ctx.restore();
    if (state.onset !== null) b.markLine(u, state.onset, "#b71c1c", "onset", true);
    if (state.offset !== null) b.markLine(u, state.offset, "#b71c1c", "offset", true);
    b.markLine(u, state.cursor, "#6b7280", "");
  }

  function selected(u) {
    if (u.select.width < 3) return;
    const a = clamp(u.posToVal(u.select.left, "x"));
    const z = clamp(u.posToVal(u.select.left + u.select.width, "x"));
    u.setSelect({ left: 0, top: 0, width: 0, height: 0 }, false);
    state.onset = a;
    state.offset = z;
    state.cursor = z;
    changed();
  }

  function changed() {
    if (state.onset !== null && state.offset !== null && state.onset > state.offset) {
      [state.onset, state.offset] = [state.offset, state.onset];
    }
    showInterval();
    if (state.plot) state.plot.redraw(false, false);
  }

  function showInterval() {
    root.dataset.cursor = state.cursor.toFixed(2);
    root.dataset.onset = state.onset === null ? "" : state.onset.toFixed(2);
    root.dataset.offset = state.offset === null ? "" : state.offset.toFixed(2);
    const cursor = "cursor " + seconds(state.cursor);
    if (state.onset !== null && state.offset !== null) {
      ui.interval.textContent = "Seizure " + seconds(state.onset) + " – " + seconds(state.offset) + " (" +
        seconds(state.offset - state.onset) + "): Enter labels this page · " + cursor;
    } else if (state.onset !== null || state.offset !== null) {
      ui.interval.textContent = (state.onset !== null ? "Onset " + seconds(state.onset) + ": place the offset (])"
        : "Offset " + seconds(state.offset) + ": place the onset ([)") + " · " + cursor;
    } else {
      ui.interval.textContent = "Drag across the page, or place onset ([) and offset (]) at the cursor (← →) · " + cursor;
    }
  }

  function moveCursor(step) {
    state.cursor = clamp(state.cursor + step);
    changed();
  }

  function mark(which) {
    state[which] = state.cursor;
    changed();
  }

  function clearMarks() {
    state.onset = null;
    state.offset = null;
    changed();
  }

  async function waitApplied(seq) {
    const deadline = Date.now() + 30000;
    let model = await b.api(modelPath);
    while (model.applied_seq < seq && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 150));
      model = await b.api(modelPath);
    }
    return model;
  }

  function apply() {
    const p = state.page;
    if (!p || state.onset === null || state.offset === null || !(state.offset > state.onset)) {
      ui.last.textContent = "Mark the seizure's onset and offset first.";
      return;
    }
    const body = { start: p.start, duration: p.duration, onset: state.onset, offset: state.offset, labeled_by: user };
    state.chain = state.chain.then(async () => {
      const out = await b.api("/v1/intervals/eeg/" + encodeURIComponent(patient), { method: "POST", body: body });
      const seizure = out.windows.filter((w) => w.label === SEIZURE).length;
      state.actions.push({ labelIds: out.label_ids, onset: body.onset, offset: body.offset, start: body.start });
      root.dataset.actions = String(state.actions.length);
      clearMarks();
      ui.last.replaceChildren(
        b.el("strong", { text: "Seizure " + seconds(body.onset) + " – " + seconds(body.offset) }),
        document.createTextNode(": " + seizure + " windows seizure, " + (out.windows.length - seizure) +
          " background, in one action (labels " + out.label_ids[0] + "–" + out.label_ids[out.label_ids.length - 1] + ")"),
      );
      const model = await waitApplied(out.update_seq);
      root.dataset.version = String(model.version);
      ui.last.append(document.createTextNode(" · learned in order, one update each: model v" + model.version));
      await load(body.start);
    }).catch(fail);
  }

  function undo() {
    state.chain = state.chain.then(async () => {
      const last = state.actions.pop();
      if (!last) {
        ui.last.textContent = "Nothing to undo: no interval from this page.";
        return;
      }
      let out;
      try {
        out = await b.api("/v1/retractions", { method: "POST", body: { label_ids: last.labelIds, retracted_by: user } });
      } catch (error) {
        state.actions.push(last);
        throw error;
      }
      root.dataset.actions = String(state.actions.length);
      root.dataset.version = String(out.version_after);
      ui.last.replaceChildren(
        b.el("strong", { text: "Undo: v" + out.version_before + " → v" + out.version_after }),
        document.createTextNode(" · seizure " + seconds(last.onset) + " – " + seconds(last.offset) + ": " +
          out.label_ids.length + " labels retracted in one rebuild (" + out.replayed + " labels replayed) · " + b.joules(out.joules)),
      );
      await load(last.start);
    }).catch(fail);
  }

  function page(direction) {
    const p = state.page;
    if (!p) return;
    const next = Math.min(Math.max(p.stream_start, p.start + direction * SPAN), Math.max(p.stream_start, p.stream_end));
    load(next).catch(fail);
  }

  function first() {
    if (state.page) load(state.page.stream_start).catch(fail);
  }

  function fail(error) {
    root.dataset.error = error.message || String(error);
    ui.last.replaceChildren(b.el("span", { class: "error", text: error.message || String(error) }));
  }

  document.addEventListener("keydown", (event) => {
    if (b.isTyping(event)) return;
    const key = event.key.length === 1 ? event.key.toLowerCase() : event.key;
    let handled = true;
    if (key === "PageDown") page(1);
    else if (key === "PageUp") page(-1);
    else if (key === "Home") first();
    else if (key === "ArrowRight") moveCursor(event.shiftKey ? 0.1 : 0.5);
    else if (key === "ArrowLeft") moveCursor(event.shiftKey ? -0.1 : -0.5);
    else if (key === "[") mark("onset");
    else if (key === "]") mark("offset");
    else if (key === "Enter") apply();
    else if (key === "Escape") clearMarks();
    else if (key === "u") undo();
    else handled = false;
    if (handled) event.preventDefault();
  });
  root.querySelector(".plot-tools").addEventListener("click", (event) => {
    const button = event.target.closest("button[data-action]");
    if (!button) return;
    ({
      first: first, back: () => page(-1), forward: () => page(1), onset: () => mark("onset"), offset: () => mark("offset"),
      apply: apply, clear: clearMarks, undo: undo,
    })[button.dataset.action]();
  });
  ui.scale.addEventListener("change", () => state.page && render());

  async function start() {
    if (state.start !== null) return load(state.start);
    const probe = await b.api(pagePath + "?start=0&duration=1");
    return load(probe.stream_start);
  }

  start().then(() => root.setAttribute("data-ready", "true")).catch(fail);
})();
