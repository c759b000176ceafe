// The explorer's page: the grid, one image (one or two runs side by side), live predictions.
// Everything the view shows is in the URL's hash (view, image id, threshold, class, error type, sort, run, page),
// so a view can be linked to. The one-image and live views draw on the client: the threshold slider and the
// class filter redraw at once, without asking the server again.
"use strict";

const TYPES = ["Cls", "Loc", "Both", "Dupe", "Bkg", "Miss"];
const COLORS = {TP: "#22c55e", Cls: "#ef4444", Loc: "#eab308", Both: "#a855f7", Dupe: "#3b82f6", Bkg: "#ec4899",
                Miss: "#f97316", gt: "#ffffff", crowd: "#9ca3af", fixed: "#06b6d4", broken: "#f43f5e"};
const SORTS = [["errors", "errors (all types)"], ...TYPES.map(t => [t, t]), ["ap", "image AP50"],
               ["name", "file name"]];
const PAIR_SORTS = [["diff", "B - A errors"], ["fixed", "objects B fixes"], ["broken", "objects B breaks"]];
const DEFAULTS = {view: "grid", id: "", thr: "0.3", cls: "", err: "", sort: "errors", desc: "1", run: "0",
                  page: "0", per: "48"};
const $ = id => document.getElementById(id);

let META = null;          // /api/meta
let ORDER = {key: null, ids: []};  // the image ids of the current filters and sort, for previous / next
const IMAGES = new Map(); // image id -> /api/image data
let LIVE = null;          // the last live prediction {dets, width, height, latency_ms, rtt_ms, url, name}
let pinned = false;
let gridTimer = null;

// ------------------------------------------------------------------ state in the URL
function state() {
  const p = new URLSearchParams(location.hash.slice(1));
  const s = {};
  for (const k in DEFAULTS) s[k] = p.has(k) ? p.get(k) : DEFAULTS[k];
  return s;
}
function encode(s) {
  const p = new URLSearchParams();
  for (const k in DEFAULTS) if (s[k] !== DEFAULTS[k] && s[k] !== "" || k === "view") p.set(k, s[k]);
  return "#" + p.toString();
}
function go(patch) { location.hash = encode({...state(), ...patch}); }
function replace(patch) { history.replaceState(null, "", encode({...state(), ...patch})); }
function query(s, extra = {}) {
  const p = new URLSearchParams({sort: s.sort, desc: s.desc, run: s.run, thr: s.thr, ...extra});
  if (s.cls) p.set("cls", s.cls);
  if (s.err) p.set("err", s.err);
  return p.toString();
}
const thr = s => parseFloat(s.thr) || 0;

async function getJSON(url, options) {
  const r = await fetch(url, options);
  const body = await r.json();
  if (!r.ok) throw new Error(body.error || r.statusText);
  return body;
}
function status(text) { $("status").textContent = text || ""; }

// ------------------------------------------------------------------ set-up
function catName(id, live = false) {
  const c = (live ? META.live.classes : META.categories).find(c => c.id === id);
  return c ? c.name : String(id);
}
const PALETTE = ["#22c55e", "#3b82f6", "#eab308", "#ec4899", "#a855f7", "#06b6d4", "#f97316", "#84cc16"];
function option(value, text) {
  const o = document.createElement("option");
  o.value = value;
  o.textContent = text;
  return o;
}

