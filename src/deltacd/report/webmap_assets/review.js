// deltacd review mode (deltacd review RUN_DIR): click an object, answer it, the map is recoloured.
// Loaded after the web map's own script (map, layersControl, overlays); every call sends the server's token.
(() => {
  "use strict";
  const token = new URLSearchParams(location.search).get("token") || "";
  const query = "?token=" + encodeURIComponent(token);
  let state = null, current = null, outline = null, overlay = null, busy = false;

  function api(path, body) {
    const options = {headers: {"X-Deltacd-Token": token}, cache: "no-store"};
    if (body !== undefined) {
      options.method = "POST";
      options.headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(body);
    }
    return fetch(path, options).then(r => r.ok ? r.json() : r.text().then(t => { throw new Error(t || r.statusText); }));
  }

  const panel = L.control({position: "bottomleft"});
  panel.onAdd = () => {
    const div = L.DomUtil.create("div", "review-panel");
    div.id = "review";
    L.DomEvent.disableClickPropagation(div);
    L.DomEvent.disableScrollPropagation(div);
    return div;
  };
  panel.addTo(map);
  const root = document.getElementById("review");

  function esc(text) {
    return String(text).replace(/[&<>"]/g, c => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"}[c]));
  }

  function build() {
    const answers = state.classes.map(c =>
      `<button type="button" data-answer="${c.value}" title="key ${esc(c.key)}">${esc(c.label)} (${esc(c.key)})</button>`).join("");
    root.innerHTML = `<b>Review</b> <span id="review-counts"></span>
      <div id="review-object">click an object, or Next</div>
      <div class="review-buttons">${answers}<button type="button" data-answer="skip" title="key s">skip (s)</button>
      <button type="button" id="review-next" title="key space">next (space)</button></div>
      <div class="review-legend">${esc(state.legend)}</div><div id="review-status"></div>`;
    root.querySelectorAll("button[data-answer]").forEach(b => b.addEventListener("click", () => answer(b.dataset.answer)));
    document.getElementById("review-next").addEventListener("click", next);
  }

  function showCounts(counts) {
    const parts = state.classes.map(c => `${counts[String(c.value)] || 0} ${esc(c.label)}`).join(", ");
    document.getElementById("review-counts").innerHTML =
      `<span id="review-reviewed">${counts.reviewed}</span> reviewed (${parts}) of ${counts.objects} objects`;
    root.dataset.reviewed = counts.reviewed;
  }

  function status(text) { document.getElementById("review-status").textContent = text || ""; }

  function recolour(version) {
    root.dataset.version = version;
    const url = "api/overlay.png" + query + "&v=" + version;
    if (overlay) { overlay.setUrl(url); return; }
    overlay = L.imageOverlay(url, state.overlay.bounds, {opacity: 1, className: "review-overlay"}).addTo(map);
    layersControl.addOverlay(overlay, state.overlay.label);
  }

  function select(object, pan) {
    current = object;
    if (outline) { map.removeLayer(outline); outline = null; }
    const info = document.getElementById("review-object");
    if (!object) { info.textContent = "no object here"; return; }
    outline = L.geoJSON(object.geometry, {interactive: false, style: {color: "#ffd700", weight: 3, fill: false}}).addTo(map);
    const said = object.answer === null ? "not reviewed" : "answered: " + label(object.answer);
    const what = state.kind === "damage" ? "building" : "object";
    info.innerHTML = `${what} <span id="review-id">${object.object_id}</span> · ${esc(object.shown)} · ${esc(said)}`;
    if (pan && !map.getBounds().contains(outline.getBounds())) map.panTo(outline.getBounds().getCenter());
  }

  function label(value) {
    const found = state.classes.find(c => c.value === value);
    return found ? found.label : String(value);
  }

  function next() {
    if (busy) return;
    status("");
    api("api/next").then(r => select(r.object, true)).catch(e => status(e.message));
  }

  function answer(value) {
    if (busy) return;
    if (!current) { status("click an object first (or Next)"); return; }
    busy = true;
    root.classList.add("review-busy");
    const body = {object_id: current.object_id, answer: value === "skip" ? null : Number(value)};
    api("api/answer", body).then(r => {
      showCounts(r.counts);
      recolour(r.version);
      select(r.next, true);
      status(value === "skip" ? "skipped" : "saved");
    }).catch(e => status(e.message)).finally(() => { busy = false; root.classList.remove("review-busy"); });
  }

  map.on("click", e => {
    if (busy) return;
    api(`api/object?lat=${e.latlng.lat}&lng=${e.latlng.lng}`).then(r => select(r.object, false)).catch(e2 => status(e2.message));
  });

  document.addEventListener("keydown", e => {
    if (!state || e.ctrlKey || e.metaKey || e.altKey || (e.target && e.target.tagName === "INPUT" && e.target.type !== "range")) return;
    const key = e.key.toLowerCase();
    const chosen = state.classes.find(c => c.key === key || String(c.value) === key);
    if (chosen) answer(chosen.value);
    else if (key === "s") answer("skip");
    else if (key === " ") next();
    else return;
    e.preventDefault();
  });

  // in review mode a click picks an object: the run's own polygons show no popup, and start hidden (the overlay
  // shows the same before the first answers; the layer control brings them back)
  Object.values(overlays).forEach(layer => {
    if (!layer.eachLayer) return;
    layer.eachLayer(l => l.unbindPopup());
    map.removeLayer(layer);
  });

  api("api/state").then(s => {
    state = s;
    build();
    showCounts(s.counts);
    recolour(s.version);
    root.dataset.ready = "1";
  }).catch(e => { root.textContent = "review: " + e.message; });
})();
