// deltacd web map (deltacd.report.webmap): the page's data is window.DELTACD (data.js), written by Python.
// Globals used by review.js (review mode): map, layersControl, overlays.
const D = window.DELTACD;
const T = D.text;
const map = L.map("map", {zoomSnap: 0.25});
const overlays = {};
const images = {};
const vectors = {};
const query = document.currentScript && document.currentScript.dataset.query === "1" ? location.search : "";

// panes, bottom to top: before image, after image (the swipe clips this pane), other rasters, then Leaflet's
// overlay pane (polygons, z 400), outlines of zones and the AOI (z 450) above the polygons
for (const [name, z] of [["before", 210], ["after", 220], ["rasters", 230], ["outlines", 450]]) {
  map.createPane(name).style.zIndex = z;
}
map.getPane("outlines").style.pointerEvents = "none";

for (const image of D.images) {
  const layer = L.imageOverlay(image.file + query, image.bounds,
    {opacity: image.opacity, pane: image.pane, className: image.pixelated ? "pixelated" : "", interactive: false});
  images[image.name] = layer;
  overlays[esc(image.label)] = layer;  // the layer control writes its names as HTML
  if (image.visible) layer.addTo(map);
}

function esc(text) {
  return String(text).replace(/[&<>"]/g, c => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"}[c]));
}

function number(value, digits) {
  return Number(value).toLocaleString(D.lang, {minimumFractionDigits: digits, maximumFractionDigits: digits});
}

function format(value, kind) {
  if (value === null || value === undefined || value === "") return null;
  switch (kind) {
    case "int": return number(value, 0);
    case "num1": return number(value, 1);
    case "num2": return number(value, 2);
    case "num3": return number(value, 3);
    case "pct": return number(100 * value, 1) + "\u00a0%";
    case "bool": return value === true || value === "True" || value === 1 ? T.yes : T.no;
    default: return esc(value);
  }
}

function popup(layer, properties) {
  const rows = [];
  for (const field of layer.popup) {
    const spec = D.fields[field] || {label: field, format: "text"};
    const shown = format(properties[field], spec.format);
    if (shown === null) continue;
    rows.push(`<tr><th>${esc(spec.label)} <small>${esc(field)}</small></th><td>${shown}</td></tr>`);
  }
  return `<div class="popup-title">${esc(layer.label)}</div><table class="popup">${rows.join("")}</table>`;
}

function style(layer) {
  return f => {
    const value = f.properties[layer.field];
    const colour = layer.colours[String(value)] || layer.colour;
    const s = {color: layer.outline || colour, weight: layer.weight, opacity: 0.9, fillColor: colour,
               fillOpacity: layer.fill, fill: layer.fill > 0, smoothFactor: layer.smooth};
    if (layer.dash && f.properties[layer.dash.field] === layer.dash.value) s.dashArray = "4 3";
    return s;
  };
}

// a layer's features come in columns (data.js is a third the size): made GeoJSON here
function featureCollection(layer) {
  const names = Object.keys(layer.features.columns);
  const features = layer.features.geometries.map((geometry, i) => {
    const properties = {};
    for (const name of names) properties[name] = layer.features.columns[name][i];
    return {type: "Feature", properties, geometry};
  });
  return {type: "FeatureCollection", features};
}

for (const layer of D.layers) {
  layer.features = featureCollection(layer);
  const options = {style: style(layer), pane: layer.pane || "overlayPane", interactive: layer.interactive !== false};
  if (layer.canvas) options.renderer = L.canvas({padding: 0.3, pane: options.pane});
  if (layer.interactive !== false) options.onEachFeature = (f, l) => l.bindPopup(() => popup(layer, f.properties), {maxWidth: 420});
  if (layer.names) {
    const permanent = layer.features.features.length <= D.permanentNames;
    const each = options.onEachFeature;
    options.onEachFeature = (f, l) => {
      if (each) each(f, l);
      const name = f.properties[layer.names];
      if (name !== null && name !== undefined) {
        l.bindTooltip(esc(name), {permanent, direction: "center", className: "zone-name", interactive: false});
      }
    };
  }
  const geojson = L.geoJSON(layer.features, options);
  vectors[layer.name] = geojson;
  overlays[esc(layer.label)] = geojson;
  if (layer.visible) geojson.addTo(map);
}

const layersControl = L.control.layers(null, overlays, {collapsed: false}).addTo(map);
L.control.scale({metric: true, imperial: false}).addTo(map);