function setupControls() {
  for (const t of TYPES) $("err").appendChild(option(t, t));
  const sorts = META.runs.length > 1 ? [...SORTS, ...PAIR_SORTS] : SORTS;
  for (const [v, t] of sorts) $("sort").appendChild(option(v, t));
  META.runs.forEach((r, i) => $("run").appendChild(option(i, r.name)));
  $("run-label").hidden = META.runs.length < 2;
  $("tab-live").hidden = !META.live;
  const legend = ["TP", ...TYPES, "gt", "crowd", ...(META.runs.length > 1 ? ["fixed", "broken"] : [])];
  $("legend").innerHTML = legend.map(k => `<span><i style="background:${COLORS[k]}"></i>${
    k === "TP" ? "true positive" : k === "gt" ? "ground truth" : k === "crowd" ? "crowd region" : k}</span>`).join("");
  const head = `<tr><th>run (all detections)</th><th>AP50</th>${TYPES.map(t => `<th>${t}</th>`).join("")}` +
    `<th>FalsePos</th><th>FalseNeg</th></tr>`;
  const rows = META.runs.map(r => `<tr><td title="${r.path}">${r.name}</td><td>${r.AP50.toFixed(2)}</td>${
    TYPES.map(t => `<td title="${r.counts[t]} errors">dAP ${r.dAP[t].toFixed(2)} (${r.counts[t]})</td>`).join("")}` +
    `<td>${r.dAP.FalsePos.toFixed(2)}</td><td>${r.dAP.FalseNeg.toFixed(2)}</td></tr>`).join("");
  $("runs").innerHTML = head + rows;

  $("thr").addEventListener("input", () => {
    const v = parseFloat($("thr").value).toFixed(2);
    $("thr-value").textContent = v;
    replace({thr: v});
    const s = state();
    if (s.view === "image") drawImageView(); else if (s.view === "live") drawLive();
    else { clearTimeout(gridTimer); gridTimer = setTimeout(loadGrid, 150); }
    updateDownload();
  });
  $("cls").addEventListener("change", () => {
    const s = state();
    if (s.view === "grid") go({cls: $("cls").value, page: "0"});
    else { replace({cls: $("cls").value}); s.view === "live" ? drawLive() : drawImageView(); updateDownload(); }
  });
  $("err").addEventListener("change", () => go({err: $("err").value, page: "0"}));
  $("sort").addEventListener("change", () => {
    const v = $("sort").value;
    go({sort: v, desc: v === "ap" || v === "name" ? "0" : "1", page: "0"});
  });
  $("desc").addEventListener("click", () => go({desc: state().desc === "1" ? "0" : "1", page: "0"}));
  $("run").addEventListener("change", () => go({run: $("run").value, page: "0"}));
  $("prev-page").addEventListener("click", () => movePage(-1));
  $("next-page").addEventListener("click", () => movePage(1));
  $("back").addEventListener("click", () => go({view: "grid", id: ""}));
  $("prev-image").addEventListener("click", () => moveImage(-1));
  $("next-image").addEventListener("click", () => moveImage(1));
  document.addEventListener("keydown", onKey);
  setupLive();
}

function onKey(e) {
  if (e.target.tagName === "SELECT" || e.target.tagName === "INPUT") return;  // the slider's own arrow keys
  const s = state();
  const step = e.key === "ArrowRight" || e.key === "j" ? 1 : e.key === "ArrowLeft" || e.key === "k" ? -1 : 0;
  if (s.view === "image" && step) { e.preventDefault(); moveImage(step); }
  else if (s.view === "grid" && step) { e.preventDefault(); movePage(step); }
  else if (s.view === "image" && e.key === "Escape") go({view: "grid", id: ""});
}

function syncControls(s) {
  $("thr").value = s.thr;
  $("thr-value").textContent = thr(s).toFixed(2);
  const classes = s.view === "live" && META.live ? META.live.classes : META.categories;
  const sel = $("cls");
  if (sel.dataset.kind !== (s.view === "live" ? "live" : "gt")) {
    sel.innerHTML = "";
    sel.appendChild(option("", "all"));
    for (const c of classes) sel.appendChild(option(c.id, c.name));
    sel.dataset.kind = s.view === "live" ? "live" : "gt";
  }
  sel.value = s.cls;
  $("err").value = s.err;
  $("sort").value = s.sort;
  $("desc").innerHTML = s.desc === "1" ? "&darr;" : "&uarr;";
  $("run").value = s.run;
  for (const el of document.querySelectorAll(".tide-only")) el.style.visibility = s.view === "live" ? "hidden" : "";
  $("legend").hidden = $("runs").hidden = s.view === "live";
  $("tab-grid").classList.toggle("active", s.view !== "live");
  $("tab-live").classList.toggle("active", s.view === "live");
}

