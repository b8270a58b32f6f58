// claimledger explorer: checks, in the reader's browser, the inclusion proofs and the signed
// checkpoint that a claim page shows (RFC 6962 / 9162 hashes, C2SP signed-note). Nothing is
// fetched: everything checked is in the page itself. The result is written into the page.
"use strict";

(function () {
  var data = document.getElementById("proof-data");
  if (!data) {
    return;
  }

  // --- SHA-256 -----------------------------------------------------------------------------
  // WebCrypto's digest exists only in secure contexts (https, localhost); elsewhere, and when
  // the page's address ends in #own-sha256, this small implementation (FIPS 180-4) is used.
  var K = new Uint32Array([
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2
  ]);

  function ownSha256(msg) {
    var len = msg.length;
    var padded = new Uint8Array(((len + 9 + 63) >> 6) << 6);
    padded.set(msg);
    padded[len] = 0x80;
    var bits = len * 8;
    var view = new DataView(padded.buffer);
    view.setUint32(padded.length - 8, Math.floor(bits / 0x100000000));
    view.setUint32(padded.length - 4, bits >>> 0);
    var h = new Uint32Array([
      0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19
    ]);
    var w = new Uint32Array(64);
    for (var off = 0; off < padded.length; off += 64) {
      for (var i = 0; i < 16; i++) {
        w[i] = view.getUint32(off + 4 * i);
      }
      for (i = 16; i < 64; i++) {
        var x = w[i - 15], y = w[i - 2];
        var s0 = ((x >>> 7) | (x << 25)) ^ ((x >>> 18) | (x << 14)) ^ (x >>> 3);
        var s1 = ((y >>> 17) | (y << 15)) ^ ((y >>> 19) | (y << 13)) ^ (y >>> 10);
        w[i] = (w[i - 16] + s0 + w[i - 7] + s1) | 0;
      }
      var a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], hh = h[7];
      for (i = 0; i < 64; i++) {
        var S1 = ((e >>> 6) | (e << 26)) ^ ((e >>> 11) | (e << 21)) ^ ((e >>> 25) | (e << 7));
        var ch = (e & f) ^ (~e & g);
        var t1 = (hh + S1 + ch + K[i] + w[i]) | 0;
        var S0 = ((a >>> 2) | (a << 30)) ^ ((a >>> 13) | (a << 19)) ^ ((a >>> 22) | (a << 10));
        var maj = (a & b) ^ (a & c) ^ (b & c);
        var t2 = (S0 + maj) | 0;
        hh = g; g = f; f = e; e = (d + t1) | 0;
        d = c; c = b; b = a; a = (t1 + t2) | 0;
      }
      h[0] += a; h[1] += b; h[2] += c; h[3] += d;
      h[4] += e; h[5] += f; h[6] += g; h[7] += hh;
    }
    var out = new Uint8Array(32);
    var ov = new DataView(out.buffer);
    for (i = 0; i < 8; i++) {
      ov.setUint32(4 * i, h[i]);
    }
    return out;
  }

  var useWebCrypto = !!(window.crypto && window.crypto.subtle) &&
    window.location.hash !== "#own-sha256";

  function sha256(bytes) {
    if (useWebCrypto) {
      return window.crypto.subtle.digest("SHA-256", bytes).then(function (d) {
        return new Uint8Array(d);
      });
    }
    return Promise.resolve(ownSha256(bytes));
  }

  // --- bytes -------------------------------------------------------------------------------
  function concat() {
    var n = 0, i;
    for (i = 0; i < arguments.length; i++) n += arguments[i].length;
    var out = new Uint8Array(n), at = 0;
    for (i = 0; i < arguments.length; i++) {
      out.set(arguments[i], at);
      at += arguments[i].length;
    }
    return out;
  }
  function fromHex(s) {
    if (s.length % 2 !== 0 || /[^0-9a-f]/i.test(s)) throw new Error("not hex: " + s);
    var out = new Uint8Array(s.length / 2);
    for (var i = 0; i < out.length; i++) out[i] = parseInt(s.substr(2 * i, 2), 16);
    return out;
  }
  function toHex(b) {
    var s = "";
    for (var i = 0; i < b.length; i++) s += (b[i] < 16 ? "0" : "") + b[i].toString(16);
    return s;
  }
  function fromBase64(s) {
    var bin = atob(s), out = new Uint8Array(bin.length);
    for (var i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out;
  }
  function equal(a, b) {
    if (a.length !== b.length) return false;
    for (var i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
    return true;
  }
  var utf8 = new TextEncoder();

  // --- RFC 6962 / 9162 ---------------------------------------------------------------------
  function leafHash(entry) {
    return sha256(concat(new Uint8Array([0]), entry));
  }
  function nodeHash(l, r) {
    return sha256(concat(new Uint8Array([1]), l, r));
  }

  // RFC 9162 §2.1.3.2: the root an inclusion proof leads to, or an error.
  function rootFromProof(index, size, leaf, proof) {
    if (index >= size) return Promise.reject(new Error("index beyond the tree"));
    var fn = index, sn = size - 1, i = 0;
    function step(r) {
      if (i === proof.length) {
        if (sn !== 0) return Promise.reject(new Error("the proof is too short"));
        return Promise.resolve(r);
      }
      if (sn === 0) return Promise.reject(new Error("the proof is too long"));
      var p = proof[i++];
      var next;
      if (fn % 2 === 1 || fn === sn) {
        next = nodeHash(p, r);
        if (fn % 2 === 0) {
          while (fn % 2 === 0 && fn !== 0) {
            fn = Math.floor(fn / 2);
            sn = Math.floor(sn / 2);
          }
        }
      } else {
        next = nodeHash(r, p);
      }
      fn = Math.floor(fn / 2);
      sn = Math.floor(sn / 2);
      return next.then(step);
    }
    return step(leaf);
  }

  // --- C2SP signed-note and tlog-checkpoint --------------------------------------------------
  function parseNote(note) {
    var blank = note.indexOf("\n\n");
    if (blank < 0) throw new Error("the checkpoint note has no signature block");
    var text = note.slice(0, blank + 1);
    var lines = text.split("\n");
    if (lines.length < 4) throw new Error("the checkpoint has too few lines");
    var size = Number(lines[1]);
    if (!/^[0-9]+$/.test(lines[1]) || !Number.isSafeInteger(size)) {
      throw new Error("the checkpoint's size line is not a number");
    }
    var root = fromBase64(lines[2]);
    if (root.length !== 32) throw new Error("the checkpoint's root is not 32 bytes");
    var sigs = note.slice(blank + 2).split("\n").filter(function (l) {
      return l.length > 0;
    }).map(function (l) {
      var m = /^\u2014 (\S+) (\S+)$/.exec(l);
      if (!m) throw new Error("a signature line is malformed");
      return { name: m[1], blob: fromBase64(m[2]) };
    });
    return { text: text, origin: lines[0], size: size, root: root, sigs: sigs };
  }

  // The verifier key `name+hash+base64(0x01 ‖ public key)`, with its key hash recomputed:
  // the first 4 bytes of SHA-256(name ‖ "\n" ‖ 0x01 ‖ public key).
  function parseVerifier(vkey) {
    // The name has no "+"; the base64 key may.
    var first = vkey.indexOf("+"), second = vkey.indexOf("+", first + 1);
    if (first <= 0 || second < 0) {
      return Promise.reject(new Error("the verifier key is malformed"));
    }
    var parts = [vkey.slice(0, first), vkey.slice(first + 1, second), vkey.slice(second + 1)];
    var raw = fromBase64(parts[2]);
    if (raw.length !== 33 || raw[0] !== 1) throw new Error("the verifier key is not Ed25519");
    return sha256(concat(utf8.encode(parts[0] + "\n"), raw)).then(function (h) {
      var hash = h.slice(0, 4);
      if (toHex(hash) !== parts[1].toLowerCase()) {
        throw new Error("the verifier key's hash does not match its key");
      }
      return { name: parts[0], hash: hash, key: raw.slice(1) };
    });
  }

  function checkSignature(note, vkey) {
    return parseVerifier(vkey).then(function (v) {
      var sig = null;
      note.sigs.forEach(function (s) {
        if (s.name === v.name && s.blob.length === 68 && equal(s.blob.slice(0, 4), v.hash)) {
          sig = s.blob.slice(4);
        }
      });
      if (!sig) return { checked: true, ok: false, why: "no signature by " + v.name };
      if (!(window.crypto && window.crypto.subtle)) {
        return { checked: false, why: "WebCrypto is not available (not a secure context)" };
      }
      return window.crypto.subtle.importKey("raw", v.key, { name: "Ed25519" }, false, ["verify"])
        .then(function (key) {
          return window.crypto.subtle.verify({ name: "Ed25519" }, key, sig, utf8.encode(note.text));
        }, function () {
          return null;
        })
        .then(function (ok) {
          if (ok === null) {
            return { checked: false, why: "this browser's WebCrypto has no Ed25519" };
          }
          return { checked: true, ok: ok, why: ok ? "" : "the signature does not verify" };
        });
    });
  }

  // --- the page ----------------------------------------------------------------------------
  function setCell(index, ok, text) {
    var cell = document.getElementById("proof-" + index);
    if (!cell) return;
    cell.textContent = text;
    cell.setAttribute("data-result", ok ? "ok" : "failed");
    cell.className = "proof-check " + (ok ? "ok" : "failed");
  }

  function note(text) {
    var li = document.createElement("li");
    li.textContent = text;
    document.getElementById("proof-notes").appendChild(li);
  }

  function checkEntry(e, cp) {
    var bytes = fromBase64(e.data);
    var proof = e.proof.map(fromHex);
    return leafHash(bytes).then(function (leaf) {
      if (toHex(leaf) !== e.leaf_hash) {
        throw new Error("its bytes hash to " + toHex(leaf) + ", not the leaf hash shown");
      }
      return rootFromProof(e.index, cp.size, leaf, proof);
    }).then(function (root) {
      if (!equal(root, cp.root)) {
        throw new Error("the proof leads to root " + toHex(root) +
          ", not the checkpoint's " + toHex(cp.root));
      }
      setCell(e.index, true, "included: proof checked");
      return true;
    }).catch(function (err) {
      setCell(e.index, false, "FAILED: " + err.message);
      return false;
    });
  }

  function run() {
    var summary = document.getElementById("proof-summary");
    var d = JSON.parse(data.textContent);
    var how = useWebCrypto ? "SHA-256 by WebCrypto" : "SHA-256 by this page's own code";
    var cp;
    try {
      cp = parseNote(d.checkpoint);
    } catch (err) {
      summary.textContent = "Inclusion proof check FAILED: " + err.message + ".";
      summary.setAttribute("data-result", "failed");
      return;
    }
    if (cp.size !== d.size) {
      summary.textContent = "Inclusion proof check FAILED: the checkpoint is for size " +
        cp.size + ", the page for size " + d.size + ".";
      summary.setAttribute("data-result", "failed");
      return;
    }
    Promise.all(d.entries.map(function (e) {
      return checkEntry(e, cp);
    })).then(function (results) {
      var failed = results.filter(function (r) { return !r; }).length;
      if (failed === 0) {
        var which = results.length === 1 ? "this claim's one entry is" :
          "all " + results.length + " entries of this claim are";
        summary.textContent = "Inclusion proofs verified in your browser: " + which +
          " in the log of size " + cp.size +
          " whose root the signed checkpoint below states (" + how + ").";
        summary.setAttribute("data-result", "ok");
        summary.className = "proof-summary ok";
      } else {
        summary.textContent = "Inclusion proof check FAILED for " + failed + " of " +
          results.length + " entries: the page's entries are not all in the checkpoint's tree (" +
          how + ").";
        summary.setAttribute("data-result", "failed");
        summary.className = "proof-summary failed";
      }
      return checkSignature(cp, d.verifier_key);
    }).catch(function (err) {
      return { checked: true, ok: false, why: err.message };
    }).then(function (sig) {
      var sigEl = document.createElement("li");
      sigEl.id = "signature-check";
      if (!sig.checked) {
        sigEl.textContent = "Checkpoint signature: not checked (" + sig.why + ").";
        sigEl.setAttribute("data-result", "unchecked");
      } else if (sig.ok) {
        sigEl.textContent = "Checkpoint signature: verified (Ed25519, WebCrypto) with the verifier key shown.";
        sigEl.setAttribute("data-result", "ok");
      } else {
        sigEl.textContent = "Checkpoint signature: FAILED (" + sig.why + ").";
        sigEl.setAttribute("data-result", "failed");
      }
      document.getElementById("proof-notes").appendChild(sigEl);
    }).then(function () {
      note("Not checked here: that the verifier key is the log's (it came from this server; " +
        "compare it with one you got elsewhere), that this checkpoint is consistent with the " +
        "ones you saw before, and any witness cosignatures.");
    });
  }

  run();
})();
