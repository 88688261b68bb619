// The context builder (/context/): user data for a CernVM, checked in the browser.
// The key rules come from the page (#context-keys: cernvm_build.table.rules() of the bootloader's
// table, embedded at build time), and the checks below follow cernvm_build.table.from_text step by
// step, with its messages, so the page refuses what cernvm-launch refuses, in the same words.
// Nothing here sends a request: the file is made and downloaded in the page.
(function () {
  "use strict";

  // Python's repr() of a str, as the table's messages quote values.
  function pyrepr(s) {
    var quote = s.indexOf("'") >= 0 && s.indexOf('"') < 0 ? '"' : "'";
    var out = "";
    for (var i = 0; i < s.length; i++) {
      var c = s[i], code = s.charCodeAt(i);
      if (c === "\\") out += "\\\\";
      else if (c === quote) out += "\\" + c;
      else if (c === "\n") out += "\\n";
      else if (c === "\r") out += "\\r";
      else if (c === "\t") out += "\\t";
      else if (code < 0x20 || code === 0x7f) out += "\\x" + ("0" + code.toString(16)).slice(-2);
      else out += c;
    }
    return quote + out + quote;
  }

  function invalid(message, hint) {
    return { ok: false, message: message, hint: hint };
  }

  // Python's str.strip() for what users type (spaces, tabs, line ends).
  function strip(s) {
    return s.replace(/^[\s\u001c-\u001f\u0085]+|[\s\u001c-\u001f\u0085]+$/g, "");
  }

  function fullmatch(pattern, text) {
    return new RegExp("^(?:" + pattern + ")$").test(text);
  }

  function unquote(v) {
    var q = v[0];
    return v.length >= 2 && q === v[v.length - 1] && (q === "'" || q === '"') ? v.slice(1, -1) : v;
  }

  // bootloader.userdata.check(key, unquote(value)) -> the value as the init reads it, or the refusal.
  function check(rule, raw) {
    var text = unquote(strip(raw));
    var h = rule.hints;
    if (rule.kind === "boolean") {
      var low = strip(text).toLowerCase();
      if (rule.true_words.indexOf(low) >= 0) return { ok: true, value: "1" };
      if (rule.false_words.indexOf(low) >= 0) return { ok: true, value: "0" };
      return invalid(pyrepr(strip(text)) + " is not on/off", h.bool);
    }
    if (rule.kind === "integer") {
      if (!/^\s*[-+]?[0-9]+\s*$/.test(text)) return invalid(pyrepr(strip(text)) + " is not a whole number", h.integer);
      var n = parseInt(strip(text), 10);
      if ((rule.minimum !== null && n < rule.minimum) || (rule.maximum !== null && n > rule.maximum)) {
        return invalid(String(n) + " is out of range", h.range);
      }
      return { ok: true, value: String(n) };
    }
    text = strip(text);
    if (!text && !rule.pattern) return invalid("must not be empty", h.empty);
    for (var i = 0; i < rule.unsupported.length; i++) {
      if (rule.unsupported[i][0] === text) return invalid(pyrepr(text) + " is not supported: " + rule.unsupported[i][1], h.choose);
    }
    if (rule.choices.length && rule.choices.indexOf(text) < 0) return invalid("unknown value " + pyrepr(text), h.choose);
    if (rule.pattern && !fullmatch(rule.pattern, text)) {
      return invalid(text ? "invalid value " + pyrepr(text) : "must not be empty", h.expected);
    }
    if (rule.key === "cvmfs_date" && text) return snapshotDate(text);
    return { ok: true, value: text };
  }

  // bootloader.userdata.snapshot_date: the mount's one form (YYYY-MM-DDTHH:MM:SSZ), a calendar date.
  function snapshotDate(text) {
    var m = /^([0-9]{4})-([0-9]{2})-([0-9]{2})(?:[T ]([0-9]{2}):([0-9]{2})(?::([0-9]{2}))?)?Z?$/.exec(text);
    var f = m ? m.slice(1).map(function (x) { return x === undefined ? 0 : parseInt(x, 10); }) : null;
    var d = f ? new Date(0) : null;
    if (d) { d.setUTCFullYear(f[0], f[1] - 1, f[2]); d.setUTCHours(f[3], f[4], f[5]); }
    if (!d || f[0] < 1 || d.getUTCFullYear() !== f[0] || d.getUTCMonth() !== f[1] - 1 || d.getUTCDate() !== f[2] ||
        d.getUTCHours() !== f[3] || d.getUTCMinutes() !== f[4] || d.getUTCSeconds() !== f[5]) {
      return invalid(pyrepr(text) + " is not a date", "e.g. 2021-01-15 or 2021-01-15T10:30:00 (UTC)");
    }
    function two(n) { return ("0" + n).slice(-2); }
    return { ok: true, value: ("000" + f[0]).slice(-4) + "-" + two(f[1]) + "-" + two(f[2]) + "T" + two(f[3]) + ":" + two(f[4]) + ":" + two(f[5]) + "Z" };
  }

  // Not in the bootloader's table (cloud-config): the page's own light checks.
  var SSH_KEY = /^(ssh-(ed25519|rsa|dss)|ecdsa-sha2-nistp(256|384|521)|sk-(ssh-ed25519|ecdsa-sha2-nistp256)@openssh\.com) [A-Za-z0-9+/]+={0,3}( [^\r\n]*)?$/;
  var HOSTNAME = /^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;

  function render(block, hostname, keys, script) {
    var parts = [];
    var names = Object.keys(block);
    if (names.length) {
      var lines = ["[ucernvm-begin]"];
      names.forEach(function (k) { lines.push(k + "=" + block[k]); });
      lines.push("[ucernvm-end]");
      parts.push(["text/ucernvm", "ucernvm", lines.join("\n") + "\n"]);
    }
    if (hostname || keys.length) {
      // JSON strings are YAML double-quoted scalars: a '#' or ': ' in a key comment stays text.
      var cc = "#cloud-config\n";
      if (hostname) cc += "hostname: " + JSON.stringify(hostname) + "\n";
      if (keys.length) cc += "ssh_authorized_keys:\n" + keys.map(function (k) { return "  - " + JSON.stringify(k) + "\n"; }).join("");
      parts.push(["text/cloud-config", "cloud-config", cc]);
    }
    if (script) parts.push(["text/x-shellscript", "first-boot.sh", script.replace(/\r\n/g, "\n").replace(/\n*$/, "\n")]);
    if (!parts.length) return "";
    var rnd = new Uint8Array(12);
    crypto.getRandomValues(rnd);
    var boundary = "==cernvm-online-" + Array.prototype.map.call(rnd, function (b) { return ("0" + b.toString(16)).slice(-2); }).join("") + "==";
    var out = ['Content-Type: multipart/mixed; boundary="' + boundary + '"', "MIME-Version: 1.0", ""];
    parts.forEach(function (p) {
      var ascii = /^[\x00-\x7f]*$/.test(p[2]);
      out.push("--" + boundary);
      out.push('Content-Type: ' + p[0] + '; charset="' + (ascii ? "us-ascii" : "utf-8") + '"\nMIME-Version: 1.0\n' +
        "Content-Transfer-Encoding: " + (ascii ? "7bit" : "8bit") + '\nContent-Disposition: attachment; filename="' + p[1] + '"\n\n' + p[2]);
    });
    out.push("--" + boundary + "--\n");
    return out.join("\n");
  }

  function start() {
    var tableEl = document.getElementById("context-keys");
    var form = document.getElementById("context-form");
    if (!tableEl || !form) return;
    var rules = {};
    JSON.parse(tableEl.textContent).forEach(function (r) { rules[r.key] = r; });
    window.cernvmContextCheck = function (key, value) { return check(rules[key], value); };  // for tests
    var output = document.getElementById("cb-output");
    var status = document.getElementById("cb-status");
    var button = document.getElementById("cb-download");
    var current = "";

    function show(id, problem) {
      var el = document.getElementById(id + "-error");
      var field = document.getElementById(id);
      el.textContent = problem || "";
      field.setAttribute("aria-invalid", problem ? "true" : "false");
    }

    function update() {
      var problems = 0, block = {};
      form.querySelectorAll("[data-key]").forEach(function (field) {
        var key = field.getAttribute("data-key");
        if (!strip(field.value)) { show(field.id, ""); return; }
        var r = check(rules[key], field.value);
        if (r.ok) { block[key] = r.value; show(field.id, ""); }
        else { problems++; show(field.id, key + ": " + r.message + " (hint: " + r.hint + ")"); }
      });
      var keys = [], bad = [];
      document.getElementById("cb-ssh-keys").value.split(/\r?\n/).forEach(function (line, i) {
        line = strip(line);
        if (!line) return;
        if (SSH_KEY.test(line)) keys.push(line); else bad.push(i + 1);
      });
      show("cb-ssh-keys", bad.length ? "line " + bad.join(", ") + ": not an SSH public key (hint: paste a line of ~/.ssh/id_ed25519.pub)" : "");
      problems += bad.length;
      var host = strip(document.getElementById("cb-hostname").value);
      var hostBad = host && (host.length > 253 || !HOSTNAME.test(host));
      show("cb-hostname", hostBad ? "hostname: invalid value " + pyrepr(host) + " (hint: letters, digits and '-', labels joined by '.')" : "");
      if (hostBad) problems++;
      var script = document.getElementById("cb-script").value;
      var scriptBad = "";
      if (strip(script) && !/^#!/.test(script)) scriptBad = "script: must start with #! (hint: e.g. #!/bin/sh)";
      else if (/^\s*\[ucernvm-(begin|end)\]\s*$/m.test(script)) scriptBad = "script: holds a [ucernvm-begin]/[ucernvm-end] line (hint: set bootloader keys in the fields above)";
      show("cb-script", scriptBad);
      if (scriptBad) problems++;
      current = problems ? "" : render(block, host, keys, strip(script) ? script : "");
      output.textContent = current;
      button.disabled = !current;
      status.textContent = problems ? problems + " value(s) to correct before the file can be made."
        : current ? "Ready: " + Object.keys(block).length + " bootloader key(s), " + keys.length + " SSH key(s)."
        : "Fill in at least one value.";
    }

    form.addEventListener("input", update);
    form.addEventListener("change", update);
    form.addEventListener("submit", function (e) { e.preventDefault(); });
    button.addEventListener("click", function () {
      if (!current) return;
      var url = URL.createObjectURL(new Blob([current], { type: "text/plain" }));
      var a = document.createElement("a");
      a.href = url;
      a.download = "user-data.txt";
      document.body.appendChild(a);
      a.click();
      a.remove();
      setTimeout(function () { URL.revokeObjectURL(url); }, 1000);
    });
    update();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