async function render() {
  const s = state();
  syncControls(s);
  $("grid-view").hidden = s.view !== "grid";
  $("image-view").hidden = s.view !== "image";
  $("live-view").hidden = s.view !== "live";
  hideTooltip(true);
  status("");
  try {
    if (s.view === "image") await loadImage(s);
    else if (s.view === "live") drawLive();
    else await loadGrid();
  } catch (err) { status(err.message); }
  updateDownload();
}

function updateDownload() {
  const s = state(), a = $("download");
  if (s.view === "live") {
    const dets = LIVE ? liveShown(s).map(d => ({image_id: 0, category_id: d.cat, bbox: d.box, score: d.score})) : [];
    if (a.dataset.blob) URL.revokeObjectURL(a.dataset.blob);
    a.dataset.blob = URL.createObjectURL(new Blob([JSON.stringify(dets)], {type: "application/json"}));
    a.href = a.dataset.blob;
    a.download = `live_${LIVE ? LIVE.name.replace(/\.[^.]*$/, "") : "none"}_score${thr(s)}.json`;
  } else {
    a.href = "/api/detections?" + query(s, s.view === "image" && s.id ? {id: s.id} : {});
    a.download = "";  // the server's Content-Disposition names the file
  }
}

// ------------------------------------------------------------------ drawing
function typeName(t) { return t < 0 ? "TP" : TYPES[t]; }

function box(ctx, b, scale, color, {width = 2, dash = null, label = null} = {}) {
  const [x, y, w, h] = b.map(v => v * scale);
  ctx.save();
  ctx.strokeStyle = color;
  ctx.lineWidth = width;
  if (dash) ctx.setLineDash(dash);
  ctx.strokeRect(x, y, w, h);
  if (label) {
    ctx.font = "12px system-ui, sans-serif";
    const tw = ctx.measureText(label).width + 6;
    const ty = y > 16 ? y - 16 : y;
    ctx.fillStyle = color;
    ctx.fillRect(x, ty, tw, 16);
    ctx.fillStyle = "#000";
    ctx.fillText(label, x + 3, ty + 12);
  }
  ctx.restore();
}

function loadPicture(url) {
  return new Promise(resolve => {
    const img = new Image();
    img.onload = () => resolve(img);
    img.onerror = () => resolve(null);
    img.src = url;
  });
}

function placeholder(ctx, w, h, text) {
  ctx.fillStyle = "#2b2f38";
  ctx.fillRect(0, 0, w, h);
  ctx.fillStyle = "#9ca3af";
  ctx.font = "14px system-ui, sans-serif";
  ctx.fillText(text, 10, 24);
}

// ------------------------------------------------------------------ the grid
async function loadGrid() {
  const s = state();
  const per = Math.max(1, parseInt(s.per) || 48), page = Math.max(0, parseInt(s.page) || 0);
  const data = await getJSON(`/api/images?${query(s, {offset: page * per, limit: per})}`);
  ORDER = {key: query(s), ids: data.ids};
  const last = Math.max(0, Math.ceil(data.total / per) - 1);
  $("page-info").textContent = data.total ? `images ${page * per + 1}-${Math.min(data.total, (page + 1) * per)} ` +
    `of ${data.total} (page ${page + 1} of ${last + 1})` : "no image matches the filters";
  $("prev-page").disabled = page <= 0;
  $("next-page").disabled = page >= last;
  const grid = $("grid");
  grid.innerHTML = "";
  grid.dataset.total = data.total;
  const run = parseInt(s.run), cls = s.cls === "" ? null : parseInt(s.cls);
  data.items.forEach((item, i) => grid.appendChild(card(item, page * per + i, run, cls, s)));
  grid.dataset.ready = `${query(s)}&page=${page}`;
}

