/* cvmfs.io: menu toggle, copy buttons and an offline client-side search (no dependencies). */
(function () {
  "use strict";
  var body = document.body;

  /* ---- menu on small screens ---- */
  var toggle = document.querySelector(".menu-toggle");
  var menu = document.getElementById("menu");
  if (toggle && menu) {
    toggle.addEventListener("click", function () {
      var open = menu.classList.toggle("open");
      toggle.setAttribute("aria-expanded", open ? "true" : "false");
    });
  }
  var fold = document.querySelector(".sidebar-fold");
  if (fold && window.matchMedia && window.matchMedia("(max-width: 860px)").matches) {
    fold.removeAttribute("open");
  }

  /* ---- copy buttons on code blocks ---- */
  if (navigator.clipboard) {
    document.querySelectorAll("pre.highlight").forEach(function (pre) {
      var b = document.createElement("button");
      b.type = "button";
      b.className = "copy";
      b.textContent = "Copy";
      b.addEventListener("click", function () {
        var code = pre.querySelector("code");
        var text = (code || pre).innerText.replace(/^\$ /gm, "");
        navigator.clipboard.writeText(text).then(function () {
          b.textContent = "Copied";
          setTimeout(function () { b.textContent = "Copy"; }, 1500);
        }, function () { b.textContent = "Press Ctrl+C"; });
      });
      pre.appendChild(b);
    });
  }

  /* ---- search ---- */
  var indexUrl = body.getAttribute("data-search-index");
  var docs = null;
  var loading = null;

  function load() {
    if (docs) return Promise.resolve(docs);
    if (!loading) {
      loading = fetch(indexUrl, { credentials: "same-origin" })
        .then(function (r) {
          if (!r.ok) throw new Error("search index: HTTP " + r.status);
          return r.json();
        })
        .then(function (d) {
          docs = d.map(function (x) {
            return { t: x.t, u: x.u, s: x.s, h: x.h, x: x.x, lt: x.t.toLowerCase(), lh: x.h.join(" ").toLowerCase(), lx: x.x.toLowerCase() };
          });
          return docs;
        });
    }
    return loading;
  }

  function terms(q) {
    return q.toLowerCase().split(/[^\w.\-]+/).filter(function (w) { return w.length > 1; });
  }

  function count(hay, needle) {
    var n = 0, i = hay.indexOf(needle);
    while (i !== -1 && n < 20) { n++; i = hay.indexOf(needle, i + needle.length); }
    return n;
  }

  /* every term must occur somewhere; title hits weigh most, then headings, then text */
  function search(q, limit) {
    var ts = terms(q);
    if (!ts.length || !docs) return [];
    var out = [];
    docs.forEach(function (d) {
      var score = 0;
      for (var i = 0; i < ts.length; i++) {
        var t = ts[i];
        var st = count(d.lt, t) * 12 + count(d.lh, t) * 5 + count(d.lx, t);
        if (!st) return;
        if (d.lt.indexOf(t) === 0) st += 8;
        score += st;
      }
      out.push({ d: d, score: score });
    });
    out.sort(function (a, b) { return b.score - a.score || (a.d.t < b.d.t ? -1 : 1); });
    return out.slice(0, limit);
  }

  /* a text snippet around the first hit, with <mark>s, built from DOM nodes (never innerHTML) */
  function snippet(d, ts) {
    var text = d.x, low = d.lx, at = -1;
    for (var i = 0; i < ts.length && at < 0; i++) at = low.indexOf(ts[i]);
    var start = Math.max(0, at - 60), end = Math.min(text.length, (at < 0 ? 0 : at) + 140);
    var part = (start > 0 ? "…" : "") + text.slice(start, end) + (end < text.length ? "…" : "");
    var span = document.createElement("span");
    span.className = "hit-snip";
    var lowPart = part.toLowerCase(), pos = 0;
    while (pos < part.length) {
      var best = -1, len = 0;
      ts.forEach(function (t) {
        var j = lowPart.indexOf(t, pos);
        if (j !== -1 && (best === -1 || j < best)) { best = j; len = t.length; }
      });
      if (best === -1) { span.appendChild(document.createTextNode(part.slice(pos))); break; }
      span.appendChild(document.createTextNode(part.slice(pos, best)));
      var m = document.createElement("mark");
      m.textContent = part.slice(best, best + len);
      span.appendChild(m);
      pos = best + len;
    }
    return span;
  }

  function hitLink(r, ts) {
    var a = document.createElement("a");
    a.href = r.d.u;
    var title = document.createElement("span");
    title.className = "hit-title";
    title.textContent = r.d.t;
    a.appendChild(title);
    if (r.d.s) {
      var sec = document.createElement("span");
      sec.className = "hit-sec";
      sec.textContent = r.d.s;
      a.appendChild(sec);
    }
    a.appendChild(snippet(r.d, ts));
    return a;
  }

  /* the header box: results drop down as you type */
  document.querySelectorAll("form.search").forEach(function (form) {
    var input = form.querySelector("input");
    var pop = form.querySelector(".search-pop");
    var active = -1;
    function render() {
      var q = input.value.trim();
      if (q.length < 2) { pop.hidden = true; return; }
      load().then(function () {
        var hits = search(q, 8), ts = terms(q);
        pop.textContent = "";
        active = -1;
        if (!hits.length) {
          var none = document.createElement("div");
          none.className = "hit-none";
          none.textContent = "No pages match “" + q + "”.";
          pop.appendChild(none);
        }
        hits.forEach(function (h) { pop.appendChild(hitLink(h, ts)); });
        pop.hidden = false;
      }).catch(function (e) { console.warn(e.message); });
    }
    input.addEventListener("focus", function () { load().catch(function () {}); });
    input.addEventListener("input", render);
    input.addEventListener("keydown", function (e) {
      var links = pop.querySelectorAll("a");
      if (e.key === "ArrowDown" || e.key === "ArrowUp") {
        e.preventDefault();
        if (!links.length) return;
        active = (active + (e.key === "ArrowDown" ? 1 : -1) + links.length) % links.length;
        links.forEach(function (l, i) { l.classList.toggle("active", i === active); });
      } else if (e.key === "Enter" && active >= 0 && links[active]) {
        e.preventDefault();
        window.location.href = links[active].href;
      } else if (e.key === "Escape") {
        pop.hidden = true;
        input.blur();
      }
    });
    document.addEventListener("click", function (e) { if (!form.contains(e.target)) pop.hidden = true; });
  });
  document.addEventListener("keydown", function (e) {
    var box = document.querySelector("form.search input");
    if (e.key === "/" && box && document.activeElement.tagName !== "INPUT" && document.activeElement.tagName !== "TEXTAREA") {
      e.preventDefault();
      box.focus();
    }
  });

  /* the search page: ?q=… */
  var results = document.getElementById("search-results");
  if (results) {
    var q = new URLSearchParams(window.location.search).get("q") || "";
    var field = document.getElementById("search-q");
    var status = document.getElementById("search-status");
    if (field) field.value = q;
    if (q) {
      status.textContent = "Searching…";
      load().then(function () {
        var hits = search(q, 50), ts = terms(q);
        status.textContent = hits.length ? hits.length + (hits.length === 1 ? " page matches" : " pages match") + " “" + q + "”." : "No pages match “" + q + "”.";
        hits.forEach(function (h) {
          var li = document.createElement("li");
          li.appendChild(hitLink(h, ts));
          results.appendChild(li);
        });
      }).catch(function (e) { status.textContent = "The search index could not be loaded."; console.warn(e.message); });
    }
  }
})();
