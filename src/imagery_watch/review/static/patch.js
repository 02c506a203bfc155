/* Patch page: keyboard decisions, blink/swipe comparison, map, next patch preloaded. */
(function () {
  "use strict";
  var cfg = JSON.parse(document.getElementById("patch-config").textContent);
  var csrf = document.querySelector('meta[name="csrf-token"]').content;
  var version = cfg.version;
  var busy = false;
  var q = cfg.context ? "?" + cfg.context : "";
  var compare = document.getElementById("compare");
  var after = compare.querySelector("figure.after");
  var note = document.getElementById("note");
  var msg = document.getElementById("message");
  var conflict = document.getElementById("conflict");
  var badge = document.getElementById("status-badge");
  var blinkTimer = null;

  function url(id) { return "/patches/" + encodeURIComponent(id) + q; }
  function go(id) { if (id) { window.location.href = url(id); } }

  /* --- preload the next patch (chips come from the browser cache afterwards) --- */
  function preload(id) {
    if (!id) { return; }
    ["before", "after"].forEach(function (e) {
      var img = new Image();
      img.src = "/api/patches/" + encodeURIComponent(id) + "/chips/" + e + ".jpg";
    });
  }
  preload(cfg.next);

  /* --- comparison modes --- */
  function setMode(mode) {
    clearInterval(blinkTimer);
    blinkTimer = null;
    after.style.visibility = "";
    after.style.clipPath = "";
    compare.className = "compare " + (mode === "side" ? "side" : "stacked " + mode);
    document.querySelectorAll("button.mode").forEach(function (b) {
      b.classList.toggle("active", b.dataset.mode === mode);
    });
    if (mode === "blink") {
      var show = true;
      blinkTimer = setInterval(function () {
        show = !show;
        after.style.visibility = show ? "visible" : "hidden";
      }, 650);
    } else if (mode === "swipe") {
      swipeTo(document.getElementById("swipe").value);
    }
  }
  var divider = document.createElement("span");
  divider.className = "divider";
  after.appendChild(divider);
  function when(iso) {
    return iso && iso.length >= 16 && iso[10] === "T" ? iso.slice(0, 10) + " " + iso.slice(11, 16) + " UTC" : (iso || "?");
  }
  function swipeTo(pct) {
    after.style.clipPath = "inset(0 0 0 " + pct + "%)";
    divider.style.left = pct + "%";
    document.getElementById("swipe").value = pct;
  }
  document.querySelectorAll("button.mode").forEach(function (b) {
    b.addEventListener("click", function () { setMode(b.dataset.mode); });
  });
  document.getElementById("swipe").addEventListener("input", function (e) { swipeTo(e.target.value); });
  compare.addEventListener("mousemove", function (e) {
    if (!compare.classList.contains("swipe")) { return; }
    var r = after.getBoundingClientRect();
    swipeTo(Math.max(0, Math.min(100, Math.round(100 * (e.clientX - r.left) / r.width))));
  });

  /* --- decisions --- */
  function show(text, kind) {
    msg.textContent = text;
    msg.className = "message " + (kind || "");
  }
  function showConflict(cur) {
    var who = cur.reviewer || "another reviewer";
    var what = (cfg.labels[cur.status] || cur.status);
    conflict.hidden = false;
    conflict.textContent = "";
    var h = document.createElement("strong");
    h.textContent = "Not saved: " + who + " decided this patch meanwhile.";
    var p = document.createElement("p");
    p.textContent = who + " set it to \u201c" + what + "\u201d at " + when(cur.reviewed_at) +
      (cur.note ? " with the note \u201c" + cur.note + "\u201d" : "") +
      ". Press a decision key again to replace it with yours, or j to move on.";
    conflict.appendChild(h);
    conflict.appendChild(p);
    badge.textContent = what;
    badge.className = "badge big status-" + cur.status;
    document.getElementById("version").textContent = cur.version;
  }
  function decide(status) {
    if (busy) { return; }
    busy = true;
    show("Saving\u2026", "");
    fetch("/api/patches/" + encodeURIComponent(cfg.patch_id) + "/decision", {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
      body: JSON.stringify({ status: status, note: note.value, version: version })
    }).then(function (r) {
      return r.json().catch(function () { return {}; }).then(function (body) { return { r: r, body: body }; });
    }).then(function (res) {
      busy = false;
      if (res.r.status === 200) {
        version = res.body.patch.version;
        conflict.hidden = true;
        badge.textContent = cfg.labels[status];
        badge.className = "badge big status-" + status;
        document.getElementById("version").textContent = version;
        show("Saved: " + cfg.labels[status] + (cfg.next ? " \u2014 next patch\u2026" : " \u2014 end of the queue"), "ok");
        if (cfg.next) { setTimeout(function () { go(cfg.next); }, 250); }
      } else if (res.r.status === 409) {
        version = res.body.current.version;
        show("", "");
        showConflict(res.body.current);
      } else if (res.r.status === 401) {
        window.location.href = "/login?next=" + encodeURIComponent(window.location.pathname + window.location.search);
      } else {
        show("Error " + res.r.status + ": " + (res.body.detail || "not saved"), "error");
      }
    }).catch(function (err) {
      busy = false;
      show("Network error, not saved: " + err, "error");
    });
  }
  document.querySelectorAll("button.decision").forEach(function (b) {
    b.addEventListener("click", function () { decide(b.dataset.status); });
  });

  /* --- keyboard --- */
  var keys = {};
  Object.keys(cfg.decisions).forEach(function (s) { keys[cfg.decisions[s]] = s; });
  document.addEventListener("keydown", function (e) {
    if (e.ctrlKey || e.metaKey || e.altKey) { return; }
    var t = e.target;
    if (t && (t.tagName === "TEXTAREA" || t.tagName === "INPUT" || t.tagName === "SELECT")) {
      if (e.key === "Escape") { t.blur(); e.preventDefault(); }
      return;
    }
    var k = e.key;
    if (keys[k]) { decide(keys[k]); }
    else if (k === "j" || k === "ArrowRight") { go(cfg.next); }
    else if (k === "k" || k === "ArrowLeft") { go(cfg.previous); }
    else if (k === "s") { setMode("side"); }
    else if (k === "b") { setMode("blink"); }
    else if (k === "w") { setMode("swipe"); }
    else if (k === "n") { note.focus(); }
    else if (k === "q") { window.location.href = "/queue" + q; }
    else { return; }
    e.preventDefault();
  });

  /* --- map: orthophoto tiles served by this app, patch outline --- */
  if (window.L && cfg.outline) {
    var map = L.map("map", { attributionControl: false, minZoom: cfg.min_zoom, maxZoom: cfg.max_zoom,
                             keyboard: false, zoomSnap: 1 });
    var opts = { maxNativeZoom: cfg.native_zoom, maxZoom: cfg.max_zoom, minZoom: cfg.min_zoom, tileSize: 256 };
    var afterLayer = L.tileLayer("/tiles/after/{z}/{x}/{y}.png", opts).addTo(map);
    var beforeLayer = L.tileLayer("/tiles/before/{z}/{x}/{y}.png", opts);
    L.control.layers({ "After": afterLayer, "Before": beforeLayer }, null, { collapsed: false }).addTo(map);
    var shape = L.geoJSON(cfg.outline, { style: { color: "#ffd400", weight: 2, fill: false } }).addTo(map);
    map.fitBounds(shape.getBounds(), { padding: [60, 60], maxZoom: cfg.native_zoom });
    L.control.scale({ imperial: false }).addTo(map);
  }
})();
