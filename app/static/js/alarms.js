/* Alarms not yet acknowledged, on every signed-in page: loaded once, then kept current by the live
   event stream; a clinician acknowledges one with its button (who and when are stored). */
(function () {
  "use strict";
  const b = window.biofo;
  const bar = document.getElementById("alarm-bar");
  if (!bar) return;
  const list = document.getElementById("alarm-list");
  const user = bar.dataset.user;
  const open = new Map(); // alarm id -> alarm
  const KINDS = { ventricular_run: "Ventricular run", seizure: "Seizure detected" };

  function render() {
    const alarms = Array.from(open.values()).sort((x, y) => y.id - x.id);
    list.replaceChildren(...alarms.map((a) => {
      const what = KINDS[a.kind] + " · " + a.patient_id + " · " + a.n_windows + (a.modality === "ecg" ? " V beats" : " windows") +
        " at " + b.clock(a.start_s);
      const link = a.modality === "ecg"
        ? "/patients/ecg/" + encodeURIComponent(a.patient_id) + "/strip?start=" + Math.max(0, a.start_s - 2).toFixed(1)
        : "/patients/eeg/" + encodeURIComponent(a.patient_id) + "?window=" + a.first_window_id;
      return b.el("li", { class: "alarm", "data-alarm-id": String(a.id) }, [
        b.el("strong", { text: what }),
        b.el("a", { href: link, text: "Show" }),
        b.el("button", { type: "button", class: "ack", "data-ack": String(a.id), text: "Acknowledge" }),
      ]);
    }));
    bar.hidden = alarms.length === 0;
    bar.dataset.count = String(alarms.length);
  }

  function take(alarm) {
    if (alarm.acknowledged_at === null) open.set(alarm.id, alarm);
    else open.delete(alarm.id);
    render();
  }

  list.addEventListener("click", (event) => {
    const button = event.target.closest("button[data-ack]");
    if (!button) return;
    button.disabled = true;
    b.api("/v1/alarms/" + button.dataset.ack + "/acknowledge", { method: "POST", body: { acknowledged_by: user } })
      .then(take)
      .catch((error) => { button.disabled = false; button.title = error.message; });
  });

  const load = () => b.api("/v1/alarms?acknowledged=false&limit=50").then((page) => {
    open.clear();
    page.alarms.forEach(take);
    render();
  });
  load().catch(() => {});
  b.live(null, null, { alarm: take, overflow: () => load().catch(() => {}) });
})();