function sortValue(item, s, run) {
  const c = item.counts[run];
  if (TYPES.includes(s.sort)) return `${s.sort} ${c[s.sort]}`;
  if (s.sort === "ap") return `AP50 ${item.ap[run] === null ? "-" : item.ap[run].toFixed(1)}`;
  if (s.sort === "fixed") return `B fixes ${item.fixed}`;
  if (s.sort === "broken") return `B breaks ${item.broken}`;
  return null;
}

function card(item, rank, run, cls, s) {
  const el = document.createElement("div");
  el.className = "card";
  el.dataset.id = item.id;
  el.dataset.rank = rank;
  el.dataset.errors = item.errors[run];
  for (const t of TYPES) el.dataset[t.toLowerCase()] = item.counts[run][t];
  const canvas = document.createElement("canvas");
  const w = item.width || 640, h = item.height || 480;
  const scale = 240 / Math.max(w, h);
  canvas.width = Math.round(w * scale);
  canvas.height = Math.round(h * scale);
  const ctx = canvas.getContext("2d");
  const drawBoxes = () => {
    for (const g of item.gt) if (cls === null || g[4] === cls) box(ctx, g, scale, COLORS.gt, {width: 1});
    for (const d of item.dets) {
      if (cls === null || d[4] === cls) box(ctx, d, scale, COLORS[typeName(d[6])], {width: 1.5});
    }
  };
  if (item.has_image) {
    loadPicture(`/thumb/${item.id}`).then(img => {
      if (img) ctx.drawImage(img, 0, 0, canvas.width, canvas.height);
      else placeholder(ctx, canvas.width, canvas.height, "image unreadable");
      drawBoxes();
      canvas.dataset.drawn = "1";
    });
  } else { placeholder(ctx, canvas.width, canvas.height, "image missing"); drawBoxes(); canvas.dataset.drawn = "1"; }
  const errs = TYPES.filter(t => item.counts[run][t]).map(t => `${t} ${item.counts[run][t]}`).join(" · ");
  const extra = sortValue(item, s, run);
  let pair = "";
  if (item.errors.length > 1) {
    const d = item.errors[1] - item.errors[0];
    pair = `<div class="nums ${d < 0 ? "better" : d > 0 ? "worse" : ""}">B - A errors ${d > 0 ? "+" : ""}${d}` +
      ` (B fixes ${item.fixed}, breaks ${item.broken})</div>`;
  }
  el.innerHTML = `<div class="name" title="${item.file_name}">${rank + 1}. ${item.file_name}</div>`;
  el.prepend(canvas);
  el.insertAdjacentHTML("beforeend", `<div class="nums">${item.errors[run]} errors${errs ? ": " + errs : ""}</div>` +
    `<div class="nums">AP50 ${item.ap[run] === null ? "- (no gt)" : item.ap[run].toFixed(1)}${
      extra && !extra.startsWith("AP50") && !TYPES.some(t => extra.startsWith(t)) ? " · " + extra : ""}</div>` + pair);
  el.addEventListener("click", () => go({view: "image", id: String(item.id)}));
  return el;
}

function movePage(step) {
  const s = state();
  const per = parseInt(s.per) || 48, page = (parseInt(s.page) || 0) + step;
  const total = parseInt($("grid").dataset.total || "0");
  if (page < 0 || page * per >= total) return;
  go({page: String(page)});
}

// ------------------------------------------------------------------ one image (one or two runs)
async function ensureOrder(s) {
  if (ORDER.key === query(s)) return;
  const data = await getJSON(`/api/images?${query(s, {offset: 0, limit: 1})}`);
  ORDER = {key: query(s), ids: data.ids};
}

