// "Use my location" and "pick on the map" for the need and offer forms. The forms work without it.
(function () {
  "use strict";
  var T = window.AIDMATCH_TEXT || {};
  var box = document.querySelector(".js-only");
  if (!box) { return; }
  box.hidden = false;
  var lat = document.getElementById("lat"), lon = document.getElementById("lon");
  var status = document.getElementById("location-status");
  var offset = document.getElementById("utc_offset_min");
  if (offset) { offset.value = String(-new Date().getTimezoneOffset()); }
  var summary = document.getElementById("error-summary");
  if (summary) { summary.focus(); }

  function esc(s) { var d = document.createElement("span"); d.textContent = s; return d.innerHTML; }

  function setPoint(la, lo) {
    lat.value = la.toFixed(6);
    lon.value = lo.toFixed(6);
    status.textContent = (T.set || "{lat}, {lon}").replace("{lat}", lat.value).replace("{lon}", lon.value);
  }
  if (lat.value && lon.value) { setPoint(parseFloat(lat.value), parseFloat(lon.value)); }

  var locBtn = document.getElementById("use-location");
  if (!navigator.geolocation) { locBtn.hidden = true; }
  locBtn.addEventListener("click", function () {
    status.textContent = T.working || "…";
    navigator.geolocation.getCurrentPosition(
      function (pos) { setPoint(pos.coords.latitude, pos.coords.longitude); },
      function () { status.textContent = T.failed || "!"; },
      { enableHighAccuracy: true, timeout: 15000, maximumAge: 60000 }
    );
  });

  var mapBtn = document.getElementById("pick-on-map");
  mapBtn.addEventListener("click", function () {
    mapBtn.disabled = true;
    // Leaflet is loaded only now, so a slow connection pays for it only when the map is wanted.
    var css = document.createElement("link");
    css.rel = "stylesheet"; css.href = "/static/leaflet/leaflet.css";
    document.head.appendChild(css);
    var js = document.createElement("script");
    js.src = "/static/leaflet/leaflet.js";
    js.onload = showMap;
    document.head.appendChild(js);
  });

  function showMap() {
    var el = document.getElementById("pick-map");
    el.hidden = false;
    var center = lat.value ? [parseFloat(lat.value), parseFloat(lon.value)] : [55.75, 37.62];
    var map = L.map(el).setView(center, lat.value ? 11 : 6);
    var marker = null;
    status.textContent = T.hint || "";
    fetch("/map/places.json").then(function (r) { return r.json(); }).then(function (places) {
      places.slice(0, 250).forEach(function (p) {
        L.marker([p.lat, p.lon], { icon: L.divIcon({ className: "place-label", html: esc(p.name), iconSize: null }), interactive: false, keyboard: false }).addTo(map);
      });
    }).catch(function () {});
    map.on("click", function (e) {
      setPoint(e.latlng.lat, e.latlng.lng);
      if (marker) { marker.setLatLng(e.latlng); } else { marker = L.circleMarker(e.latlng, { radius: 9, color: "#c0141b" }).addTo(map); }
    });
  }
})();
