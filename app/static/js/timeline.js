/* Timeline of one patient: the prediction made for each window when it arrived against the label in
   force, over time; disagreements are ringed in red and listed below. */
(function () {
  "use strict";
  const b = window.biofo;
  const root = document.getElementById("timeline");
  if (!root) return;

  const modality = root.dataset.modality;
  const patient = root.dataset.patient;
  const classes = JSON.parse(root.dataset.classes).map((c) => c.name);
  const SEIZURE = "seizure";
  const chartBox = document.getElementById("timeline-chart");
  const zoom = new b.ZoomGroup();
  let windows = [];

  function summary() {
    const labelled = windows.filter((w) => w.label);
    const disagree = labelled.filter((w) => w.label !== w.predicted);
    const agreement = labelled.length ? 1 - disagree.length / labelled.length : null;
    document.getElementById("timeline-summary").textContent =
      windows.length + " " + (modality === "ecg" ? "beats" : "windows") + " · " + labelled.length +
      " labelled · agreement with the prediction " + b.percent(agreement) + " · " + disagree.length + " disagreements";
    return disagree;
  }

  function legend() {
    const items = modality === "ecg"
      ? [["pred", "prediction (upper row of each class)"], ["label", "label (lower row)"], ["disagree", "disagreement"]]
      : [["prob", "P(seizure)"], ["label", "label (seizure = 1, background = 0)"], ["disagree", "disagreement"], ["onset", "labelled onset"]];
    document.getElementById("timeline-legend").replaceChildren(...items.map(([kind, text]) =>
      b.el("span", {}, [b.el("span", { class: "swatch " + kind, "aria-hidden": "true" }), document.createTextNode(text)])));
  }

  function table(disagree) {
    document.getElementById("disagreement-count").textContent = "(" + disagree.length + ")";
    const rows = disagree.map((w) => b.el("tr", {}, [
      b.el("td", { text: b.clock(w.offset_s) }),
      b.el("td", {}, [b.el("span", { class: "chip cls-" + w.predicted, text: w.predicted }),
        document.createTextNode(" " + (100 * w.probabilities[w.predicted]).toFixed(0) + " %")]),
      b.el("td", {}, [b.el("span", { class: "chip cls-" + w.label, text: w.label })]),
      b.el("td", { text: w.labeled_by || "" }),
      b.el("td", {}, [b.el("a", {
        href: "/patients/" + modality + "/" + encodeURIComponent(patient) + "?window=" + w.id, text: "Open #" + w.id,
      })]),
    ]));
    if (!rows.length) rows.push(b.el("tr", {}, [b.el("td", { colspan: "5", class: "muted", text: "None." })]));
    document.getElementById("disagreement-rows").replaceChildren(...rows);
  }

  function scatter(label, color, size, fill) {
    return { label: label, stroke: color, width: 2, paths: () => null, points: { show: true, size: size, fill: fill || color, stroke: color, width: 2 } };
  }

  function chart() {
    zoom.clear();
    chartBox.replaceChildren();
    if (!windows.length) return;
    const x = windows.map((w) => w.offset_s);
    const isWrong = (w) => w.label && w.label !== w.predicted;
    let data;
    let series;
    let yScale;
    let yAxis;
    let draw = null;
    if (modality === "ecg") {
      const row = (name) => classes.indexOf(name);
      data = [
        x,
        windows.map((w) => row(w.predicted) + 0.18),
        windows.map((w) => (w.label ? row(w.label) - 0.18 : null)),
        windows.map((w) => (isWrong(w) ? row(w.label) - 0.18 : null)),
      ];
      series = [{}, scatter("predicted", "#9aa5b4", 5), scatter("label", "#111827", 6), scatter("disagreement", "#b71c1c", 13, "rgba(0,0,0,0)")];
      yScale = { range: [-0.6, classes.length - 0.4] };
      yAxis = { splits: () => classes.map((_, i) => i), values: (u, s) => s.map((v) => classes[v] || ""), size: 40 };
      // A red stroke joins each wrong prediction to its label.
      draw = (u) => {
        const ctx = u.ctx;
        ctx.save();
        ctx.strokeStyle = "#b71c1c";
        ctx.lineWidth = 2 * devicePixelRatio;
        windows.forEach((w, i) => {
          if (!isWrong(w) || x[i] < u.scales.x.min || x[i] > u.scales.x.max) return;
          const px = u.valToPos(x[i], "x", true);
          ctx.beginPath();
          ctx.moveTo(px, u.valToPos(data[1][i], "y", true));
          ctx.lineTo(px, u.valToPos(data[3][i], "y", true));
          ctx.stroke();
        });
        ctx.restore();
      };
    } else {
      const onsets = b.labelledOnsets(windows, SEIZURE);
      data = [
        x,
        windows.map((w) => w.probabilities[SEIZURE]),
        windows.map((w) => (w.label ? (w.label === SEIZURE ? 1 : 0) : null)),
        windows.map((w) => (isWrong(w) ? (w.label === SEIZURE ? 1 : 0) : null)),
      ];
      series = [{}, { label: "P(seizure)", stroke: "#0b3d91", width: 1.5, points: { show: false } },
        scatter("label", "#111827", 6), scatter("disagreement", "#b71c1c", 13, "rgba(0,0,0,0)")];
      yScale = { range: [-0.1, 1.1] };
      yAxis = { splits: () => [0, 0.5, 1], values: (u, s) => s.map((v) => v.toFixed(1)), size: 40 };
      draw = (u) => onsets.forEach((o) => b.markLine(u, o, "#b71c1c", "onset", true));
    }
    zoom.setFull(x[0], x[x.length - 1] > x[0] ? x[x.length - 1] : x[0] + 1);
    const hooks = zoom.hooks();
    if (draw) hooks.draw = [draw];
    zoom.add(new uPlot({
      width: b.widthOf(chartBox),
      height: Math.max(260, Math.min(420, window.innerHeight - 330)),
      legend: { show: false },
      cursor: { drag: { x: true, y: false }, points: { show: false } },
      scales: { x: { time: false }, y: yScale },
      axes: [
        { label: "seconds since the stream began", labelSize: 18, size: 34, stroke: "#111827", grid: { stroke: "#e3e7ee" } },
        Object.assign({ stroke: "#111827", grid: { stroke: "#e3e7ee" } }, yAxis),
      ],
      series: series,
      hooks: hooks,
    }, data, chartBox));
  }

  async function load() {
    windows = await b.allWindows(modality, patient);
    const disagree = summary();
    legend();
    chart();
    table(disagree);
    root.setAttribute("data-ready", "true");
  }

  document.addEventListener("keydown", (event) => {
    if (!b.isTyping(event) && zoom.key(event)) event.preventDefault();
  });
  zoom.bindToolbar(root.querySelector(".plot-tools"));
  let resizeTimer = null;
  window.addEventListener("resize", () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(chart, 150);
  });
  load().catch((error) => {
    document.getElementById("timeline-summary").textContent = error.message;
  });
})();