async function loadImage(s) {
  const id = parseInt(s.id);
  if (!IMAGES.has(id)) IMAGES.set(id, await getJSON(`/api/image/${id}`));
  await ensureOrder(s);
  const data = IMAGES.get(id);
  data.picture = data.has_image ? (data.picture || await loadPicture(`/image/${id}`)) : null;
  const pos = ORDER.ids.indexOf(id);
  $("image-pos").textContent = pos >= 0 ? `${pos + 1} / ${ORDER.ids.length}` : "not in the filtered images";
  $("image-name").textContent = `${data.file_name} (id ${id})`;
  const panels = $("panels");
  panels.innerHTML = "";
  data.runs.forEach((r, i) => {
    const p = document.createElement("div");
    p.className = "panel";
    p.id = `panel-${i}`;
    p.innerHTML = `<h2>${META.runs[i].name}</h2><canvas id="canvas-${i}"></canvas><div class="stats" id="stats-${i}">` +
      `</div><a id="download-${i}" download>download this image's detections (COCO JSON)</a>`;
    panels.appendChild(p);
    const canvas = p.querySelector("canvas");
    canvas.addEventListener("mousemove", e => hover(e, canvas));
    canvas.addEventListener("mouseleave", () => hideTooltip(false));
    canvas.addEventListener("click", e => { pinned = !pinned; hover(e, canvas, true); });
  });
  drawImageView();
}

function moveImage(step) {
  const s = state();
  const pos = ORDER.ids.indexOf(parseInt(s.id));
  const next = ORDER.ids[pos + step];
  if (pos >= 0 && next !== undefined) go({id: String(next)});
  else if (pos < 0 && ORDER.ids.length) go({id: String(ORDER.ids[0])});
}

function gtState(r, g, t) {  // the gt's state at threshold t in run r: found, missed (TIDE Miss), or pointed at
  const hit = r.gt_hit[g], target = r.gt_target[g];
  if (hit !== null && hit >= t) return "found";
  if (target !== null && target >= t) return "error";
  return "missed";
}

