// The page of `dvsa serve`: calls /api/caption, /api/align and /api/search and draws boxes in an SVG overlay.
"use strict";
const PALETTE = ["#e6194b", "#3cb44b", "#0082c8", "#f58231", "#911eb4", "#46c8c8", "#f032e6", "#aa6e28",
                 "#808000", "#000080"];
const $ = (id) => document.getElementById(id);
let current = null;  // {file, width, height}

function colour(row) { return row === 0 ? "#6e6e6e" : PALETTE[(row - 1) % PALETTE.length]; }

function showError(msg) { $("error").textContent = msg || ""; }

async function call(url, options) {
  const r = await fetch(url, options);
  let body = null;
  try { body = await r.json(); } catch (e) { body = {detail: r.statusText}; }
  if (!r.ok) {
    const d = body && body.detail;
    throw new Error(typeof d === "string" ? d : JSON.stringify(d));
  }
  return body;
}

function drawBoxes(items, width, height) {
  const svg = $("boxes");
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.innerHTML = "";
  const ns = "http://www.w3.org/2000/svg";
  for (const it of items) {
    const [x1, y1, x2, y2] = it.box;
    const rect = document.createElementNS(ns, "rect");
    rect.setAttribute("x", x1); rect.setAttribute("y", y1);
    rect.setAttribute("width", Math.max(1, x2 - x1)); rect.setAttribute("height", Math.max(1, y2 - y1));
    rect.setAttribute("stroke", it.colour);
    rect.setAttribute("class", "box");
    svg.appendChild(rect);
    const label = document.createElementNS(ns, "text");
    label.setAttribute("x", x1 + 2); label.setAttribute("y", y1 + 0.07 * height);
    label.setAttribute("fill", it.colour);
    label.setAttribute("font-size", 0.06 * height);
    label.setAttribute("stroke-width", 0.012 * height);
    label.textContent = it.label;
    svg.appendChild(label);
  }
}

async function onPhoto() {
  const file = $("photo").files[0];
  if (!file) return;
  showError("");
  $("caption").textContent = "…";
  $("regions").innerHTML = ""; $("snippets").innerHTML = ""; $("boxes").innerHTML = "";
  $("preview").src = URL.createObjectURL(file);
  const form = new FormData();
  form.append("image", file);
  try {
    const res = await call("/api/caption", {method: "POST", body: form});
    current = {file, width: res.width, height: res.height, regions: res.regions};
    $("caption").textContent = res.caption;
    $("caption-score").textContent = `score ${res.score.toFixed(3)} (mean log-probability per word)`;
    const ol = $("regions");
    res.regions.forEach((r, i) => {
      const li = document.createElement("li");
      li.innerHTML = `<span class="chip" style="background:${PALETTE[i % PALETTE.length]}">${i + 1}</span> `;
      li.appendChild(document.createTextNode(`${r.caption} (${r.score.toFixed(2)})`));
      ol.appendChild(li);
    });
    drawBoxes(res.regions.map((r, i) => ({box: r.box, colour: PALETTE[i % PALETTE.length], label: String(i + 1)})),
              res.width, res.height);
    document.body.dataset.captioned = "1";
  } catch (e) {
    $("caption").textContent = "";
    showError(e.message);
    current = null;
  }
}

async function onAlign(ev) {
  ev.preventDefault();
  if (!current) { showError("upload a photo first"); return; }
  const sentence = $("sentence").value.trim();
  if (!sentence) { showError("type a sentence"); return; }
  const form = new FormData();
  form.append("image", current.file);
  form.append("sentence", sentence);
  try {
    const res = await call("/api/align", {method: "POST", body: form});
    showError("");
    const ol = $("snippets");
    ol.innerHTML = "";
    for (const s of res.snippets) {
      const li = document.createElement("li");
      const chip = document.createElement("span");
      chip.className = "chip"; chip.style.background = colour(s.region); chip.textContent = s.words;
      li.appendChild(chip);
      li.appendChild(document.createTextNode(` → region ${s.region}${s.region === 0 ? " (whole image)" : ""}, ` +
                                             `score ${s.score.toFixed(2)}`));
      ol.appendChild(li);
    }
    drawBoxes(res.snippets.map((s) => ({box: s.box, colour: colour(s.region), label: s.words})),
              res.width, res.height);
    document.body.dataset.aligned = "1";
  } catch (e) { showError(e.message); }
}

async function onSearch(ev) {
  ev.preventDefault();
  const q = $("query").value.trim();
  if (!q) return;
  try {
    const res = await call(`/api/search?q=${encodeURIComponent(q)}&k=12`);
    const div = $("results");
    div.innerHTML = "";
    for (const r of res.results) {
      const fig = document.createElement("figure");
      const img = document.createElement("img");
      img.src = r.url; img.alt = r.image_id;
      const cap = document.createElement("figcaption");
      cap.textContent = `${r.rank}. ${r.image_id.split("/").pop()} (${r.score.toFixed(2)})`;
      fig.appendChild(img); fig.appendChild(cap); div.appendChild(fig);
    }
    showError("");
  } catch (e) { showError(e.message); }
}

async function init() {
  $("photo").addEventListener("change", onPhoto);
  $("align-form").addEventListener("submit", onAlign);
  $("search-form").addEventListener("submit", onSearch);
  try {
    const h = await call("/api/health");
    $("status").textContent = `ready: captions${h.align ? ", alignments" : ""}` +
                              (h.index ? `, search over ${h.index} photos` : "");
    if (h.index) $("search-section").classList.remove("hidden");
    if (!h.align) $("align-form").classList.add("hidden");
  } catch (e) { $("status").textContent = "server unreachable: " + e.message; }
}
init();
