// Bildsluss archive: the little the pages do in the browser. No inline script
// anywhere (Content-Security-Policy: default-src 'self').
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  // Full view: a click on a photo toggles between fitted and actual size.
  for (const img of document.querySelectorAll("img.zoomable")) {
    img.addEventListener("click", () => img.classList.toggle("zoomed"));
  }
  // A thumbnail the server cannot make (a damaged file: 400 NO_PREVIEW) becomes a
  // tile naming the kind of media, never a broken picture.
  const untiled = (img) => {
    const tile = document.createElement("span");
    tile.className = "tile";
    tile.textContent = img.alt.replace(/ \d+$/, "");
    (img.closest(".picture") || img).replaceWith(tile);
  };
  for (const img of document.querySelectorAll(".thumb .picture img")) {
    if (img.complete && img.naturalWidth === 0) untiled(img);
    else img.addEventListener("error", () => untiled(img));
  }
  // Forms that ask before they act (sign, revoke): the question is in data-confirm.
  for (const form of document.querySelectorAll("form[data-confirm]")) {
    form.addEventListener("submit", (event) => {
      if (!window.confirm(form.dataset.confirm)) event.preventDefault();
    });
  }
});

// The annotation layer: shapes in picture-relative coordinates (0..1), drawn
// into the SVG over the picture and sent as JSON in the form's hidden field.
// The server checks them again and keeps them apart from the stored file.
document.addEventListener("DOMContentLoaded", () => {
  const form = document.getElementById("annotate-form");
  const svg = document.getElementById("layer");
  if (!form || !svg) return;
  const holder = svg.parentElement;
  const field = document.getElementById("shapes");
  const max = Number(form.dataset.max || 50);
  let shapes = [];
  try { shapes = JSON.parse(form.dataset.shapes || "[]"); } catch (e) { shapes = []; }
  holder.classList.add("editing");
  const NS = "http://www.w3.org/2000/svg";
  // A length as archive_server/numbers.py writes it on the server (and in the print): "3,5 cm".
  const decimal = (value) => new Intl.NumberFormat("sv-SE", {maximumFractionDigits: 2}).format(value);
  const el = (name, attrs, text) => {
    const node = document.createElementNS(NS, name);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
    if (text !== undefined) node.textContent = text;
    svg.appendChild(node);
  };
  const draw = () => {
    for (const node of Array.from(svg.children)) if (node.tagName !== "defs") node.remove();
    for (const s of shapes) {
      if (s.type === "arrow") el("line", {class: "shape", x1: s.x1 * 1000, y1: s.y1 * 1000, x2: s.x2 * 1000, y2: s.y2 * 1000,
        stroke: "#ffd400", "stroke-width": 6, "vector-effect": "non-scaling-stroke", "marker-end": "url(#arrowhead)"});
      if (s.type === "circle") el("ellipse", {class: "shape", cx: s.cx * 1000, cy: s.cy * 1000, rx: s.r * 1000, ry: s.r * 1000,
        fill: "none", stroke: "#ffd400", "stroke-width": 4, "vector-effect": "non-scaling-stroke"});
      if (s.type === "text") el("text", {class: "shape", x: s.x * 1000, y: s.y * 1000, fill: "#ffd400", "font-size": 40}, s.text);
      if (s.type === "length") {
        el("line", {class: "shape", x1: s.x1 * 1000, y1: s.y1 * 1000, x2: s.x2 * 1000, y2: s.y2 * 1000,
          stroke: "#00e0ff", "stroke-width": 4, "vector-effect": "non-scaling-stroke"});
        el("text", {x: (s.x1 + s.x2) * 500, y: (s.y1 + s.y2) * 500 - 12, fill: "#00e0ff", "font-size": 36}, `${decimal(s.value)} ${s.unit}`);
      }
    }
    field.value = JSON.stringify(shapes);
  };
  const clamp = (v) => Math.round(Math.min(1, Math.max(0, v)) * 100000) / 100000;
  const at = (event) => {
    const box = svg.getBoundingClientRect();
    return [clamp((event.clientX - box.left) / box.width), clamp((event.clientY - box.top) / box.height)];
  };
  let start = null;
  svg.addEventListener("mousedown", (event) => { event.preventDefault(); start = at(event); });
  svg.addEventListener("mouseup", (event) => {
    if (!start || shapes.length >= max) { start = null; return; }
    const [x, y] = at(event);
    const [x0, y0] = start;
    start = null;
    const tool = form.querySelector("input[name=tool]:checked").value;
    const moved = Math.hypot(x - x0, y - y0) > 0.01;
    if (tool === "text") {
      const text = document.getElementById("annotate-text").value.trim();
      if (text) shapes.push({type: "text", x: x0, y: y0, text: text});
    } else if (tool === "arrow" && moved) {
      shapes.push({type: "arrow", x1: x0, y1: y0, x2: x, y2: y});
    } else if (tool === "circle" && moved) {
      shapes.push({type: "circle", cx: x0, cy: y0, r: clamp(Math.hypot(x - x0, y - y0))});
    } else if (tool === "length" && moved) {
      const value = Number(document.getElementById("annotate-value").value);
      if (value > 0) shapes.push({type: "length", x1: x0, y1: y0, x2: x, y2: y, value: value,
        unit: document.getElementById("annotate-unit").value});
    }
    draw();
  });
  document.getElementById("annotate-clear").addEventListener("click", () => { shapes = []; draw(); });
  // The picture toggles zoom on click; while annotating a click draws instead.
  holder.querySelector("img.zoomable")?.classList.remove("zoomable");
  draw();
});