// the legend: a section per layer (or group of layers sharing colours), shown while one of its layers is
const legend = L.control({position: "bottomright"});
legend.onAdd = () => {
  const div = L.DomUtil.create("div", "legend");
  div.id = "legend";
  const sections = D.legend.map((s, i) => {
    const entries = s.entries.map(e =>
      `<div class="entry"><i style="background:${e.colour};border-color:${e.edge || "#333"}${e.dashed ? ";border-style:dashed" : ""}"></i>${esc(e.label)}</div>`).join("");
    return `<div class="section" data-section="${i}"><b>${esc(s.title)}</b>${s.note ? `<div class="note">${esc(s.note)}</div>` : ""}${entries}</div>`;
  }).join("");
  div.innerHTML = `<div class="legend-title">${esc(D.title)}</div>${sections}`;
  L.DomEvent.disableClickPropagation(div);
  L.DomEvent.disableScrollPropagation(div);
  return div;
};
legend.addTo(map);
function updateLegend() {
  D.legend.forEach((s, i) => {
    const shown = s.layers.some(name => (vectors[name] && map.hasLayer(vectors[name])) || (images[name] && map.hasLayer(images[name])));
    const element = document.querySelector(`#legend [data-section="${i}"]`);
    if (element) element.classList.toggle("hidden", !shown);
  });
}
map.on("overlayadd overlayremove", updateLegend);
updateLegend();

// controls sit above popups (Leaflet's panes): a popup opening under one is panned clear of the columns of
// controls on either side (prototype options, read when a popup opens, so they follow the controls' size)
function popupPadding() {
  const width = corner => Math.max(0, ...Array.from(document.querySelectorAll(`.leaflet-${corner} .leaflet-control`), c => c.offsetWidth));
  const left = Math.max(width("top.leaflet-left"), width("bottom.leaflet-left"));
  const right = Math.max(width("top.leaflet-right"), width("bottom.leaflet-right"));
  L.Popup.prototype.options.autoPanPaddingTopLeft = L.point(left + 12, 10);
  L.Popup.prototype.options.autoPanPaddingBottomRight = L.point(right + 12, 10);
}
map.on("overlayadd overlayremove resize", () => setTimeout(popupPadding, 0));

// before / after: a fade of the after image, and a swipe (a divider dragged across the map: the after
// image's pane is clipped to the right of it, the before image shows on the left)
if (images.after && images.before) {
  const control = L.control({position: "topleft"});
  let swipe = null;
  control.onAdd = () => {
    const div = L.DomUtil.create("div", "compare-control");
    div.innerHTML = `<label>${esc(T.before)} <input id="fade" type="range" min="0" max="100" value="100"> ${esc(T.after)}</label>` +
      `<label class="swipe-toggle"><input id="swipe" type="checkbox"> ${esc(T.swipe)}</label>`;
    L.DomEvent.disableClickPropagation(div);
    L.DomEvent.disableScrollPropagation(div);
    div.querySelector("#fade").addEventListener("input", e => images.after.setOpacity(e.target.value / 100));
    div.querySelector("#swipe").addEventListener("change", e => (e.target.checked ? swipeOn() : swipeOff()));
    return div;
  };
  control.addTo(map);

  const pane = map.getPane("after");
  const divider = L.DomUtil.create("div", "swipe-divider", map.getContainer());
  divider.id = "swipe-divider";
  divider.title = T.swipeHint;
  divider.innerHTML = '<div class="swipe-handle">\u25c2\u25b8</div>';
  divider.style.display = "none";
  L.DomEvent.disableClickPropagation(divider);
  L.DomEvent.disableScrollPropagation(divider);

  function clip() {
    if (swipe === null) return;
    const size = map.getSize();
    const x = Math.round(Math.min(Math.max(swipe, 0), 1) * size.x);
    const nw = map.containerPointToLayerPoint([0, 0]);
    const se = map.containerPointToLayerPoint(size);
    pane.style.clip = `rect(${nw.y}px, ${se.x}px, ${se.y}px, ${nw.x + x}px)`;
    divider.style.left = x + "px";
    divider.dataset.x = String(x);
  }
  function swipeOn() {
    swipe = 0.5;
    divider.style.display = "";
    clip();
  }
  function swipeOff() {
    swipe = null;
    pane.style.clip = "";
    divider.style.display = "none";
  }
  map.on("move zoom resize", clip);
  divider.addEventListener("pointerdown", e => {
    e.preventDefault();
    divider.setPointerCapture(e.pointerId);
    map.dragging.disable();
    const rect = map.getContainer().getBoundingClientRect();
    const move = ev => { swipe = (ev.clientX - rect.left) / rect.width; clip(); };
    const up = () => {
      divider.removeEventListener("pointermove", move);
      divider.removeEventListener("pointerup", up);
      divider.removeEventListener("pointercancel", up);
      map.dragging.enable();
    };
    divider.addEventListener("pointermove", move);
    divider.addEventListener("pointerup", up);
    divider.addEventListener("pointercancel", up);
  });
}

map.fitBounds(D.bounds);
popupPadding();
