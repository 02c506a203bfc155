/* Users page (admins): add and disable accounts through the JSON API. */
(function () {
  "use strict";
  var csrf = document.querySelector('meta[name="csrf-token"]').content;
  var msg = document.getElementById("users-message");
  function post(url, body) {
    return fetch(url, { method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
      body: JSON.stringify(body || {}) }).then(function (r) {
        return r.json().then(function (b) { return { ok: r.ok, body: b }; });
      });
  }
  function done(res) {
    if (res.ok) { window.location.reload(); }
    else { msg.textContent = typeof res.body.detail === "string" ? res.body.detail : JSON.stringify(res.body.detail); }
  }
  document.getElementById("add-user").addEventListener("submit", function (e) {
    e.preventDefault();
    var f = e.target;
    post("/api/users", { name: f.elements["name"].value, role: f.elements["role"].value, password: f.elements["password"].value }).then(done);
  });
  document.querySelectorAll("button.disable").forEach(function (b) {
    b.addEventListener("click", function () {
      if (window.confirm("Disable " + b.dataset.name + "?")) {
        post("/api/users/" + encodeURIComponent(b.dataset.name) + "/disable").then(done);
      }
    });
  });
})();
