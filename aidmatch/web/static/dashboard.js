// The coordinator's map: open needs coloured by urgency, grouped on a grid when zoomed out,
// helpers' coverage and settlement labels as layers; refreshes itself from the JSON endpoint.
(function () {
  "use strict";
  var T = window.AIDMATCH_TEXT || {};
  var el = document.getElementById("map");
  if (!el || !window.L) { return; }
  var COLORS = { critical: "#c0141b", urgent: "#e07b00", normal: "#2f7d32" };
  var RANK = { critical: 0, urgent: 1, normal: 2 };
  var CLUSTER_BELOW_ZOOM = 10, CELL_PX = 56, REFRESH_MS = 30000;
  var query = el.dataset.query ? "?" + el.dataset.query : "";

  var map = L.map(el, { zoomControl: true }).setView([55.75, 37.62], 5);
  if (el.dataset.tileUrl) {
    L.tileLayer(el.dataset.tileUrl, { maxZoom: 18, attribution: "&copy; map tiles" }).addTo(map);
  }
  var needsLayer = L.layerGroup().addTo(map);
  var coverageLayer = L.layerGroup();
  var labelsLayer = L.layerGroup().addTo(map);
  var overlays = {};
  overlays[T.needs || "needs"] = needsLayer;
  overlays[T.coverage || "coverage"] = coverageLayer;
  overlays[T.labels || "labels"] = labelsLayer;
  L.control.layers(null, overlays, { collapsed: false }).addTo(map);
  L.control.scale({ imperial: false }).addTo(map);

  var needs = [], fitted = false;
  // When there are more open needs than the map draws, it says so (the newest are drawn).
  var capped = L.control({ position: "bottomleft" }), box = L.DomUtil.create("div", "map-capped");
  box.id = "map-capped";
  box.setAttribute("role", "status");
  box.hidden = true;
  capped.onAdd = function () { return box; };
  capped.addTo(map);

  function showCapped(shown, total) {
    box.hidden = !(total > shown);
    box.textContent = box.hidden ? "" : (T.capped || "{shown} / {total}")
      .replace("{shown}", String(shown)).replace("{total}", String(total));
  }

  function esc(s) { var d = document.createElement("span"); d.textContent = String(s); return d.innerHTML; }

  function worst(points) {
    return points.reduce(function (w, p) { return RANK[p.urgency] < RANK[w] ? p.urgency : w; }, "normal");
  }

  function point(p) {
    return L.circleMarker([p.lat, p.lon], {
      radius: 7 + Math.min(6, Math.log2(1 + p.left)), color: "#222", weight: 1, className: "need-marker",
      fillColor: COLORS[p.urgency] || "#555", fillOpacity: 0.9
    }).bindPopup(esc(p.code) + " · " + esc(p.category) + " × " + esc(p.left) + "/" + esc(p.quantity));
  }

  // A tiny grid clustering: points whose screen positions share a CELL_PX square become one badge.
  function draw() {
    needsLayer.clearLayers();
    el.dataset.needs = String(needs.length);
    var zoom = map.getZoom();
    if (zoom >= CLUSTER_BELOW_ZOOM) { needs.forEach(function (p) { needsLayer.addLayer(point(p)); }); return; }
    var cells = {};
    needs.forEach(function (p) {
      var xy = map.project([p.lat, p.lon], zoom);
      var key = Math.floor(xy.x / CELL_PX) + ":" + Math.floor(xy.y / CELL_PX);
      (cells[key] = cells[key] || []).push(p);
    });
    Object.keys(cells).forEach(function (key) {
      var group = cells[key];
      if (group.length === 1) { needsLayer.addLayer(point(group[0])); return; }
      var lat = 0, lon = 0;
      group.forEach(function (p) { lat += p.lat; lon += p.lon; });
      var size = 28 + Math.min(24, 4 * Math.log2(group.length));
      var badge = L.marker([lat / group.length, lon / group.length], {
        icon: L.divIcon({ className: "cluster urgency-" + worst(group), html: "<span>" + group.length + "</span>",
                          iconSize: [size, size] }),
        title: String(group.length), keyboard: true
      });
      badge.on("click", function () {
        map.fitBounds(L.latLngBounds(group.map(function (p) { return [p.lat, p.lon]; })).pad(0.3));
      });
      needsLayer.addLayer(badge);
    });
  }

  function drawCoverage(offers) {
    coverageLayer.clearLayers();
    offers.forEach(function (o) {
      coverageLayer.addLayer(L.circle([o.lat, o.lon], {
        radius: o.radius_km * 1000, color: "#0b5cad", weight: 1, fillOpacity: 0.06, interactive: false
      }));
      coverageLayer.addLayer(L.circleMarker([o.lat, o.lon], { radius: 3, color: "#0b5cad", interactive: false }));
    });
  }

  function load() {
    fetch("/dashboard/data.json" + query, { credentials: "same-origin" })
      .then(function (r) { if (!r.ok) { throw new Error(r.status); } return r.json(); })
      .then(function (data) {
        needs = data.needs;
        showCapped(needs.length, data.needs_total);
        drawCoverage(data.offers);
        if (!fitted && needs.length) {
          // Not animated: a zoom animation still running would undo a click that zooms meanwhile
          // (Leaflet ends it 250 ms later by moving to its own target).
          map.fitBounds(L.latLngBounds(needs.map(function (p) { return [p.lat, p.lon]; })).pad(0.2),
                        { maxZoom: 9, animate: false });
          fitted = true;
        }
        draw();
      })
      .catch(function () {});
  }

  // The tables are rendered by the server; refresh them in place unless someone is working in them.
  function refreshTables() {
    var box = document.getElementById("live-tables");
    if (!box || box.contains(document.activeElement)) { return; }
    var sep = query ? "&" : "?";
    fetch("/dashboard" + query + sep + "fragment=tables", { credentials: "same-origin" })
      .then(function (r) { if (!r.ok || r.redirected) { throw new Error(r.status); } return r.text(); })
      .then(function (html) { box.innerHTML = html; })
      .catch(function () {});
  }

  // Settlement labels, biggest first: more of them as the map zooms in, only those in view.
  var places = [];
  function drawLabels() {
    labelsLayer.clearLayers();
    var z = map.getZoom(), limit = z <= 5 ? 60 : z <= 6 ? 150 : z <= 7 ? 400 : z <= 8 ? 1200 : places.length;
    var view = map.getBounds().pad(0.2);
    places.slice(0, limit).forEach(function (p) {
      if (!view.contains([p.lat, p.lon])) { return; }
      labelsLayer.addLayer(L.marker([p.lat, p.lon], {
        icon: L.divIcon({ className: "place-label", html: esc(p.name), iconSize: null }), interactive: false, keyboard: false
      }));
    });
  }
  fetch("/map/places.json?count=3000&lang=" + (el.dataset.lang || "ru")).then(function (r) { return r.json(); })
    .then(function (data) { places = data; drawLabels(); }).catch(function () {});
  map.on("moveend", drawLabels);
  map.on("zoomend", draw);
  load();
  function refresh() { load(); refreshTables(); }
  window.aidmatchRefresh = refresh;  // also lets the browser tests refresh without waiting
  setInterval(function () { if (!document.hidden) { refresh(); } }, REFRESH_MS);
})();
