/* cvmfs.io: menu, theme, table of contents, copy buttons, version switcher and search (the engine is
   search.js, loaded on first use; the build writes its index under search-index/). */
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

  /* ---- search: the site's own index (search-index/), its script loaded on first use; results link
     to the heading that answers the query ---- */
  var bundle = body.getAttribute("data-search");
  var engine = null;

  // fresh: revalidate (search.js asks it for the index's files whose names stay across builds)
  function getJson(url, fresh) {
    return fetch(url, fresh ? { cache: "no-cache" } : {}).then(function (r) {
      if (!r.ok) throw new Error(url + ": HTTP " + r.status);
      return r.json();
    });
  }

  function load() {
    if (!engine) {
      engine = new Promise(function (resolve, reject) {
        var script = document.createElement("script");
        script.src = body.getAttribute("data-search-js");
        script.onload = function () { resolve(window.SiteSearch.open(bundle, getJson)); };
        script.onerror = function () { reject(new Error("the search script could not be loaded")); };
        document.head.appendChild(script);
      });
      engine.catch(function () { engine = null; });
    }
    return engine;
  }

  function search(q, limit) {
    return load().then(function (index) { return index.search(q, limit); });
  }

  /* the excerpt comes as text parts, the query's words marked: text nodes and <mark>s, never HTML */
  function excerptNode(parts) {
    var span = document.createElement("span");
    span.className = "hit-snip";
    parts.forEach(function (p) {
      if (p.mark) {
        var m = document.createElement("mark");
        m.textContent = p.text;
        span.appendChild(m);
      } else {
        span.appendChild(document.createTextNode(p.text));
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
    if (h.excerpt && h.excerpt.length) a.appendChild(excerptNode(h.excerpt));
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
    input.addEventListener("focus", function () {
      load().then(function (index) { return index.warm(); }).catch(function () {});
    });
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
