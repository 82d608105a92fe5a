/* The labelling queue: one window at a time (ECG beat or EEG window), labelled by key or button;
   each label is posted to /v1/labels and the page follows the model update it triggers. */
(function () {
  "use strict";
  const b = window.biofo;
  const root = document.getElementById("labeller");
  if (!root) return;

  const modality = root.dataset.modality;
  const patient = root.dataset.patient;
  const user = root.dataset.user;
  const classes = JSON.parse(root.dataset.classes);
  const keyToClass = {};
  classes.forEach((c) => { keyToClass[c.key] = c.name; });
  const SEIZURE = "seizure";
  const modelPath = "/v1/models/" + modality + "/" + encodeURIComponent(patient);

  const $ = (id) => document.getElementById(id);
  const ui = {
    list: $("queue-list"),
    count: $("queue-count"),
    order: $("queue-order"),
    title: $("window-title"),
    meta: $("window-meta"),
    probs: $("window-probs"),
    plots: $("plots"),
    trace: $("prob-trace"),
    scale: $("eeg-scale"),
    version: $("model-version"),
    accuracy: $("model-accuracy"),
    labels: $("model-labels"),
    updates: $("model-updates"),
    rule: $("model-rule"),
    trend: $("trend"),
    lastUpdate: $("last-update"),
    activity: $("activity"),
  };

  const state = {
    items: [],
    index: -1,
    detail: null,
    loading: 0,
    queueLoads: 0,
    undo: [], // labels posted from this page, newest last
    chain: Promise.resolve(), // label and undo requests go out one at a time, in key order
    newestShown: 0,
    timeline: null, // EEG: all windows in time order, for the probability trace
  };
  // The visible span is kept on the plots' element, where a test (or a screen reader's user) can read it.
  const zoom = new b.ZoomGroup((lo, hi) => { ui.plots.dataset.span = (hi - lo).toFixed(4); });
  let tracePlot = null;
  let trendPlot = null;

  function log(text, isError) {
    const item = b.el("li", { text: new Date().toLocaleTimeString() + "  " + text, class: isError ? "error" : "" });
    ui.activity.prepend(item);
    while (ui.activity.children.length > 30) ui.activity.lastChild.remove();
  }

  function fail(error) {
    log(error.message || String(error), true);
  }

  // Queue ---------------------------------------------------------------------------------------

  async function loadQueue(startId) {
    // Re-read the queue only once this page's labels are stored (a beat just labelled must not
    // come back), and let only the newest read win when the order changes twice quickly.
    const ticket = ++state.queueLoads;
    const order = ui.order.value;
    await state.chain;
    const page = await b.api("/v1/windows?" + b.query({
      patient_id: patient, modality: modality, labeled: false, order: order, limit: 200,
    }));
    if (ticket !== state.queueLoads) return;
    state.items = page.windows;
    let start = 0;
    if (startId) {
      start = state.items.findIndex((w) => w.id === startId);
      if (start < 0) {
        const one = await b.api("/v1/windows/" + startId);
        state.items.unshift(one);
        start = 0;
      }
    }
    renderQueue();
    if (state.items.length) await go(start);
    else showEmpty();
    if (ticket === state.queueLoads) root.dataset.queueOrder = order;
  }

  function renderQueue() {
    ui.list.replaceChildren();
    state.items.forEach((w, i) => {
      const top = w.predicted;
      const text = [
        b.el("span", { class: "q-time", text: b.clock(w.offset_s) }),
        w.label
          ? b.el("span", { class: "q-label chip cls-" + w.label, text: w.label })
          : b.el("span", { class: "q-margin muted", text: "m " + w.margin.toFixed(2) }),
        b.el("span", { class: "q-pred", text: "pred " + top + " " + (100 * w.probabilities[top]).toFixed(0) + " %" }),
      ];
      const button = b.el("button", { type: "button", "data-index": String(i), class: w.label ? "done" : "" }, text);
      if (i === state.index) button.setAttribute("aria-current", "true");
      ui.list.append(b.el("li", {}, [button]));
    });
    const open = state.items.filter((w) => !w.label).length;
    ui.count.textContent = open + " to label · " + (state.items.length - open) + " labelled here";
    const current = ui.list.querySelector('[aria-current="true"]');
    if (current) current.scrollIntoView({ block: "nearest" });
  }

  function showEmpty() {
    zoom.clear();
    state.detail = null;
    ui.title.textContent = "Nothing left to label";
    ui.meta.textContent = "Every " + (modality === "ecg" ? "beat" : "window") + " of this patient has a label.";
    ui.probs.replaceChildren();
  }

  async function go(i) {
    if (i < 0 || i >= state.items.length) return;
    state.index = i;
    renderQueue();
    const ticket = ++state.loading;
    const detail = await b.api("/v1/windows/" + state.items[i].id);
    if (ticket !== state.loading) return; // the clinician has moved on
    state.detail = detail;
    renderDetail();
  }

  function move(step) {
    const next = state.index + step;
    if (next >= 0 && next < state.items.length) go(next).catch(fail);
  }

  async function advance() {
    const n = state.items.length;
    for (let k = 1; k <= n; k++) {
      const i = (state.index + k) % n;
      if (!state.items[i].label) return go(i);
    }
    // Everything loaded is labelled: fetch windows still unlabelled (new beats may have arrived).
    const page = await b.api("/v1/windows?" + b.query({
      patient_id: patient, modality: modality, labeled: false, order: ui.order.value, limit: 200,
    }));
    const known = new Set(state.items.map((w) => w.id));
    const fresh = page.windows.filter((w) => !known.has(w.id));
    if (!fresh.length) return showEmpty();
    state.items.push(...fresh);
    return go(n);
  }

  // Waveforms -----------------------------------------------------------------------------------

  function renderDetail() {
    const d = state.detail;
    root.dataset.windowId = String(d.id);
    root.dataset.offset = String(d.offset_s);
    const what = modality === "ecg" ? "Beat" : "Window";
    ui.title.textContent = what + " at " + b.clock(d.offset_s) + "  ·  #" + d.id;
    const labelText = d.label ? "label " + d.label + " by " + d.labeled_by : "not labelled";
    ui.meta.textContent = "Predicted " + d.predicted + " by model v" + d.model_version + " · margin " +
      d.margin.toFixed(3) + " · " + labelText;
    ui.probs.replaceChildren(...Object.entries(d.probabilities).sort((x, y) => y[1] - x[1]).map(([name, p]) =>
      b.el("span", { class: "prob" + (name === d.predicted ? " prob-top" : ""), text: name + " " + (100 * p).toFixed(1) + " %" })));
    zoom.clear();
    ui.plots.replaceChildren();
    if (d.samples_pruned_at !== null) {
      ui.plots.append(b.el("p", { class: "muted", id: "samples-pruned",
        text: "Samples not kept: retention drops the samples of unlabelled windows after a set time. " +
          "The prediction and the features the model read are kept; a label still teaches the model." }));
    } else if (modality === "ecg") plotEcg(d);
    else plotEeg(d);
  }

  function leadOptions(name, height, marker) {
    return {
      width: b.widthOf(ui.plots),
      height: height,
      legend: { show: false },
      cursor: { drag: { x: true, y: false }, points: { show: false } },
      scales: {
        x: { time: false },
        // A near-fixed amplitude scale (at least -1.5..2 mV) keeps beats comparable from one to the next.
        y: { range: (u, lo, hi) => [Math.min(-1.5, lo - 0.2), Math.max(2.0, hi + 0.2)] },
      },
      axes: [
        { label: "seconds from R peak", labelSize: 18, size: 34, stroke: "#111827", grid: { stroke: "#e3e7ee" } },
        { label: name + " (mV)", labelSize: 18, size: 46, stroke: "#111827", grid: { stroke: "#e3e7ee" } },
      ],
      series: [{}, { label: name, stroke: "#0b3d91", width: 1.5 }],
      hooks: Object.assign(zoom.hooks(), { draw: [(u) => b.markLine(u, marker, "#b71c1c", "R")] }),
    };
  }

  function plotEcg(d) {
    const fs = d.samples_fs;
    const n = d.samples[0].length;
    const r = d.marker === null ? Math.floor(n / 2) : d.marker;
    const t = Array.from({ length: n }, (_, i) => (i - r) / fs);
    zoom.setFull(t[0], t[n - 1]);
    const height = Math.max(170, Math.min(260, Math.floor((window.innerHeight - 350) / 2)));
    d.samples.forEach((row, k) => {
      const box = b.el("div", { class: "lead" }, [b.el("p", { class: "lead-title", text: d.sample_channels[k] })]);
      ui.plots.append(box);
      zoom.add(new uPlot(leadOptions(d.sample_channels[k], height, 0), [t, row], box));
    });
  }

  function plotEeg(d) {
    const fs = d.samples_fs;
    const n = d.samples[0].length;
    const t = Array.from({ length: n }, (_, i) => d.offset_s + i / fs);
    const names = d.sample_channels;
    const stack = b.eegStack(names, d.samples, Number(ui.scale.value));
    const data = [t, ...stack.rows];
    zoom.setFull(t[0], t[n - 1]);
    const height = Math.max(260, Math.min(16 * names.length + 60, window.innerHeight - 460));
    const opts = {
      width: b.widthOf(ui.plots),
      height: height,
      legend: { show: false },
      cursor: { drag: { x: true, y: false }, points: { show: false } },
      scales: { x: { time: false }, y: { range: stack.range } },
      axes: [
        { label: "seconds since the stream began", labelSize: 18, size: 34, stroke: "#111827", grid: { stroke: "#e3e7ee" } },
        stack.axis,
      ],
      series: [{}, ...stack.series],
      hooks: zoom.hooks(),
    };
    zoom.add(new uPlot(opts, data, ui.plots));
    plotTrace();
  }

  async function refreshTimeline() {
    if (modality !== "eeg") return;
    state.timeline = await b.allWindows(modality, patient);
    plotTrace();
  }

  function plotTrace() {
    if (modality !== "eeg" || !state.timeline || !state.detail) return;
    const windows = state.timeline;
    const d = state.detail;
    const duration = d.samples.length ? d.samples[0].length / d.samples_fs : 0;  // no samples kept: no shading
    const x = windows.map((w) => w.offset_s);
    const p = windows.map((w) => w.probabilities[SEIZURE]);
    const labelledSeizure = windows.map((w) => (w.label === SEIZURE ? 1 : null));
    const labelledBackground = windows.map((w) => (w.label && w.label !== SEIZURE ? 0 : null));
    const onsets = b.labelledOnsets(windows, SEIZURE);
    const shade = (u) => {
      const ctx = u.ctx;
      const x0 = u.valToPos(d.offset_s, "x", true);
      const x1 = u.valToPos(d.offset_s + duration, "x", true);
      ctx.save();
      ctx.fillStyle = "rgba(245, 158, 11, 0.28)";
      ctx.fillRect(x0, u.bbox.top, Math.max(2, x1 - x0), u.bbox.height);
      ctx.restore();
      onsets.forEach((o) => b.markLine(u, o, "#b71c1c", "onset", true));
    };
    const opts = {
      width: b.widthOf(ui.trace),
      height: 110,
      legend: { show: false },
      cursor: { drag: { x: true, y: false }, points: { show: false } },
      scales: { x: { time: false }, y: { range: [-0.08, 1.08] } },
      axes: [
        { stroke: "#111827", size: 30, grid: { stroke: "#e3e7ee" } },
        { stroke: "#111827", size: 46, splits: () => [0, 0.5, 1], values: (u, s) => s.map((v) => v.toFixed(1)), grid: { stroke: "#e3e7ee" } },
      ],
      series: [
        {},
        { label: "P(seizure)", stroke: "#0b3d91", width: 1.5, points: { show: false } },
        { label: "labelled seizure", stroke: "#b71c1c", fill: "#b71c1c", paths: () => null, points: { show: true, size: 7, fill: "#b71c1c" } },
        { label: "labelled background", stroke: "#1f4e79", paths: () => null, points: { show: true, size: 7, fill: "#ffffff" } },
      ],
      hooks: { drawClear: [shade] },
    };
    if (tracePlot) tracePlot.destroy();
    ui.trace.replaceChildren();
    tracePlot = new uPlot(opts, [x, p, labelledSeizure, labelledBackground], ui.trace);
  }

  // Model panel ---------------------------------------------------------------------------------

  async function refreshModel() {
    const [model, trend] = await Promise.all([b.api(modelPath), b.api(modelPath + "/prequential?limit=500")]);
    ui.version.textContent = "v" + model.version;
    ui.version.dataset.version = String(model.version);
    const pq = model.prequential;
    ui.accuracy.textContent = b.percent(pq.accuracy);
    ui.accuracy.title = "n = " + pq.n + " labelled windows";
    ui.labels.textContent = String(pq.n);
    ui.updates.textContent = String(model.updates_applied) + (model.labels_pending ? " (+" + model.labels_pending + " queued)" : "");
    ui.rule.textContent = "Rule " + model.rule + " · forked from " + model.base;
    plotTrend(trend.points);
  }

  function plotTrend(points) {
    const x = points.map((pt) => pt.n);
    const y = points.map((pt) => pt.accuracy);
    if (trendPlot) trendPlot.destroy();
    ui.trend.replaceChildren();
    if (!points.length) {
      ui.trend.append(b.el("p", { class: "muted small", text: "No labels yet." }));
      trendPlot = null;
      return;
    }
    trendPlot = new uPlot({
      width: b.widthOf(ui.trend),
      height: 110,
      legend: { show: false },
      cursor: { show: false },
      scales: { x: { time: false, range: (u, lo, hi) => [Math.max(0, lo - 1), hi + 1] }, y: { range: [0, 1] } },
      axes: [
        { stroke: "#111827", size: 26, font: "10px system-ui, sans-serif", grid: { stroke: "#eef1f5" } },
        { stroke: "#111827", size: 44, font: "10px system-ui, sans-serif", splits: () => [0, 0.5, 1],
          values: (u, s) => s.map((v) => (100 * v).toFixed(0) + "%"), grid: { stroke: "#eef1f5" } },
      ],
      series: [{}, { stroke: "#0b3d91", width: 2, points: { show: points.length < 60, size: 4 } }],
    }, [x, y], ui.trend);
  }

  /* Wait until the worker has applied the label, then show what the update did. */
  async function followUpdate(labelId) {
    const deadline = Date.now() + 30000;
    let label = await b.api("/v1/labels/" + labelId);
    while (!label.applied && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 120));
      label = await b.api("/v1/labels/" + labelId);
    }
    if (!label.applied) {
      log("Label " + labelId + " is stored; its update is still queued.");
      return;
    }
    if (labelId > state.newestShown) {
      state.newestShown = labelId;
      if (label.update) {
        const u = label.update;
        ui.lastUpdate.replaceChildren(
          b.el("strong", { text: "v" + u.version_before + " → v" + u.version_after }),
          document.createTextNode(" after " + label.label + " on #" + label.window_id + " · "),
          b.el("strong", { text: b.joules(u.joules) }),
          document.createTextNode(" (" + u.energy_source + ") · " + (1000 * u.duration_s).toFixed(1) + " ms"),
        );
      }
    }
    if (label.update) {
      log("Update v" + label.update.version_before + " → v" + label.update.version_after + ", " +
        b.joules(label.update.joules) + " (" + label.update.energy_source + ")");
    }
    await refreshModel();
  }

  // Labelling and undo ----------------------------------------------------------------------------

  function label(name) {
    const item = state.items[state.index];
    if (!item) return;
    item.label = name;
    renderQueue();
    const windowId = item.id;
    state.chain = state.chain.then(async () => {
      const out = await b.api("/v1/labels", {
        method: "POST", body: { labels: [{ window_id: windowId, label: name, labeled_by: user }] },
      });
      const labelId = out.label_ids[0];
      state.undo.push({ labelId: labelId, windowId: windowId, name: name });
      log("Label " + name + " on #" + windowId + " stored (label " + labelId + ")");
      followUpdate(labelId).then(refreshTimeline).catch(fail);
    }).catch((error) => {
      item.label = null;
      renderQueue();
      fail(error);
    });
    advance().catch(fail);
  }

  function undo() {
    state.chain = state.chain.then(async () => {
      const last = state.undo.pop();
      if (!last) {
        log("Nothing to undo: no label from this page.");
        return;
      }
      const out = await b.api("/v1/labels/" + last.labelId + "/undo", { method: "POST", body: { retracted_by: user } });
      const i = state.items.findIndex((w) => w.id === last.windowId);
      if (i >= 0) state.items[i].label = out.window_label;
      const rebuilt = out.rebuilt_from_version === null
        ? "the label had not been learned yet, model unchanged"
        : "rebuilt from checkpoint v" + out.rebuilt_from_version + " + " + out.replayed + " labels replayed";
      ui.lastUpdate.replaceChildren(
        b.el("strong", { text: "Undo: v" + out.version_before + " → v" + out.version_after }),
        document.createTextNode(" · label " + last.name + " on #" + last.windowId + " retracted; " + rebuilt + " · "),
        b.el("strong", { text: b.joules(out.joules) }),
        document.createTextNode(out.energy_source ? " (" + out.energy_source + ")" : ""),
      );
      log("Undid label " + last.name + " on #" + last.windowId + " → " + (out.window_label || "unlabelled"));
      await refreshModel();
      await refreshTimeline();
      if (i >= 0) await go(i);
    }).catch(fail);
  }

  // Input -----------------------------------------------------------------------------------------

  document.addEventListener("keydown", (event) => {
    if (b.isTyping(event)) return;
    const key = event.key.length === 1 ? event.key.toLowerCase() : event.key;
    let handled = true;
    if (zoom.key(event)) handled = true;
    else if (!event.shiftKey && keyToClass[key]) label(keyToClass[key]);
    else if (key === "j" || key === "ArrowRight" || key === "ArrowDown") move(1);
    else if (key === "k" || key === "ArrowLeft" || key === "ArrowUp") move(-1);
    else if (key === "u") undo();
    else handled = false;
    if (handled) event.preventDefault();
  });

  root.addEventListener("click", (event) => {
    const button = event.target.closest("button");
    if (!button) return;
    if (button.dataset.label) label(button.dataset.label);
    else if (button.dataset.index !== undefined) go(Number(button.dataset.index)).catch(fail);
    else if (button.dataset.action === "next") move(1);
    else if (button.dataset.action === "prev") move(-1);
    else if (button.dataset.action === "undo") undo();
  });
  zoom.bindToolbar(root.querySelector(".plot-tools"));
  ui.order.addEventListener("change", () => loadQueue().catch(fail));
  if (ui.scale) ui.scale.addEventListener("change", () => state.detail && renderDetail());

  let resizeTimer = null;
  window.addEventListener("resize", () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(() => {
      if (state.detail) renderDetail();
      refreshModel().catch(fail);
    }, 150);
  });

  // Live ------------------------------------------------------------------------------------------
  // New beats or windows join the end of the queue and the model panel follows every new version,
  // without a reload.

  const refreshModelSoon = b.throttle(() => refreshModel().catch(fail), 1000);
  const refreshTimelineSoon = b.throttle(() => refreshTimeline().catch(fail), 2000);
  const liveStatus = $("live-status");
  let liveCount = 0;

  function margin(probabilities) {
    const top = Object.values(probabilities).sort((x, y) => y - x);
    return top[0] - (top.length > 1 ? top[1] : 0);
  }

  b.live(modality, patient, {
    windows: (event) => {
      const known = new Set(state.items.map((w) => w.id));
      const fresh = event.windows.filter((w) => !known.has(w.id)).map((w) => Object.assign({}, w, {
        patient_id: patient, modality: modality, margin: margin(w.probabilities), label: null, labeled_by: null,
      }));
      liveCount += event.windows.length;
      const newest = event.windows[event.windows.length - 1];
      liveStatus.dataset.liveWindows = String(liveCount);
      liveStatus.textContent = "Live: " + liveCount + " new " + (modality === "ecg" ? "beats" : "windows") +
        " since this page opened · newest " + b.clock(newest.offset_s) + " predicted " + newest.predicted +
        " by v" + newest.model_version;
      if (!fresh.length) return;
      state.items.push(...fresh);
      if (!state.detail) go(state.items.length - fresh.length).catch(fail);
      else renderQueue();
      refreshTimelineSoon();
    },
    model: () => refreshModelSoon(),
    overflow: () => { refreshModelSoon(); refreshTimelineSoon(); },
  });

  const startId = Number(new URLSearchParams(window.location.search).get("window")) || null;
  Promise.all([loadQueue(startId), refreshModel(), refreshTimeline()])
    .then(() => root.setAttribute("data-ready", "true"))
    .catch(fail);
})();
