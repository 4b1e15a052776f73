// radnode pages: theme toggle, live job list, submit-form app switch, routing line numbers.
// Plain DOM, no framework, no CDN; text is always set with textContent (never HTML).
"use strict";

function setupTheme() {
  var button = document.getElementById("theme-toggle");
  if (!button) return;
  button.addEventListener("click", function () {
    var next = document.documentElement.getAttribute("data-theme") === "dark" ? "light" : "dark";
    document.documentElement.setAttribute("data-theme", next);
    try { localStorage.setItem("radnode-theme", next); } catch (e) { /* storage disabled */ }
  });
}

function cell(text, className) {
  var td = document.createElement("td");
  if (className) td.className = className;
  td.textContent = text;
  return td;
}

function jobRow(j) {
  var tr = document.createElement("tr");
  tr.setAttribute("data-job", j.job_id);
  var link = document.createElement("a");
  link.href = "/jobs/" + encodeURIComponent(j.job_id);
  link.className = "mono";
  link.textContent = j.job_id.slice(0, 12);
  var first = document.createElement("td");
  first.appendChild(link);
  tr.appendChild(first);
  var app = cell(j.application);
  if (j.urgent) {
    var urgent = document.createElement("span");
    urgent.className = "urgent";
    urgent.textContent = "urgent";
    app.appendChild(document.createTextNode(" "));
    app.appendChild(urgent);
  }
  tr.appendChild(app);
  var state = document.createElement("td");
  var badge = document.createElement("span");
  badge.className = "state state-" + j.state;
  badge.textContent = j.state;
  state.appendChild(badge);
  if (j.critical) {
    // The same CRITICAL badge the server renders, so a live update never hides it.
    tr.className = "is-critical";
    var critical = document.createElement("span");
    critical.className = "critical";
    critical.title = "Critical finding";
    critical.textContent = "CRITICAL: " + (j.critical_findings || []).join(", ");
    state.appendChild(document.createTextNode(" "));
    state.appendChild(critical);
  }
  tr.appendChild(state);
  tr.appendChild(cell(j.accession || ""));
  tr.appendChild(cell((j.times.created || "").slice(0, 19).replace("T", " ")));
  tr.appendChild(cell(String(j.attempts)));
  tr.appendChild(cell((j.error || "").slice(0, 80) + (j.superseded_by ? " superseded" : ""), "muted"));
  return tr;
}

function setupJobPolling() {
  var table = document.getElementById("jobs-table");
  var filters = document.getElementById("job-filters");
  if (!table || !filters) return;
  var status = document.getElementById("live-status");
  var params = new URLSearchParams(new FormData(filters));
  Array.from(params.keys()).forEach(function (k) { if (!params.get(k)) params.delete(k); });
  params.set("limit", "100");
  var url = table.getAttribute("data-poll") + "?" + params.toString();
  var tbody = table.querySelector("tbody");
  function poll() {
    fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) {
        if (r.status === 401) { window.location.href = "/login?next=" + encodeURIComponent(location.pathname + location.search); throw new Error("logged out"); }
        if (!r.ok) throw new Error("HTTP " + r.status);
        return r.json();
      })
      .then(function (jobs) {
        var rows = jobs.map(jobRow);
        if (!rows.length) {
          var empty = document.createElement("tr");
          empty.className = "empty";
          var td = cell("No jobs match.");
          td.colSpan = 7;
          empty.appendChild(td);
          rows = [empty];
        }
        tbody.replaceChildren.apply(tbody, rows);
        if (status) { status.textContent = "live · updated " + new Date().toLocaleTimeString(); status.classList.remove("error"); }
      })
      .catch(function (err) { if (status) { status.textContent = "not updating: " + err.message; status.classList.add("error"); } })
      .finally(function () { setTimeout(poll, 3000); });
  }
  setTimeout(poll, 3000);
}

function setupSubmit() {
  var select = document.getElementById("application");
  if (!select) return;
  // A different application has different options: reload the form (GET, nothing is submitted).
  select.addEventListener("change", function () {
    var form = document.getElementById("submit-form");
    var q = new URLSearchParams({ accession: form.elements.accession.value, app: select.value });
    window.location.href = select.getAttribute("data-reload") + "?" + q.toString();
  });
}

function setupRoutingEditor() {
  var text = document.getElementById("routing-text");
  var gutter = document.getElementById("gutter");
  if (!text || !gutter) return;
  function numbers() {
    var n = text.value.split("\n").length;
    var out = [];
    for (var i = 1; i <= n; i++) out.push(i);
    gutter.textContent = out.join("\n");
  }
  text.addEventListener("input", numbers);
  text.addEventListener("scroll", function () { gutter.scrollTop = text.scrollTop; });
  numbers();
  document.querySelectorAll("[data-line]").forEach(function (a) {
    a.addEventListener("click", function (ev) {
      ev.preventDefault();
      var line = parseInt(a.getAttribute("data-line"), 10);
      var lines = text.value.split("\n");
      var start = lines.slice(0, line - 1).join("\n").length + (line > 1 ? 1 : 0);
      text.focus();
      text.setSelectionRange(start, start + (lines[line - 1] || "").length);
      var lh = parseFloat(getComputedStyle(text).lineHeight) || 18;
      text.scrollTop = Math.max(0, (line - 5) * lh);
    });
  });
}

document.addEventListener("DOMContentLoaded", function () {
  setupTheme();
  setupJobPolling();
  setupSubmit();
  setupRoutingEditor();
});

// The pull page follows its pull until it failed or became a job.
document.addEventListener("DOMContentLoaded", function () {
  var box = document.getElementById("pull");
  if (!box || box.getAttribute("data-final") === "yes") return;
  var id = box.getAttribute("data-pull");
  function poll() {
    fetch("/api/pulls/" + encodeURIComponent(id), { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) { if (!r.ok) throw new Error("HTTP " + r.status); return r.json(); })
      .then(function (p) {
        document.getElementById("pull-state").textContent = p.state;
        document.getElementById("pull-state").className = "state state-" + (p.state === "failed" ? "failed" : p.state === "routed" ? "done" : "preprocessing");
        var msg = document.getElementById("pull-message");
        msg.textContent = p.message;
        msg.className = p.state === "failed" ? "error" : "";
        document.getElementById("pull-instances").textContent = p.instances_received + (p.instances_expected ? " of " + p.instances_expected : "");
        var job = document.getElementById("pull-job");
        if (p.job_id) {
          var a = document.createElement("a");
          a.href = "/jobs/" + encodeURIComponent(p.job_id);
          a.className = "mono";
          a.textContent = p.job_id.slice(0, 12);
          job.replaceChildren(a);
        }
        if (p.state === "failed" || p.job_id) return;
        setTimeout(poll, 2000);
      })
      .catch(function () { setTimeout(poll, 5000); });
  }
  setTimeout(poll, 1500);
});
