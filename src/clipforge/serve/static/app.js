// Single-page UI of `clipforge serve`: text search, drag-and-drop image search, zero-shot classify.
"use strict";

const $ = (id) => document.getElementById(id);

function setMessage(text, isError = false) {
  $("message").textContent = text;
  $("message").className = isError ? "error" : "muted";
}

// FastAPI puts the reason in `detail`: a string for our errors, a list for validation errors.
async function readJson(response) {
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    const detail = Array.isArray(body.detail) ? body.detail.map((d) => d.msg).join("; ") : body.detail;
    throw new Error(detail || `HTTP ${response.status}`);
  }
  return body;
}

function card(result) {
  const figure = document.createElement("figure");
  figure.className = "card result";
  const img = document.createElement("img");
  img.src = `/images/${result.id}`;
  img.alt = result.caption || result.path;
  img.loading = "lazy";
  const meta = document.createElement("figcaption");
  meta.className = "meta";
  const score = document.createElement("div");
  score.className = "score";
  score.textContent = result.score.toFixed(3);
  const caption = document.createElement("div");
  caption.className = "caption";
  caption.textContent = result.caption || result.path.split("/").pop();
  caption.title = result.path;
  meta.append(score, caption);
  figure.append(img, meta);
  return figure;
}

function showResults(body, what) {
  $("results").replaceChildren(...body.results.map(card));
  setMessage(`${body.results.length} results for ${what}`);
}

async function searchText(event) {
  event.preventDefault();
  const q = $("query").value.trim();
  if (!q) return;
  const params = new URLSearchParams({ q, k: $("k").value || "12" });
  try {
    showResults(await readJson(await fetch(`/api/search?${params}`)), `"${q}"`);
  } catch (err) {
    setMessage(err.message, true);
  }
}

async function searchImage(file) {
  const form = new FormData();
  form.append("file", file);
  try {
    const response = await fetch(`/api/search/image?k=${$("k").value || "12"}`, { method: "POST", body: form });
    showResults(await readJson(response), file.name);
  } catch (err) {
    setMessage(err.message, true);
  }
}

async function classify(event) {
  event.preventDefault();
  const form = new FormData();
  form.append("file", $("classify-file").files[0]);
  form.append("labels", $("labels").value);
  try {
    const body = await readJson(await fetch("/api/classify", { method: "POST", body: form }));
    $("probs").replaceChildren(...body.results.map((r) => {
      const li = document.createElement("li");
      const bar = document.createElement("div");
      bar.className = "bar";
      bar.style.width = `${(100 * r.prob).toFixed(1)}%`;
      li.textContent = `${r.label}: ${(100 * r.prob).toFixed(1)}%`;
      li.append(bar);
      return li;
    }));
  } catch (err) {
    $("probs").replaceChildren();
    setMessage(err.message, true);
  }
}

function setUpDrop() {
  const drop = $("drop");
  drop.addEventListener("click", () => $("drop-file").click());
  $("drop-file").addEventListener("change", (e) => e.target.files[0] && searchImage(e.target.files[0]));
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    if (e.dataTransfer.files[0]) searchImage(e.dataTransfer.files[0]);
  });
}

async function showHealth() {
  try {
    const h = await readJson(await fetch("/api/health"));
    $("status").textContent = `${h.items} images · ${h.index} index · model ${h.model}`;
  } catch (err) {
    $("status").textContent = `server unreachable: ${err.message}`;
  }
}

$("search-form").addEventListener("submit", searchText);
$("classify-form").addEventListener("submit", classify);
setUpDrop();
showHealth();
