"""The gallery page's stylesheet, script and legend (``_gallery.py`` renders the page).

Static text, apart from the script's hash, which the page's Content-Security-Policy names.
"""

from __future__ import annotations

import base64
import hashlib

__all__ = ["LEGEND", "SCRIPT", "SCRIPT_HASH", "STYLE"]

SCRIPT = """
(function () {
  var body = document.body, buttons = document.querySelectorAll("[data-f]");
  function show(f) {
    body.setAttribute("data-filter", f);
    for (var i = 0; i < buttons.length; i++) {
      buttons[i].setAttribute("aria-pressed", String(buttons[i].getAttribute("data-f") === f));
    }
  }
  for (var i = 0; i < buttons.length; i++) {
    buttons[i].addEventListener("click", function (event) {
      var f = event.currentTarget.getAttribute("data-f");
      show(f);
      try { history.replaceState(null, "", "#" + f); } catch (e) {}
    });
  }
  var wanted = location.hash.slice(1);
  show(/^(succeeded|failed|unknown|pending)$/.test(wanted) ? wanted : "all");
  var stale = document.getElementById("stale");
  if (stale && Date.now() - Number(stale.getAttribute("data-written")) >
      Number(stale.getAttribute("data-after"))) {
    stale.hidden = false;
  }
  document.getElementById("grid").addEventListener("click", function (event) {
    var p = event.target.closest ? event.target.closest(".prompt") : null;
    if (p) { p.classList.toggle("open"); }
  });
})();
"""
SCRIPT_HASH = base64.b64encode(hashlib.sha256(SCRIPT.encode()).digest()).decode()

STYLE = """
:root { color-scheme: light dark; --bg: #f6f7f9; --card: #fff; --ink: #1d232b;
  --dim: #5d6773; --line: #e2e6eb; --frame: #eceff3; --ok: #1f7a4d; --bad: #b3261e;
  --unk: #8a5a00; --pend: #4a5a70; }
@media (prefers-color-scheme: dark) { :root { --bg: #15181c; --card: #1e2228; --ink: #e8ebef;
  --dim: #9aa4af; --line: #30363e; --frame: #262b32; --ok: #5fc48f; --bad: #f08a80;
  --unk: #e0b050; --pend: #a8b4c4; } }
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--ink);
  font: 14px/1.4 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; }
header { position: sticky; top: 0; z-index: 1; background: var(--bg);
  border-bottom: 1px solid var(--line); padding: 14px 20px 12px; }
h1 { font-size: 18px; margin: 0 0 4px; font-weight: 600; word-break: break-all; }
.sub { color: var(--dim); font-size: 13px; margin: 0 0 10px; }
.sub b { color: var(--ink); font-weight: 600; }
.legend { font-size: 12px; margin-top: -6px; }
nav { display: flex; flex-wrap: wrap; gap: 6px; }
nav button { font: inherit; font-size: 13px; padding: 4px 12px; border-radius: 999px;
  border: 1px solid var(--line); background: var(--card); color: var(--ink); cursor: pointer; }
nav button[aria-pressed="true"] { background: var(--ink); color: var(--bg);
  border-color: var(--ink); }
nav button span { opacity: .7; margin-left: 4px; }
main { padding: 16px 20px 40px; }
#grid { list-style: none; margin: 0; padding: 0; display: grid; gap: 14px;
  grid-template-columns: repeat(auto-fill, minmax(220px, 1fr)); }
.tile { background: var(--card); border: 1px solid var(--line); border-radius: 10px;
  overflow: hidden; display: flex; flex-direction: column;
  content-visibility: auto; contain-intrinsic-size: auto 330px; }
.pic { display: block; aspect-ratio: 1; overflow: hidden; background: var(--frame); }
.pic img { display: block; width: 100%; height: 100%; object-fit: contain; }
.none { display: flex; align-items: center; justify-content: center; font-size: 15px;
  font-weight: 600; letter-spacing: .02em; }
.cap { padding: 8px 10px 10px; display: flex; flex-direction: column; gap: 5px; }
.top { display: flex; justify-content: space-between; gap: 8px; font-size: 12px;
  color: var(--dim); }
.top .n { color: var(--ink); font-weight: 600; }
.prompt { margin: 0; cursor: pointer; overflow-wrap: anywhere; white-space: pre-wrap;
  display: -webkit-box; -webkit-line-clamp: 3; -webkit-box-orient: vertical; overflow: hidden; }
.prompt.open { display: block; }
.prompt, .why { unicode-bidi: isolate; }
.tags { display: flex; flex-wrap: wrap; gap: 4px; }
.tags span { font-size: 11px; padding: 1px 6px; border-radius: 4px; background: var(--frame);
  color: var(--dim); white-space: nowrap; }
.tags .def { font-style: italic; }
.why { margin: 0; font-size: 12px; color: var(--bad); overflow-wrap: anywhere; }
.s-succeeded { color: var(--ok); } .s-failed { color: var(--bad); }
.s-unknown { color: var(--unk); } .s-pending { color: var(--pend); }
.earlier { opacity: .75; }
footer { color: var(--dim); font-size: 12px; padding: 0 20px 24px; }
body[data-filter="succeeded"] .tile:not([data-status="succeeded"]),
body[data-filter="failed"] .tile:not([data-status="failed"]),
body[data-filter="unknown"] .tile:not([data-status="unknown"]),
body[data-filter="pending"] .tile:not([data-status="pending"]) { display: none; }
"""

LEGEND = (
    "Each tile: line in the prompt file, time to result and cost; the prompt (click it for "
    "all of it); quality and aspect ratio sent (<i>default</i>: left to the provider); "
    "the lane (provider · key fingerprint)."
)
