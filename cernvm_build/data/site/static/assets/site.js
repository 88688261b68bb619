/* cvmfs.io: menu, theme, table of contents, copy buttons, version switcher and search (own code; the
   search index and its loader are Pagefind's, written by the build under pagefind/). */
(function () {
  "use strict";
  var body = document.body;
  var narrow = function (px) { return window.matchMedia && window.matchMedia("(max-width: " + px + "px)").matches; };

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
  if (fold && narrow(860)) fold.removeAttribute("open");
  /* the page's table of contents: beside the text on wide screens, a folded box above it otherwise */
  var toc = document.querySelector("details.toc");
  if (toc && narrow(1100)) toc.removeAttribute("open");

  /* ---- theme: the reader's choice is kept; without one the system's applies ---- */
  var root = document.documentElement;
  var themeButton = document.querySelector(".theme-toggle");
  function effectiveTheme() {
    var chosen = root.getAttribute("data-theme");
    if (chosen) return chosen;
    return window.matchMedia && window.matchMedia("(prefers-color-scheme: dark)").matches ? "dark" : "light";
  }
  function labelTheme() {
    if (!themeButton) return;
    var next = effectiveTheme() === "dark" ? "light" : "dark";
    themeButton.setAttribute("aria-label", "Switch to the " + next + " theme");
    themeButton.title = "Switch to the " + next + " theme";
    themeButton.textContent = next === "dark" ? "\u263E" : "\u2600";
  }
  if (themeButton) {
    labelTheme();
    themeButton.addEventListener("click", function () {
      var next = effectiveTheme() === "dark" ? "light" : "dark";
      root.setAttribute("data-theme", next);
      try { localStorage.setItem("theme", next); } catch (e) { /* private mode: not kept */ }
      labelTheme();
    });
  }

  /* ---- version switcher: each option is the same page in that version (or its docs home) ---- */
  document.querySelectorAll("select.version-select").forEach(function (sel) {
    sel.addEventListener("change", function () { if (sel.value) window.location.href = sel.value; });
  });

  /* ---- copy buttons on code blocks (always shown) ---- */
  function copyText(text) {
    if (navigator.clipboard && window.isSecureContext) return navigator.clipboard.writeText(text);
    return new Promise(function (resolve, reject) {
      var area = document.createElement("textarea");
      area.value = text;
      area.setAttribute("readonly", "");
      area.style.position = "fixed";
      area.style.opacity = "0";
      document.body.appendChild(area);
      area.select();
      var ok = false;
      try { ok = document.execCommand("copy"); } catch (e) { ok = false; }
      document.body.removeChild(area);
      if (ok) { resolve(); } else { reject(new Error("copy refused")); }
    });
  }
  document.querySelectorAll("pre.highlight").forEach(function (pre) {
    var b = document.createElement("button");
    b.type = "button";
    b.className = "copy";
    b.textContent = "Copy";
    b.setAttribute("aria-label", "Copy this code");
    b.addEventListener("click", function () {
      var code = pre.querySelector("code");
      var text = (code || pre).innerText.replace(/^\$ /gm, "");
      copyText(text).then(function () {
        b.textContent = "Copied";
        setTimeout(function () { b.textContent = "Copy"; }, 1500);
      }, function () { b.textContent = "Press Ctrl+C"; });
    });
    pre.appendChild(b);
  });

  /* ---- search: Pagefind's sharded index, loaded on first use; results link to the heading ---- */
  var bundle = body.getAttribute("data-search");
  var engine = null;

  function load() {
    if (!engine) {
      var opts = { baseUrl: body.getAttribute("data-base") || "/", excerptLength: 24 };
      /* a big site's index is in shards (shards.json lists them after the first, this bundle) */
      var listed = fetch(bundle + "shards.json").then(function (r) { return r.ok ? r.json() : { shards: [] }; });
      engine = import(bundle + "pagefind.js").then(function (pf) {
        return pf.options(opts)
          .then(function () { return pf.init(); })
          .then(function () { return listed; })
          .then(function (m) {
            return Promise.all(m.shards.filter(function (s) { return s.bundle; }).map(function (s) {
              return pf.mergeIndex(bundle + s.bundle, opts);
            }));
          })
          .then(function () { return pf; });
      });
    }
    return engine;
  }

  function score(sub) {
    var s = 0;
    (sub.weighted_locations || []).forEach(function (l) { s += l.balanced_score || l.weight || 0; });
    return s;
  }

  /* the query's words, each cut to a stem-like prefix ("configuring" finds "Configure") */
  function stems(q) {
    return q.toLowerCase().split(/[^\w]+/).filter(function (w) { return w.length > 1 || /\d/.test(w); })
      .map(function (w) { return w.length > 5 ? w.slice(0, 5) : w; });
  }

  function names(heading, words) {
    var hw = (heading || "").toLowerCase().split(/[^\w]+/);
    return words.every(function (w) { return hw.some(function (h) { return h.indexOf(w) === 0; }); });
  }

  /* one hit per page: the heading the query is about. A section whose own heading names every word of
     the query wins (the most specific place); otherwise the section where the words weigh most. */
  function best(data, words) {
    var subs = (data.sub_results || []).slice();
    subs.sort(function (a, b) { return score(b) - score(a); });
    var named = subs.filter(function (s) { return s.url.indexOf("#") > 0 && names(s.title, words); });
    var top = named[0] || subs[0] || { title: data.meta.title, url: data.url, excerpt: data.excerpt };
    return { page: data.meta.title || data.url, heading: top.title, url: top.url, excerpt: top.excerpt || data.excerpt };
  }

  function search(q, limit) {
    return load().then(function (pf) { return pf.search(q); }).then(function (res) {
      if (!res) return [];
      return Promise.all(res.results.slice(0, limit).map(function (r) { return r.data(); }))
        .then(function (all) { var words = stems(q); return all.map(function (d) { return best(d, words); }); });
    });
  }

  /* Pagefind's excerpt is escaped text with <mark>s: rebuild it from DOM nodes, keeping only marks */
  function excerptNode(html) {
    var span = document.createElement("span");
    span.className = "hit-snip";
    var doc = new DOMParser().parseFromString("<p>" + html + "</p>", "text/html");
    doc.body.firstChild.childNodes.forEach(function (n) {
      if (n.nodeType === 1 && n.tagName === "MARK") {
        var m = document.createElement("mark");
        m.textContent = n.textContent;
        span.appendChild(m);
      } else {
        span.appendChild(document.createTextNode(n.textContent));
      }
    });
    return span;
  }

  function hitLink(h) {
    var a = document.createElement("a");
    a.href = h.url;
    var title = document.createElement("span");
    title.className = "hit-title";
    title.textContent = h.heading && h.heading !== h.page ? h.heading : h.page;
    a.appendChild(title);
    if (h.heading && h.heading !== h.page) {
      var path = document.createElement("span");
      path.className = "hit-path";
      path.textContent = h.page;
      a.appendChild(path);
    }
    if (h.excerpt) a.appendChild(excerptNode(h.excerpt));
    return a;
  }

  /* the header box: results drop down as you type */
  document.querySelectorAll("form.search").forEach(function (form) {
    var input = form.querySelector("input");
    var pop = form.querySelector(".search-pop");
    var active = -1;
    var asked = 0;
    function render() {
      var q = input.value.trim();
      if (q.length < 2) { pop.hidden = true; return; }
      var mine = ++asked;
      search(q, 8).then(function (hits) {
        if (mine !== asked) return;  /* a newer query is on its way */
        pop.textContent = "";
        active = -1;
        if (!hits.length) {
          var none = document.createElement("div");
          none.className = "hit-none";
          none.textContent = "No pages match \u201c" + q + "\u201d.";
          pop.appendChild(none);
        }
        hits.forEach(function (h) { pop.appendChild(hitLink(h)); });
        pop.hidden = false;
      }).catch(function (e) { console.warn("search: " + e.message); });
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
    var tag = document.activeElement ? document.activeElement.tagName : "";
    if (e.key === "/" && box && tag !== "INPUT" && tag !== "TEXTAREA" && tag !== "SELECT") {
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
      status.textContent = "Searching\u2026";
      search(q, 30).then(function (hits) {
        status.textContent = hits.length
          ? hits.length + (hits.length === 1 ? " page matches" : " pages match") + " \u201c" + q + "\u201d."
          : "No pages match \u201c" + q + "\u201d.";
        hits.forEach(function (h) {
          var li = document.createElement("li");
          li.appendChild(hitLink(h));
          results.appendChild(li);
        });
      }).catch(function (e) { status.textContent = "The search index could not be loaded."; console.warn("search: " + e.message); });
    }
  }
})();
