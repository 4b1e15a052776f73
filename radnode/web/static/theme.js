// Applied before first paint (loaded synchronously in <head>): the saved theme, else the system's.
(function () {
  var saved = null;
  try { saved = localStorage.getItem("radnode-theme"); } catch (e) { /* storage disabled */ }
  var dark = saved ? saved === "dark" : window.matchMedia && window.matchMedia("(prefers-color-scheme: dark)").matches;
  document.documentElement.setAttribute("data-theme", dark ? "dark" : "light");
})();