function drawImageView() {
  const s = state();
  const data = IMAGES.get(parseInt(s.id));
  if (!data || s.view !== "image") return;
  const t = thr(s), cls = s.cls === "" ? null : parseInt(s.cls);
  const pair = data.runs.length > 1;
  const found = data.runs.map(r => data.gt.map((_, g) => gtState(r, g, t) === "found"));
  data.runs.forEach((r, i) => {
    const canvas = $(`canvas-${i}`);
    const w = data.width || (data.picture ? data.picture.naturalWidth : 640);
    const h = data.height || (data.picture ? data.picture.naturalHeight : 480);
    const scale = Math.min(1, (pair ? 900 : 1400) / w);
    canvas.width = Math.round(w * scale);
    canvas.height = Math.round(h * scale);
    const ctx = canvas.getContext("2d");
    if (data.picture) ctx.drawImage(data.picture, 0, 0, canvas.width, canvas.height);
    else placeholder(ctx, canvas.width, canvas.height, "image missing");
    const hits = [];
    const counts = Object.fromEntries(["TP", ...TYPES].map(k => [k, 0]));
    for (const c of data.crowd) {
      if (cls !== null && c[4] !== cls) continue;
      box(ctx, c, scale, COLORS.crowd, {width: 1, dash: [4, 3]});
      hits.push({b: c, scale, text: `crowd region: ${catName(c[4])}`});
    }
    const changed = [];  // run B's panel: the objects B fixes (found by B only) and breaks (found by A only)
    data.gt.forEach((g, k) => {
      if (cls !== null && g[4] !== cls) return;
      const st = gtState(r, k, t);
      let note = st === "found" ? "detected" : st === "error" ? "not detected; a Cls / Loc error points at it" :
        "missed (Miss)";
      if (st === "missed") {
        counts.Miss++;
        box(ctx, g, scale, COLORS.Miss, {width: 2, dash: [6, 3], label: `${catName(g[4])} Miss`});
      } else box(ctx, g, scale, COLORS.gt, {width: 1, dash: st === "found" ? null : [6, 3]});
      if (pair && i === 1 && found[1][k] !== found[0][k]) {
        const kind = found[1][k] ? "fixed" : "broken";
        changed.push([g, kind]);
        note += `; B ${kind === "fixed" ? "fixes" : "breaks"} it (A ${found[0][k] ? "detects" : "misses"} it)`;
      }
      hits.push({b: g, scale, text: `ground truth: ${catName(g[4])}\n${note} at score >= ${t.toFixed(2)}`});
    });
    let shown = 0;
    for (const d of r.dets) {
      if (d.score < t || (cls !== null && d.cat !== cls)) continue;
      const name = typeName(d.type);
      counts[name]++;
      shown++;
      box(ctx, d.box, scale, COLORS[name], {label: `${catName(d.cat)} ${d.score.toFixed(2)} ${name}`});
      const best = d.iou_gt >= 0 ? ` with ${catName(data.gt[d.iou_gt][4])}` : " (no ground truth)";
      hits.push({b: d.box, scale, text: `${catName(d.cat)}  score ${d.score.toFixed(3)}\n` +
        (name === "TP" ? "true positive" : "error: " + name) +
        (d.ignored ? " (inside a crowd region: not in the AP)" : "") +
        `\nIoU ${d.iou.toFixed(3)}${best}`});
    }
    for (const [g, kind] of changed) box(ctx, g, scale, COLORS[kind], {width: 3, label: `${catName(g[4])} ${kind}`});
    canvas.dataset.boxes = shown;
    canvas.hits = hits;
    const errors = TYPES.reduce((n, k) => n + counts[k], 0);
    const st = $(`stats-${i}`);
    st.dataset.shown = shown;
    st.dataset.errors = errors;
    for (const k of ["TP", ...TYPES]) st.dataset[k.toLowerCase()] = counts[k];
    st.textContent = `${shown} of ${r.dets.length} detections shown (score >= ${t.toFixed(2)}): ` +
      ["TP", ...TYPES].map(k => `${k} ${counts[k]}`).join(" · ") +
      ` · image AP50 ${r.ap === null ? "- (no gt)" : r.ap.toFixed(1)}`;
    const a = $(`download-${i}`);
    a.href = "/api/detections?" + query({...s, run: String(i)}, {id: data.id});
  });
  const diff = $("diff");
  if (pair) {
    const fixed = data.gt.filter((g, k) => (cls === null || g[4] === cls) && found[1][k] && !found[0][k]).length;
    const broken = data.gt.filter((g, k) => (cls === null || g[4] === cls) && found[0][k] && !found[1][k]).length;
    const ea = parseInt($("stats-0").dataset.errors), eb = parseInt($("stats-1").dataset.errors);
    diff.dataset.fixed = fixed;
    diff.dataset.broken = broken;
    diff.dataset.diff = eb - ea;
    diff.className = eb < ea ? "better" : eb > ea ? "worse" : "";
    diff.textContent = `B fixes ${fixed}, breaks ${broken} objects; ` +
      `errors A ${ea} -> B ${eb} (${eb - ea > 0 ? "+" : ""}${eb - ea})`;
  } else diff.textContent = "";
}

// ------------------------------------------------------------------ hover / click on a box
function hover(e, canvas, click = false) {
  if (pinned && !click) return;
  const rect = canvas.getBoundingClientRect();
  const x = (e.clientX - rect.left) * canvas.width / rect.width;
  const y = (e.clientY - rect.top) * canvas.height / rect.height;
  let best = null;
  for (const h of canvas.hits || []) {  // the smallest box under the pointer
    const [bx, by, bw, bh] = h.b.map(v => v * h.scale);
    if (x >= bx && x <= bx + bw && y >= by && y <= by + bh && (!best || bw * bh < best.area)) best = {h, area: bw * bh};
  }
  const tip = $("tooltip");
  if (!best) { if (click) pinned = false; hideTooltip(true); return; }
  tip.textContent = best.h.text;
  tip.hidden = false;
  tip.classList.toggle("pinned", pinned);
  tip.style.left = `${e.clientX + 14}px`;
  tip.style.top = `${e.clientY + 14}px`;
}
function hideTooltip(force) { if (force) pinned = false; if (!pinned) $("tooltip").hidden = true; }

