
(function () {
  "use strict";
  var DATA = JSON.parse(document.getElementById("taskcam-data").textContent);
  var $ = function (id) { return document.getElementById(id); };
  var CARD_FIELDS = {};
  DATA.card_fields.forEach(function (k) { CARD_FIELDS[k] = true; });
  // a detection run against labels (--labels): its outcomes, else none
  var OUTCOMES = DATA.outcomes || [];
  var OUTCOME_WORDS = { hit: ["hit", "hits"], missed: ["missed", "missed"],
                        false_positive: ["false positive", "false positives"] };
  var REASONS = { below_conf: "below conf", suppressed: "suppressed",
                  wrong_class: "wrong class", no_candidate: "no candidate" };
  function outcomeName(o) { return OUTCOME_WORDS[o] ? OUTCOME_WORDS[o][0] : String(o); }
  function outcomeCount(o, n) {
    return n + " " + (OUTCOME_WORDS[o] ? OUTCOME_WORDS[o][n === 1 ? 0 : 1] : String(o));
  }

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) {
      if (k === "text") node.textContent = attrs[k];
      else if (k === "className") node.className = attrs[k];
      else node.setAttribute(k, attrs[k]);
    });
    (children || []).forEach(function (c) { if (c) node.appendChild(c); });
    return node;
  }
  function fmt(v) {
    if (v === null || v === undefined) return "\u2014";
    if (typeof v === "boolean") return v ? "yes" : "no";
    if (typeof v === "number") {
      if (Number.isInteger(v)) return String(v);
      return Math.abs(v) >= 1000 ? v.toFixed(1) : String(Number(v.toPrecision(4)));
    }
    if (Array.isArray(v)) return "[" + v.map(fmt).join(", ") + "]";
    if (typeof v === "object") return JSON.stringify(v);
    return String(v);
  }
  function num(v) {
    if (typeof v === "boolean") return v ? 1 : 0;
    return typeof v === "number" && isFinite(v) ? v : null;
  }
  // the first EAGER thumbnails load with the page (its load event waits for them, so a
  // headless browser's screenshot shows them); lazy ones load when scrolled to, never in a
  // screenshot taken at once
  var EAGER = 120;
  var pictures = 0;
  function picture(src, alt) {
    if (!src) return el("div", { className: "missing", text: "overlay file missing" });
    var attrs = { src: src, alt: alt };
    if (pictures++ >= EAGER) attrs.loading = "lazy";
    return el("img", attrs);
  }
  function rounded(box) {
    return box.map(function (v) { return typeof v === "number" ? Math.round(v * 10) / 10 : v; });
  }
  function has(t, k) { return t[k] !== undefined && t[k] !== null; }
  // a labelled run's rows: [shown name, value, field]
  function outcomeRows(t) {
    var rows = [];
    if (has(t, "label_class")) {
      rows.push(["label", t.label_class + (has(t, "label") ? " #" + t.label : ""),
                 "label_class"]);
    }
    if (Array.isArray(t.label_box)) rows.push(["label box", rounded(t.label_box), "label_box"]);
    if (has(t, "reason")) rows.push(["reason", REASONS[t.reason] || t.reason, "reason"]);
    if (has(t, "candidate_score")) {
      rows.push(["candidate score", t.candidate_score, "candidate_score"]);
    }
    if (has(t, "suppressed_by")) {
      rows.push(["suppressed by", "#" + t.suppressed_by + (has(t, "suppressed_iou") ?
                 " (IoU " + fmt(t.suppressed_iou) + ")" : ""), "suppressed_by"]);
    }
    if (has(t, "versus_class") || has(t, "versus_name")) {
      rows.push(["versus", fmt(t.versus_name) + " (" + fmt(t.versus_class) + ")", "versus_class"]);
    }
    if (has(t, "versus_score")) rows.push(["versus score", t.versus_score, "versus_score"]);
    return rows;
  }
  function details(t) {
    var rows = [["score", t.score]];
    if (Array.isArray(t.box)) {
      // a missed label's box is the candidate's that was dropped (or the label's)
      var candidate = t.outcome === "missed" && t.reason && t.reason !== "no_candidate";
      rows.push([candidate ? "candidate box" : "box", rounded(t.box), "box"]);
    }
    rows = rows.concat(outcomeRows(t));
    Object.keys(t).forEach(function (k) { if (!CARD_FIELDS[k]) rows.push([k, t[k]]); });
    var dl = el("dl");
    rows.forEach(function (r) {
      dl.appendChild(el("dt", { text: r[0] }));
      dl.appendChild(el("dd", { text: fmt(r[1]), "data-field": r[2] || r[0] }));
    });
    if (t.heatmap) {
      dl.appendChild(el("dt", { text: "map" }));
      dl.appendChild(el("dd", {}, [el("a", { href: t.heatmap, text: t.heatmap })]));
    }
    return dl;
  }
  function label(t) {
    // a missed label is no detection (index null): it is named by its label's index
    var head = t.index === null && has(t, "label") ? "label " + t.label : "#" + t.index;
    var text = head + " " + t.class_name + " (" + t.class_id + ")";
    if (t.explains === "contrast" && has(t, "versus_name")) {
      text += " \u2212 " + t.versus_name + " (" + fmt(t.versus_class) + ")";
    }
    return text;
  }

  // one entry per target: its card, its filter and sort values, and its compare group
  var cards = [];
  var groups = {};
  var total = 0;
  DATA.items.forEach(function (item, ii) {
    item.targets.forEach(function (t, ti) {
      var key = [ii, t.kind, t.index, t.class_id, t.label, t.explains].join("|");
      var compare = el("button", { type: "button", className: "compare-btn",
                                   text: "compare methods" });
      var badges = el("div", {}, [
        el("span", { className: "badge kind", text: t.kind || "?" }),
        el("span", { className: "badge method", text: t.method || "?" }),
        t.outcome ? el("span", { className: "badge outcome outcome-" + t.outcome,
                                 text: outcomeName(t.outcome) }) : null,
        t.reason ? el("span", { className: "badge reason",
                                text: REASONS[t.reason] || t.reason }) : null,
        t.empty ? el("span", { className: "badge empty", text: "empty map" }) : null]);
      var attrs = {
        className: "card", "data-image": String(ii), "data-target": String(ti),
        "data-class": String(t.class_name), "data-kind": String(t.kind),
        "data-method": String(t.method), "data-score": String(t.score)
      };
      if (t.outcome) {
        attrs.className += " outcome-" + t.outcome;
        attrs["data-outcome"] = String(t.outcome);
      }
      var node = el("article", attrs, [picture(t.src, label(t) + " " + t.method),
          el("div", { className: "title", text: label(t) }),
          el("div", { className: "where", text: item.label }),
          badges, details(t), compare]);
      var card = { node: node, item: ii, target: t, key: key, order: total++ };
      compare.addEventListener("click", function () { showCompare(key); });
      (groups[key] = groups[key] || []).push(card);
      cards.push(card);
    });
  });
  cards.forEach(function (c) {
    var btn = c.node.querySelector(".compare-btn");
    if (groups[c.key].length < 2) { btn.disabled = true; btn.title = "only one method"; }
  });

  function fill(select, values) {
    values.forEach(function (v) {
      select.appendChild(el("option", { value: v[0], text: v[1] }));
    });
  }
  function counted(field) {
    var n = {};
    cards.forEach(function (c) { var v = String(c.target[field]); n[v] = (n[v] || 0) + 1; });
    return Object.keys(n).sort().map(function (v) { return [v, v + " (" + n[v] + ")"]; });
  }
  fill($("f-class"), counted("class_name"));
  fill($("f-kind"), counted("kind"));
  fill($("f-method"), counted("method"));
  fill($("sort-field"), DATA.sortable.map(function (f) { return [f, f]; }));
  if (OUTCOMES.length) {
    var byOutcome = {};
    cards.forEach(function (c) {
      if (c.target.outcome) byOutcome[c.target.outcome] = (byOutcome[c.target.outcome] || 0) + 1;
    });
    fill($("f-outcome"), OUTCOMES.map(function (o) {
      return [o, outcomeName(o) + " (" + (byOutcome[o] || 0) + ")"];
    }));
    $("outcome-filter").hidden = false;
    $("sort-field").options[0].textContent = "missed first";
  }

  var nImages = DATA.items.length;
  $("summary").textContent = [
    "model " + fmt(DATA.model), "task " + fmt(DATA.task),
    "methods " + (DATA.methods.join(", ") || "\u2014"),
    "layers " + (DATA.layers.join(", ") || "\u2014"),
    nImages + " image(s)", cards.length + " target(s)",
    DATA.failures.length + " failure(s)"].concat(DATA.outcome_totals ? [
      "against labels: " + OUTCOMES.map(function (o) {
        return outcomeCount(o, DATA.outcome_totals[o] || 0); }).join(", ")] : [])
    .join(" \u00b7 ");
  $("incomplete").hidden = DATA.complete !== false;

  function extras() {
    var box = $("extra");
    var none = DATA.items.filter(function (it) { return !it.targets.length; });
    if (none.length) {
      var ul = el("ul");
      none.forEach(function (it) {
        ul.appendChild(el("li", { text: it.image + (it.message ? ": " + it.message : "") }));
      });
      box.appendChild(el("h2", { text: "Images with no targets (" + none.length + ")" }));
      box.appendChild(ul);
    }
    var videos = DATA.videos.filter(function (v) { return v.path; });
    if (videos.length) {
      var vl = el("ul");
      videos.forEach(function (v) {
        vl.appendChild(el("li", {}, [el("a", { href: v.path, text: v.path }),
          document.createTextNode(" \u00b7 " + fmt(v.method) + " \u00b7 " + fmt(v.frames) +
                                  " frame(s)")]));
      });
      box.appendChild(el("h2", { text: "Annotated videos (" + videos.length + ")" }));
      box.appendChild(vl);
    }
    if (DATA.failures.length) {
      var fl = el("ul");
      DATA.failures.forEach(function (f) {
        fl.appendChild(el("li", { text: fmt(f.image) + ": " + fmt(f.error) }));
      });
      box.appendChild(el("h2", { text: "Failures (" + DATA.failures.length + ")" }));
      box.appendChild(fl);
    }
  }

  function visible() {
    var cls = $("f-class").value, kind = $("f-kind").value, method = $("f-method").value;
    var outcome = $("f-outcome").value;
    var raw = $("f-score").value.trim();
    var min = raw === "" ? null : Number(raw);
    return cards.filter(function (c) {
      var t = c.target;
      if (cls && String(t.class_name) !== cls) return false;
      if (kind && String(t.kind) !== kind) return false;
      if (method && String(t.method) !== method) return false;
      if (outcome && String(t.outcome) !== outcome) return false;
      if (min !== null && isFinite(min) && !(num(t.score) !== null && t.score >= min)) return false;
      return true;
    });
  }
  function sorted(list) {
    var field = $("sort-field").value;
    if (!field) {
      // results order; a labelled run's missed labels first (inside each image when grouped)
      var rank = function (c) { return OUTCOMES.length && c.target.outcome === "missed" ? 0 : 1; };
      return list.slice().sort(function (a, b) {
        return rank(a) - rank(b) || a.order - b.order;
      });
    }
    var dir = $("sort-dir").value === "desc" ? -1 : 1;
    return list.slice().sort(function (a, b) {
      var x = num(a.target[field]), y = num(b.target[field]);
      if (x === null || y === null) {  // missing values last, whatever the direction
        if (x === null && y === null) return a.order - b.order;
        return x === null ? 1 : -1;
      }
      return x !== y ? dir * (x - y) : a.order - b.order;
    });
  }

  // an image's labels hit and missed and its false positives, coloured by outcome
  function outcomeCounts(counts) {
    if (!OUTCOMES.length || !counts) return null;
    return el("span", { className: "outcomes" }, OUTCOMES.map(function (o) {
      return el("span", { className: "outcome-" + o, "data-outcome": o,
                          "data-count": String(counts[o] || 0),
                          text: outcomeCount(o, counts[o] || 0) });
    }));
  }

  function render() {
    var shown = sorted(visible());
    var gallery = $("gallery");
    var frag = document.createDocumentFragment();
    if ($("group").checked) {
      var byItem = {};
      var order = [];
      shown.forEach(function (c) {
        if (!byItem[c.item]) { byItem[c.item] = []; order.push(c.item); }
        byItem[c.item].push(c);
      });
      // a labelled run in "missed first" order: the images with the most missed labels first
      var missedFirst = !$("sort-field").value && OUTCOMES.length;
      var missedIn = function (ii) { return (DATA.items[ii].outcomes || {}).missed || 0; };
      order.sort(function (a, b) {
        return (missedFirst ? missedIn(b) - missedIn(a) : 0) || a - b;
      });
      order.forEach(function (ii) {
        var item = DATA.items[ii];
        var head = el("header", {}, [
          el("h2", { text: item.label }),
          el("span", { className: "dims", text: fmt(item.width) + "\u00d7" + fmt(item.height) +
                                               " \u00b7 " + item.image }),
          outcomeCounts(item.outcomes),
          item.grid ? el("a", { href: item.grid, text: "methods \u00d7 targets grid" }) : null]
          .concat(Object.keys(item.all || {}).filter(function (m) { return item.all[m]; })
            .map(function (m) {
              return el("a", { className: "all", href: item.all[m], text: "all detections: " + m });
            })));
        var list = el("div", { className: "cards" });
        byItem[ii].forEach(function (c) { list.appendChild(c.node); });
        frag.appendChild(el("section", { className: "image-group", "data-image": String(ii) },
                            [head, list]));
      });
    } else {
      var flat = el("div", { className: "cards" });
      shown.forEach(function (c) { flat.appendChild(c.node); });
      frag.appendChild(flat);
    }
    gallery.replaceChildren(frag);
    $("count").textContent = shown.length + " of " + cards.length + " targets shown";
    var empty = $("empty");
    if (!nImages) { empty.textContent = "This run has no images: results.json holds no items."; }
    else if (!cards.length) { empty.textContent = "This run has no targets to show."; }
    else if (!shown.length) { empty.textContent = "No target matches the filters."; }
    empty.hidden = shown.length > 0;
  }

  function showCompare(key) {
    var members = groups[key];
    var first = members[0].target;
    $("compare-title").textContent = "Methods side by side: " + label(first) + " \u00b7 " +
      DATA.items[members[0].item].label;
    var grid = $("compare-grid");
    grid.replaceChildren();
    members.forEach(function (c) {
      grid.appendChild(el("div", { className: "cell", "data-method": String(c.target.method) }, [
        el("h3", { text: c.target.method }),
        picture(c.target.src, label(c.target) + " " + c.target.method),
        details(c.target)]));
    });
    $("compare").hidden = false;
    $("compare").scrollIntoView({ block: "start" });
  }
  $("compare-close").addEventListener("click", function () { $("compare").hidden = true; });
  document.addEventListener("keydown", function (e) {
    if (e.key === "Escape") $("compare").hidden = true;
  });

  ["f-class", "f-kind", "f-method", "f-outcome", "sort-field", "sort-dir", "group"]
  .forEach(function (id) {
    $(id).addEventListener("change", render);
  });
  $("f-score").addEventListener("input", render);
  $("reset").addEventListener("click", function () {
    ["f-class", "f-kind", "f-method", "f-outcome", "sort-field"].forEach(function (id) {
      $(id).value = "";
    });
    $("f-score").value = "";
    $("sort-dir").value = "asc";
    $("group").checked = true;
    render();
  });
  extras();
  render();
  document.body.setAttribute("data-ready", "1");
})();
