// The upload page: send the chosen image to POST /predict, draw one bar chart per task.
"use strict";

const $ = (id) => document.getElementById(id);

function setStatus(text, isError) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
}

function describeModel() {
  fetch("/health").then((r) => r.json()).then((health) => {
    const m = health.model;
    $("model").textContent = m.save_name + " (epoch " + m.epoch + ", " + m.network + ", tasks: " +
      m.tasks.join(", ") + ")";
  }).catch(() => { $("model").textContent = "the server does not answer /health"; });
}

// class names come from the model's config: always set as text, never as HTML
function renderTask(name, classes) {
  const section = document.createElement("div");
  section.className = "task";
  const title = document.createElement("h2");
  title.textContent = name;
  section.appendChild(title);
  if (!Array.isArray(classes)) {  // a regress task: {"value": number}
    const row = document.createElement("div");
    row.className = "row";
    row.textContent = "value " + Number(classes.value).toPrecision(4);
    section.appendChild(row);
    return section;
  }
  for (const c of classes) {  // classes, or a multilabel task's attributes (every one, with its probability)
    const pct = (100 * c.prob).toFixed(1) + "%";
    const row = document.createElement("div");
    row.className = "row";
    const label = document.createElement("span");
    label.className = "name";
    const text = c.class !== undefined ? c.class : (c.present ? "+ " : "- ") + c.attribute;
    label.textContent = text;
    label.title = text;
    const track = document.createElement("div");
    track.className = "track";
    const bar = document.createElement("div");
    bar.className = "bar";
    bar.style.width = (100 * c.prob).toFixed(2) + "%";
    track.appendChild(bar);
    const value = document.createElement("span");
    value.className = "pct";
    value.textContent = pct;
    row.append(label, track, value);
    section.appendChild(row);
  }
  return section;
}

// a heat map arrives as base64 PNG; shown through a blob: URL, which the page's CSP allows (data: it does not)
function renderCam(cam) {
  const bytes = Uint8Array.from(atob(cam.png), (ch) => ch.charCodeAt(0));
  const figure = document.createElement("figure");
  figure.className = "cam";
  const img = document.createElement("img");
  img.src = URL.createObjectURL(new Blob([bytes], { type: "image/png" }));
  img.alt = "Grad-CAM heat map for class " + cam.class;
  const caption = document.createElement("figcaption");
  caption.textContent = "where it sees " + cam.class + " (" + (100 * cam.prob).toFixed(1) + "%)";
  figure.append(img, caption);
  return figure;
}

function showPreview(file) {
  const img = $("picture");
  if (img.src) URL.revokeObjectURL(img.src);
  img.src = URL.createObjectURL(file);
  $("filename").textContent = file.name + " (" + Math.round(file.size / 1024) + " KiB)";
  $("preview").hidden = false;
}

async function predict(file) {
  showPreview(file);
  $("results").replaceChildren();
  setStatus("predicting " + file.name + "\u2026", false);
  document.body.dataset.state = "busy";
  const form = new FormData();
  form.append("image", file);
  let body;
  try {
    const url = $("cam").checked ? "/predict?cam=1" : "/predict";
    const response = await fetch(url, { method: "POST", body: form });
    body = await response.json();
    if (!response.ok) throw new Error(body.error || response.statusText);
  } catch (err) {
    setStatus("error: " + err.message, true);
    document.body.dataset.state = "error";
    return;
  }
  for (const [task, classes] of Object.entries(body.tasks)) {
    const section = renderTask(task, classes);
    if (body.cams && body.cams[task]) section.appendChild(renderCam(body.cams[task]));
    $("results").appendChild(section);
  }
  setStatus("top " + (body.show ?? body.top_k) + " per task, " + body.model.save_name + " epoch " + body.model.epoch, false);
  document.body.dataset.state = "done";
}

function setUp() {
  describeModel();
  const input = $("image");
  input.addEventListener("change", () => { if (input.files.length) predict(input.files[0]); });
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    if (e.dataTransfer.files.length) predict(e.dataTransfer.files[0]);
  });
}

document.addEventListener("DOMContentLoaded", setUp);
