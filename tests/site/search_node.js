// Runs the site's search script (static/assets/search.js) under node over a built index, as a browser
// would: `node search_node.js SCRIPT INDEX_DIR` reads {"queries": [[q, limit]...], "words": [...]} on
// stdin and prints {"results": [...], "stems": [...], "words": [...], "fetched": [[file, fresh]...]}
// (used by tests/site and bench/site_search.py).
"use strict";
const fs = require("fs");
const path = require("path");
const engine = require(path.resolve(process.argv[2]));
const dir = process.argv[3];
const input = JSON.parse(fs.readFileSync(0, "utf8"));
let loaded = 0;  // bytes of index files read so far (each once, as the script caches them)
const fetched = [];  // each file the script asked for, and whether it asked for it revalidated
const index = engine.open("", (rel, fresh) => new Promise((resolve, reject) => {
  fetched.push([rel, Boolean(fresh)]);
  fs.readFile(path.join(dir, rel), "utf8", (err, text) => {
    if (err) return reject(err);
    loaded += Buffer.byteLength(text);
    return resolve(JSON.parse(text));
  });
}));
(async () => {
  const results = [];
  for (const [q, limit] of input.queries || []) {
    const t = process.hrtime.bigint();
    const hits = await index.search(q, limit);
    results.push({ query: q, hits, ms: Number(process.hrtime.bigint() - t) / 1e6, loaded });
  }
  const stems = (input.words || []).map((w) => engine.stem(w));
  const words = (input.texts || []).map((t) => engine.words(t));
  process.stdout.write(JSON.stringify({ results, stems, words, fetched }));
})().catch((e) => { process.stderr.write(String(e && e.stack || e) + "\n"); process.exit(1); });
