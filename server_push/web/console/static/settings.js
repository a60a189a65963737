// The settings forms: each section is read and replaced through
// /api/v1/settings/{section}; the server checks it, and a refusal is shown
// next to the form it concerns. Fields the form does not know (added by a
// newer server) are sent back unchanged.

import { api, failed } from "./common.js";

const loaded = new Map();  // section -> its values as last read or saved

function getPath(data, name) {
  return name.split(".").reduce((value, key) => (value == null ? undefined : value[key]), data);
}

function setPath(data, name, value) {
  const keys = name.split(".");
  const last = keys.pop();
  const parent = keys.reduce((obj, key) => {
    obj[key] = typeof obj[key] === "object" && obj[key] !== null ? obj[key] : {};
    return obj[key];
  }, data);
  if (value === undefined) delete parent[last];
  else parent[last] = value;
}

function shown(value, type) {
  if (value === undefined || value === null) return "";
  if (type === "list") return value.join("\n");
  if (type === "int-list") return value.join(", ");
  return String(value);
}

// A value the browser cannot read as a number is sent as typed, so the
// server's message names the problem.
function asNumber(text) {
  return text !== "" && Number.isFinite(Number(text)) ? Number(text) : text;
}

function parsed(text, type) {
  const value = text.trim();
  if (type === "list") return value.split(/[\s,]+/).filter(Boolean);
  if (type === "int-list") return value.split(/[\s,]+/).filter(Boolean).map(asNumber);
  if (type === "int" || type === "number") return value === "" ? undefined : asNumber(value);
  return value;
}

function fill(form, data) {
  for (const field of form.querySelectorAll("[name]")) {
    if (field.type === "checkbox") field.checked = getPath(data, field.name) === true;
    else field.value = shown(getPath(data, field.name), field.dataset.type);
  }
}

function collect(form, section) {
  const data = structuredClone(loaded.get(section) ?? {});
  for (const field of form.querySelectorAll("[name]")) {
    setPath(data, field.name, field.type === "checkbox" ? field.checked
      : parsed(field.value, field.dataset.type));
  }
  return data;
}

function say(form, kind, text) {
  const error = form.querySelector(".form-error");
  const ok = form.querySelector(".form-ok");
  error.hidden = kind !== "error";
  ok.hidden = kind !== "ok";
  (kind === "error" ? error : ok).textContent = text;
}

async function load(form) {
  const section = form.dataset.section;
  try {
    const data = await api("GET", `/api/v1/settings/${section}`);
    loaded.set(section, data);
    fill(form, data);
  } catch (error) {
    failed(`Loading the ${section} settings`, error);
  }
}

async function save(form) {
  const section = form.dataset.section;
  const button = form.querySelector("button[type=submit]");
  button.disabled = true;
  try {
    const stored = await api("PUT", `/api/v1/settings/${section}`, collect(form, section));
    loaded.set(section, stored);
    fill(form, stored);
    say(form, "ok", `Saved at ${new Date().toLocaleTimeString()}.`);
  } catch (error) {
    say(form, "error", `Not saved: ${error.message}. Correct the value and save again.`);
  } finally {
    button.disabled = false;
  }
}

for (const form of document.querySelectorAll("form[data-section]")) {
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    save(form);
  });
  load(form);
}
