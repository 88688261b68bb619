/* cvmfs.io search: queries the index the build writes under search-index/ (cernvm_build/site/search.py
   describes the files). The tokenizer and the Porter stemmer are cernvm_build/site/stemmer.py's, line
   for line: a test runs both over every word of the site. Runs in the browser (window.SiteSearch; site.js
   loads it on first use) and under node (module.exports: the tests and bench/site_search.py).
   Results are data, never HTML: the caller builds DOM nodes from them. */
(function (root) {
  "use strict";

  /* ---- words: stemmer.py ---- */
  var WORD = /[\p{L}\p{N}]+/gu;
  var MAX_WORD = 40;
  var ASCII_WORD = /^[a-z]+$/;
  var STEP2 = [
    ["ational", "ate"], ["tional", "tion"], ["enci", "ence"], ["anci", "ance"], ["izer", "ize"],
    ["abli", "able"], ["alli", "al"], ["entli", "ent"], ["eli", "e"], ["ousli", "ous"],
    ["ization", "ize"], ["ation", "ate"], ["ator", "ate"], ["alism", "al"], ["iveness", "ive"],
    ["fulness", "ful"], ["ousness", "ous"], ["aliti", "al"], ["iviti", "ive"], ["biliti", "ble"]
  ];
  var STEP3 = [
    ["icate", "ic"], ["ative", ""], ["alize", "al"], ["iciti", "ic"], ["ical", "ic"], ["ful", ""], ["ness", ""]
  ];
  var STEP4 = [
    "al", "ance", "ence", "er", "ic", "able", "ible", "ant", "ement", "ment", "ent", "ion", "ou", "ism",
    "ate", "iti", "ous", "ive", "ize"
  ];
  var stems = new Map();

  function length(w) { return w.length <= MAX_WORD ? w.length : Array.from(w).length; }

  function words(text) {
    return (text.toLowerCase().match(WORD) || []).filter(function (w) { return length(w) <= MAX_WORD; });
  }

  function stem(word) {
    var got = stems.get(word);
    if (got === undefined) {
      got = word.length > 2 && ASCII_WORD.test(word) ? porter(word) : word;
      if (stems.size > 200000) stems.clear();
      stems.set(word, got);
    }
    return got;
  }

  function cons(w, i) {
    var c = w.charAt(i);
    if (c === "a" || c === "e" || c === "i" || c === "o" || c === "u") return false;
    if (c === "y") return i === 0 || !cons(w, i - 1);
    return true;
  }

  function measure(w) {
    var n = 0, i = 0, end = w.length;
    while (i < end && cons(w, i)) i++;
    while (i < end) {
      while (i < end && !cons(w, i)) i++;
      if (i >= end) break;
      while (i < end && cons(w, i)) i++;
      n++;
    }
    return n;
  }

  function hasVowel(w) {
    for (var i = 0; i < w.length; i++) if (!cons(w, i)) return true;
    return false;
  }

  function dbl(w) { var n = w.length; return n >= 2 && w[n - 1] === w[n - 2] && cons(w, n - 1); }

  function cvc(w) {
    var n = w.length;
    return n >= 3 && cons(w, n - 3) && !cons(w, n - 2) && cons(w, n - 1) && "wxy".indexOf(w[n - 1]) < 0;
  }

  function cut(w, n) { return w.slice(0, w.length - n); }

  function porter(w) {
    if (w.endsWith("sses") || w.endsWith("ies")) w = cut(w, 2);
    else if (w.endsWith("s") && !w.endsWith("ss")) w = cut(w, 1);
    if (w.endsWith("eed")) {
      if (measure(cut(w, 3)) > 0) w = cut(w, 1);
    } else {
      var n = w.endsWith("ed") ? 2 : w.endsWith("ing") ? 3 : 0;
      if (n && hasVowel(cut(w, n))) {
        w = cut(w, n);
        if (w.endsWith("at") || w.endsWith("bl") || w.endsWith("iz")) w += "e";
        else if (dbl(w) && "lsz".indexOf(w[w.length - 1]) < 0) w = cut(w, 1);
        else if (measure(w) === 1 && cvc(w)) w += "e";
      }
    }
    if (w.endsWith("y") && hasVowel(cut(w, 1))) w = cut(w, 1) + "i";
    [STEP2, STEP3].forEach(function (table) {
      for (var i = 0; i < table.length; i++) {
        var suffix = table[i][0];
        if (w.endsWith(suffix)) {
          if (measure(cut(w, suffix.length)) > 0) w = cut(w, suffix.length) + table[i][1];
          break;
        }
      }
    });
    for (var j = 0; j < STEP4.length; j++) {
      if (w.endsWith(STEP4[j])) {
        var base = cut(w, STEP4[j].length);
        if (STEP4[j] === "ion" && !(base.endsWith("s") || base.endsWith("t"))) continue;
        if (measure(base) > 1) w = base;
        break;
      }
    }
    if (w.endsWith("e")) {
      var m = measure(cut(w, 1));
      if (m > 1 || (m === 1 && !cvc(cut(w, 1)))) w = cut(w, 1);
    }
    if (measure(w) > 1 && dbl(w) && w.endsWith("l")) w = cut(w, 1);
    return w;
  }

  /* the bucket that holds a word: the last whose first word is not after it (search.shard_files
     orders words as JavaScript compares strings) */
  function bucket(starts, w) {
    var lo = 0, hi = starts.length - 1, at = 0;
    while (lo <= hi) {
      var mid = (lo + hi) >> 1;
      if (starts[mid] <= w) { at = mid; lo = mid + 1; } else { hi = mid - 1; }
    }
    return at;
  }

  /* ---- the query: words (all required), "quoted phrases", word* prefixes; the word being typed
     is a prefix too ---- */
  function parse(q) {
    /* seen: a Set, not {}: "constructor" was seen before it was (Object.prototype's) and dropped */
    var terms = [], seen = new Set(), re = /"([^"]*)"?|[^\s"]+/g, m, last = null;
    while ((m = re.exec(q)) !== null) {
      var quoted = m[1] !== undefined, raw = quoted ? m[1] : m[0], ws = words(raw);
      if (!ws.length) continue;
      var t = { words: ws, stems: ws.map(stem), prefix: false };
      if (!quoted && ws.length === 1 && /\*$/.test(raw) && ws[0].length >= 2) t.prefix = true;
      var key = t.stems.join(" ") + (t.prefix ? "*" : "");
      last = quoted ? null : t;
      if (seen.has(key)) continue;
      seen.add(key);
      terms.push(t);
    }
    if (last && last === terms[terms.length - 1] && last.words.length === 1 && last.words[0].length >= 3 &&
        !/[\s"*]$/.test(q)) last.prefix = true;
    return terms;
  }

  /* a word's postings in a shard: [[page, [section, length, heading length, first position,
     deltas…], …], …] -> [[page, entry], …] */
  function entries(dict, w) {
    var out = [];
    /* its own words only: dict["constructor"] is Object's, whose forEach broke the search */
    (Object.prototype.hasOwnProperty.call(dict, w) ? dict[w] : []).forEach(function (pe) {
      for (var j = 1; j < pe.length; j++) out.push([pe[0], pe[j]]);
    });
    return out;
  }

  function positions(e) {
    var out = [], p = 0;
    for (var i = 3; i < e.length; i++) { p = i === 3 ? e[i] : p + e[i]; out.push(p); }
    return out;
  }

  /* one term in one shard (dict: the words of the buckets loaded): section ("page,section") ->
     {page, sec, len, hl, head, body} */
  function hits(term, dict) {
    var out = new Map();
    function add(pe, weight, at) {
      var page = pe[0], e = pe[1], k = page + "," + e[0], h = out.get(k);
      if (!h) { h = { page: page, sec: e[0], len: e[1], hl: e[2], head: 0, body: 0 }; out.set(k, h); }
      at.forEach(function (p) { if (p < e[2]) h.head += weight; else h.body += weight; });
    }
    if (term.stems.length === 1) {
      var s = term.stems[0], w = term.words[0];
      entries(dict, s).forEach(function (pe) { add(pe, 1, positions(pe[1])); });
      if (term.prefix) {
        Object.keys(dict).forEach(function (k) {
          if (k !== s && (k.indexOf(w) === 0 || k.indexOf(s) === 0)) {
            entries(dict, k).forEach(function (pe) { add(pe, 0.7, positions(pe[1])); });
          }
        });
      }
      return out;
    }
    /* a phrase: the words at consecutive positions of one section */
    var at = term.stems.map(function (st) {
      var m = new Map();
      entries(dict, st).forEach(function (pe) { m.set(pe[0] + "," + pe[1][0], pe); });
      return m;
    });
    at[0].forEach(function (e, k) {
      var sets = [];
      for (var i = 1; i < at.length; i++) {
        var o = at[i].get(k);
        if (!o) return;
        sets.push(new Set(positions(o[1])));
      }
      var starts = positions(e[1]).filter(function (p) {
        return sets.every(function (set, i) { return set.has(p + i + 1); });
      });
      if (starts.length) add(e, 1, starts);
    });
    return out;
  }

  var K1 = 1.2, B = 0.75;
  var HEADING = 4, TITLE = 2;  /* a word in a section's heading (the page's own: its title) weighs more */
  var NAMED = 3;  /* a section whose heading holds every term: the place the query is about */

  function Index(base, getJson) {
    this.base = base;
    this.getJson = getJson;
    this.files = new Map();
  }

  Index.prototype.json = function (rel) {
    var files = this.files, p = files.get(rel);
    if (!p) {
      // the two files whose names stay across builds (shards.json, a shard's meta.json) are
      // revalidated; the buckets and fragment packs they name are named by their content
      p = this.getJson(this.base + rel, /(^|\/)(shards|meta)\.json$/.test(rel));
      files.set(rel, p);
      p.catch(function () { files.delete(rel); });
    }
    return p;
  };

  Index.prototype.warm = function () { return this.json("shards.json"); };

  Index.prototype.search = function (q, limit) {
    var self = this, terms = parse(q);
    if (!terms.length) return Promise.resolve([]);
    return this.json("shards.json").then(function (manifest) {
      var shards = manifest.shards;
      return Promise.all(shards.map(function (s) {
        /* the buckets of the query's words (a prefix: every bucket its words can be in) */
        if (!s.starts.length) return Promise.resolve({});
        var want = new Set();
        terms.forEach(function (t) {
          t.stems.forEach(function (st) { want.add(bucket(s.starts, st)); });
          if (t.prefix) {
            [t.words[0], t.stems[0]].forEach(function (pre) {
              for (var b = bucket(s.starts, pre), last = bucket(s.starts, pre + "\uffff"); b <= last; b++) {
                want.add(b);
              }
            });
          }
        });
        return Promise.all(Array.from(want).sort(function (a, b) { return a - b; }).map(function (b) {
          return self.json(s.bundle + "b/" + s.buckets[b] + ".json");
        })).then(function (loaded) { return Object.assign.apply(null, [{}].concat(loaded)); });
      })).then(function (dicts) { return rank(shards, dicts, terms); });
    }).then(function (ranked) {
      return Promise.all(ranked.slice(0, limit).map(function (r) { return self.result(r, terms); }));
    });
  };

  function rank(shards, dicts, terms) {
    var n = 0, total = 0;
    shards.forEach(function (s) { n += s.sections; total += s.words; });
    var avg = n ? total / n : 1;
    var perTerm = terms.map(function (t) {
      var got = dicts.map(function (dict) { return hits(t, dict); });
      var df = got.reduce(function (a, m) { return a + m.size; }, 0);
      return { idf: Math.log(1 + (n - df + 0.5) / (df + 0.5)), got: got };
    });
    var pages = new Map();
    shards.forEach(function (s, si) {
      var secs = new Map();
      perTerm.forEach(function (pt, ti) {
        pt.got[si].forEach(function (h, k) {
          var tf = h.body + (h.sec === 0 ? TITLE : HEADING) * h.head;
          var bm = pt.idf * tf * (K1 + 1) / (tf + K1 * (1 - B + B * h.len / avg));
          var sec = secs.get(k);
          if (!sec) { sec = { shard: si, page: h.page, sec: h.sec, score: 0, terms: 0, named: 0 }; secs.set(k, sec); }
          sec.score += bm;
          sec.terms += 1;
          if (h.head > 0) sec.named += 1;
          var pk = si + "," + h.page, page = pages.get(pk);
          if (!page) { page = { found: new Set(), best: null }; pages.set(pk, page); }
          page.found.add(ti);
        });
      });
      secs.forEach(function (sec) {
        sec.rank = sec.score * (sec.terms / terms.length) * (sec.sec > 0 && sec.named === terms.length ? NAMED : 1);
        var page = pages.get(si + "," + sec.page);
        if (!page.best || sec.rank > page.best.rank) page.best = sec;
      });
    });
    var out = [];
    pages.forEach(function (p) { if (p.found.size === terms.length) out.push(p.best); });
    out.sort(function (a, b) { return b.rank - a.rank || a.shard - b.shard || a.page - b.page; });
    return out.map(function (sec) { return { bundle: shards[sec.shard].bundle, page: sec.page, sec: sec.sec }; });
  }

  Index.prototype.result = function (r, terms) {
    var self = this;
    return this.json(r.bundle + "meta.json").then(function (meta) {
      // the fragment file holding the page: the last one starting at or before it
      var k = meta.first.length - 1;
      while (k > 0 && meta.first[k] > r.page) k--;
      return self.json(r.bundle + "f/" + meta.packs[k] + ".json").then(function (pack) {
        return pack[r.page - meta.first[k]];
      });
    }).then(function (frag) {
      var sec = frag.s[r.sec] || ["", frag.t, ""];
      return {
        page: shown(frag.t),
        heading: shown(sec[1]),
        url: frag.u + (sec[0] ? "#" + sec[0] : ""),
        excerpt: excerpt(sec[2], matcher(terms), 24).map(function (p) {
          return { text: shown(p.text), mark: p.mark };
        })
      };
    });
  };

  function matcher(terms) {
    var exact = new Set(), pre = [];
    terms.forEach(function (t) {
      t.stems.forEach(function (s) { exact.add(s); });
      if (t.prefix) pre.push(t.words[0]);
    });
    return function (w) {
      if (length(w) > MAX_WORD) return false;
      var s = stem(w);
      return exact.has(s) || pre.some(function (p) { return w.indexOf(p) === 0 || s.indexOf(p) === 0; });
    };
  }

  /* what a result shows of a page's text: bidi controls removed (a U+202E in a heading reversed the
     rest of the result) and each part cut to SHOWN characters (one 200 KB "word" was one excerpt) */
  var BIDI = /[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/g, SHOWN = 300;
  function shown(text) {
    text = String(text).replace(BIDI, "");
    return text.length > SHOWN ? text.slice(0, SHOWN) + "\u2026" : text;
  }

  /* about ``size`` words of the text around its first match: [{text, mark}] */
  function excerpt(text, match, size) {
    var toks = [], re = new RegExp(WORD.source, WORD.flags), m, first = -1;  /* words as words() cuts them */
    while ((m = re.exec(text)) !== null && toks.length < 50000) {
      var hit = match(m[0].toLowerCase());
      if (hit && first < 0) first = toks.length;
      toks.push([m.index, m.index + m[0].length, hit]);
    }
    if (!toks.length) return [];
    var start = Math.max(0, Math.min(first - 6, toks.length - size));
    var end = Math.min(toks.length, start + size), parts = [], at = toks[start][0];
    if (start > 0) parts.push({ text: "\u2026 ", mark: false });
    for (var i = start; i < end; i++) {
      if (!toks[i][2]) continue;
      if (toks[i][0] > at) parts.push({ text: text.slice(at, toks[i][0]), mark: false });
      parts.push({ text: text.slice(toks[i][0], toks[i][1]), mark: true });
      at = toks[i][1];
    }
    var stop = end < toks.length ? toks[end - 1][1] : text.length;
    if (stop > at) parts.push({ text: text.slice(at, stop), mark: false });
    if (end < toks.length) parts.push({ text: " \u2026", mark: false });
    return parts;
  }

  var api = {
    open: function (base, getJson) { return new Index(base, getJson); },
    words: words,
    stem: stem,
    parse: parse
  };
  if (typeof module === "object" && module.exports) module.exports = api;
  else root.SiteSearch = api;
})(this);