// ------------------------------------------------------------------ live predictions
function setupLive() {
  const drop = $("drop");
  drop.addEventListener("dragover", e => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", e => {
    e.preventDefault();
    drop.classList.remove("over");
    if (e.dataTransfer.files.length) predict(e.dataTransfer.files[0]);
  });
  $("file").addEventListener("change", () => { if ($("file").files.length) predict($("file").files[0]); });
}

async function predict(file) {
  if (!META.live) { status("no live model: start the explorer with --weight"); return; }
  $("live-info").textContent = `predicting ${file.name}...`;
  $("live-info").dataset.done = "";
  const start = performance.now();
  try {
    const data = await getJSON("/api/predict", {method: "POST", body: file,
                                                headers: {"Content-Type": file.type || "application/octet-stream"}});
    data.rtt_ms = performance.now() - start;
    data.name = file.name;
    if (LIVE && LIVE.url) URL.revokeObjectURL(LIVE.url);
    data.url = URL.createObjectURL(file);
    data.picture = await loadPicture(data.url);
    LIVE = data;
    status("");
  } catch (err) {
    LIVE = null;
    status(`${file.name}: ${err.message}`);
  }
  drawLive();
  updateDownload();
}

function liveShown(s) {
  const cls = s.cls === "" ? null : parseInt(s.cls);
  return LIVE.dets.filter(d => d.score >= thr(s) && (cls === null || d.cat === cls));
}

function drawLive() {
  const s = state();
  const canvas = $("live-canvas");
  if (!LIVE) {
    canvas.width = canvas.height = 0;
    $("live-table").innerHTML = "";
    $("live-info").textContent = META.live ? `model ${META.live.weight}: ${META.live.backend} ${META.live.precision} ` +
      `on ${META.live.device}` : "no live model: start the explorer with --weight";
    return;
  }
  const scale = Math.min(1, 1400 / LIVE.width);
  canvas.width = Math.round(LIVE.width * scale);
  canvas.height = Math.round(LIVE.height * scale);
  const ctx = canvas.getContext("2d");
  if (LIVE.picture) ctx.drawImage(LIVE.picture, 0, 0, canvas.width, canvas.height);
  const shown = liveShown(s);
  for (const d of shown) {  // no ground truth here: coloured by class
    box(ctx, d.box, scale, PALETTE[d.cat % PALETTE.length], {label: `${catName(d.cat, true)} ${d.score.toFixed(2)}`});
  }
  canvas.dataset.boxes = shown.length;
  const info = $("live-info");
  info.textContent = `${LIVE.name}: ${shown.length} of ${LIVE.dets.length} detections shown (score >= ` +
    `${thr(s).toFixed(2)}) · model ${LIVE.latency_ms.toFixed(1)} ms (${META.live.backend} ${META.live.precision} on ` +
    `${META.live.device}) · round trip ${LIVE.rtt_ms.toFixed(0)} ms`;
  info.dataset.done = "1";
  info.dataset.count = LIVE.dets.length;
  $("live-table").innerHTML = "<tr><th>class</th><th>score</th><th>x</th><th>y</th><th>w</th><th>h</th></tr>" +
    shown.map(d => `<tr><td>${catName(d.cat, true)}</td><td>${d.score.toFixed(3)}</td>${
      d.box.map(v => `<td>${v.toFixed(1)}</td>`).join("")}</tr>`).join("");
}

// ------------------------------------------------------------------ start
(async () => {
  try {
    META = await getJSON("/api/meta");
  } catch (err) { status(`cannot reach the explorer: ${err.message}`); return; }
  document.title = `YOLOF explorer: ${META.runs.map(r => r.name).join(" vs ")}`;
  setupControls();
  window.addEventListener("hashchange", render);
  await render();
})();
