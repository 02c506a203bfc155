/* Queue page: j/k move through the rows, Enter opens the patch. */
(function () {
  "use strict";
  var rows = Array.prototype.slice.call(document.querySelectorAll("#queue tbody tr[data-href]"));
  var i = -1;
  function select(n) {
    if (!rows.length) { return; }
    if (i >= 0) { rows[i].classList.remove("selected"); }
    i = Math.max(0, Math.min(rows.length - 1, n));
    rows[i].classList.add("selected");
    rows[i].scrollIntoView({ block: "nearest" });
  }
  document.addEventListener("keydown", function (e) {
    var t = e.target;
    if (e.ctrlKey || e.metaKey || e.altKey || (t && /INPUT|SELECT|TEXTAREA/.test(t.tagName))) { return; }
    if (e.key === "j" || e.key === "ArrowDown") { select(i + 1); }
    else if (e.key === "k" || e.key === "ArrowUp") { select(i - 1); }
    else if (e.key === "Enter" && i >= 0) { window.location.href = rows[i].dataset.href; }
    else if (e.key === "n") { var a = document.getElementById("next-page"); if (a) { window.location.href = a.href; } }
    else { return; }
    e.preventDefault();
  });
  rows.forEach(function (r, n) {
    r.addEventListener("click", function (e) { if (e.target.tagName !== "A") { window.location.href = r.dataset.href; } });
  });
})();
