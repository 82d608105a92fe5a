/* Rhythm strip (ECG): 10 s of both leads rebuilt from the stored beats, every beat's predicted class
   written above it (and the label in force when it differs); paged by keys, or following live. */
(function () {
  "use strict";
  const b = window.biofo;
  const root = document.getElementById("strip");
  if (!root) return;
  const patient = root.dataset.patient;
  const SPAN = 10;
  const $ = (id) => document.getElementById(id);
  const ui = { title: $("strip-title"), meta: $("strip-meta"), plots: $("strip-plots"), legend: $("strip-legend"), follow: $("strip-follow") };
  const params = new URLSearchParams(window.location.search);
  const state = { start: params.has("start") ? Math.max(0, Number(params.get("start")) || 0) : null, strip: null, follow: !params.has("start"), plots: [], loading: 0 };

  async function load(start) {
    const ticket = ++state.loading;
    const strip = await b.api("/v1/strips/ecg/" + encodeURIComponent(patient) + "?" + b.query({ start: start.toFixed(3), duration: SPAN }));
    if (ticket !== state.loading) return;
    state.strip = strip;
    state.start = strip.start;
    render();
  }

  function liveStart(strip) {
    return Math.max(0, Math.floor((strip.stream_end - SPAN + 1) * 10) / 10);
  }

  function render() {
    const s = state.strip;
    root.dataset.start = s.start.toFixed(1);
    root.dataset.beats = String(s.beats.length);
    ui.title.textContent = "Rhythm strip " + b.clock(s.start) + " – " + b.clock(s.start + s.duration);
    const counts = {};
    s.beats.forEach((beat) => { counts[beat.predicted] = (counts[beat.predicted] || 0) + 1; });
    ui.meta.textContent = s.beats.length + " beats · predicted " + Object.entries(counts).map(([k, n]) => n + " " + k).join(", ") +
      " · stream " + b.clock(s.stream_start) + " – " + b.clock(s.stream_end) +
      (s.beats_without_samples ? " · " + s.beats_without_samples + " beats without samples (retention: gaps)" : "");
    ui.follow.textContent = state.follow ? "following live" : "";
    state.plots.forEach((p) => p.destroy());
    state.plots = [];
    ui.plots.replaceChildren();
    const n = s.samples[0].length;
    const t = Array.from({ length: n }, (_, i) => s.start + i / s.fs);
    const height = Math.max(160, Math.min(250, Math.floor((window.innerHeight - 330) / 2)));
    s.samples.forEach((row, lead) => {
      const box = b.el("div", { class: "lead" }, [b.el("p", { class: "lead-title", text: s.channels[lead] })]);
      ui.plots.append(box);
      const marks = (u) => {
        const ctx = u.ctx;
        ctx.save();
        ctx.font = "700 " + 13 * devicePixelRatio + "px system-ui, sans-serif";
        ctx.textAlign = "center";
        s.beats.forEach((beat) => {
          const x = u.valToPos(beat.offset_s, "x", true);
          const shown = beat.label && beat.label !== beat.predicted ? beat.predicted + " [" + beat.label + "]" : beat.predicted;
          ctx.fillStyle = b.classColor(beat.predicted);
          ctx.fillRect(x - 0.75 * devicePixelRatio, u.bbox.top, 1.5 * devicePixelRatio, 6 * devicePixelRatio);
          ctx.fillText(shown, x, u.bbox.top + 20 * devicePixelRatio);
          if (beat.label === beat.predicted) ctx.fillRect(x - 5 * devicePixelRatio, u.bbox.top + 23 * devicePixelRatio, 10 * devicePixelRatio, 1.5 * devicePixelRatio);
        });
        ctx.restore();
      };
      const plot = new uPlot({
        width: b.widthOf(ui.plots), height: height, legend: { show: false },
        cursor: { drag: { x: false, y: false }, points: { show: false } },
        scales: { x: { time: false, range: [s.start, s.start + s.duration] },
          y: { range: (u, lo, hi) => [Math.min(-1.5, (lo === null ? 0 : lo) - 0.2), Math.max(2.0, (hi === null ? 0 : hi) + 0.6)] } },
        axes: [
          { label: "seconds since the stream began", labelSize: 18, size: 34, stroke: "#111827", grid: { stroke: "#f0c9c9" } },
          { label: s.channels[lead] + " (mV)", labelSize: 18, size: 46, stroke: "#111827", grid: { stroke: "#f0c9c9" } },
        ],
        series: [{}, { stroke: "#111827", width: 1.2, points: { show: false }, spanGaps: false }],
        hooks: { draw: [marks] },
      }, [t, row], box);
      plot.over.addEventListener("click", (event) => {
        const at = plot.posToVal(event.offsetX, "x");
        const near = s.beats.reduce((best, beat) => (!best || Math.abs(beat.offset_s - at) < Math.abs(best.offset_s - at) ? beat : best), null);
        if (near && Math.abs(near.offset_s - at) < 0.3) window.location.assign("/patients/ecg/" + encodeURIComponent(patient) + "?window=" + near.id);
      });
      state.plots.push(plot);
    });
    ui.legend.replaceChildren(...["N", "S", "V", "F", "Q"].map((c) => b.el("span", { class: "chip cls-" + c, text: c })));
  }

  function page(direction) {
    if (!state.strip) return;
    state.follow = false;
    const lo = Math.max(0, state.strip.stream_start - 1);
    load(Math.max(lo, state.start + direction * SPAN)).catch(fail);
  }

  function first() {
    state.follow = false;
    load(Math.max(0, state.strip ? state.strip.stream_start - 1 : 0)).catch(fail);
  }

  async function followLive() {
    state.follow = true;
    const probe = state.strip || await b.api("/v1/strips/ecg/" + encodeURIComponent(patient) + "?start=0&duration=1");
    await load(liveStart(probe));
    if (state.strip && liveStart(state.strip) > state.start) await load(liveStart(state.strip));
  }

  function fail(error) {
    ui.meta.replaceChildren(b.el("span", { class: "error", text: error.message || String(error) }));
  }

  document.addEventListener("keydown", (event) => {
    if (b.isTyping(event)) return;
    let handled = true;
    if (event.key === "ArrowRight" || event.key === "PageDown") page(1);
    else if (event.key === "ArrowLeft" || event.key === "PageUp") page(-1);
    else if (event.key === "Home") first();
    else if (event.key === "End" || event.key.toLowerCase() === "l") followLive().catch(fail);
    else handled = false;
    if (handled) event.preventDefault();
  });
  root.querySelector(".plot-tools").addEventListener("click", (event) => {
    const button = event.target.closest("button[data-action]");
    if (!button) return;
    ({ first: first, back: () => page(-1), forward: () => page(1), live: () => followLive().catch(fail) })[button.dataset.action]();
  });

  // Following live: each new segment's beats move the strip to the newest 10 s.
  const followSoon = b.throttle(() => {
    if (!state.follow || !state.strip) return;
    b.api("/v1/strips/ecg/" + encodeURIComponent(patient) + "?start=0&duration=1")
      .then((probe) => load(liveStart(probe))).catch(fail);
  }, 1000);
  b.live("ecg", patient, { windows: followSoon, model: () => {} });

  (state.follow ? followLive() : load(state.start))
    .then(() => root.setAttribute("data-ready", "true"))
    .catch(fail);
})();
