// The account page: change one's own password (every session of the user
// ends; the answer's cookie keeps this browser logged in), the console
// sessions an admin may end, and the console users an admin manages.

import { api, el, failed, notify, timeCell, when } from "./common.js";
import { confirmAction } from "./confirm.js";

const table = document.getElementById("sessions");

function row(session) {
  const end = el("button", { type: "button" }, session.current ? "End (log out)" : "End session");
  end.addEventListener("click", async () => {
    end.disabled = true;
    try {
      await api("DELETE", `/api/v1/sessions/${encodeURIComponent(session.id)}`);
    } catch (error) {
      end.disabled = false;
      failed("Ending the session", error);
      return;
    }
    if (session.current) {
      window.location.assign("/console/login?bye=1");
      return;
    }
    notify("ok", `The session of ${session.username} from ${session.source} has ended.`);
    await load();

// --- console users --------------------------------------------------------

const users = document.getElementById("users");
const me = document.querySelector(".top .who")?.textContent.trim();

function showSecret(name, password) {
  document.getElementById("user-secret-name").textContent = name;
  document.getElementById("user-secret-value").textContent = password;
  document.getElementById("user-secret").hidden = false;
}

async function userAction(user, what) {
  const name = user.username;
  const steps = {
    disable: { title: `Disable ${name}?`, confirm: "Disable",
      lines: [`${name} can no longer log in.`, "Every session of theirs ends now."],
      call: () => api("POST", `/api/v1/users/${encodeURIComponent(name)}/disable`) },
    enable: { call: () => api("POST", `/api/v1/users/${encodeURIComponent(name)}/enable`) },
    reset: { title: `Reset the password of ${name}?`, confirm: "Reset password",
      lines: ["A new password is made and shown once.", "Every session of theirs ends now."],
      call: () => api("POST", `/api/v1/users/${encodeURIComponent(name)}/password`, {}) },
    delete: { title: `Delete ${name}?`, confirm: "Delete",
      lines: [`${name} can no longer log in; the name can be used again.`,
        "Every session of theirs ends now.", "Their lines in the audit log stay."],
      call: () => api("DELETE", `/api/v1/users/${encodeURIComponent(name)}`) },
  }[what];
  if (steps.title && !(await confirmAction(steps))) return;
  let answer;
  try {
    answer = await steps.call();
  } catch (error) {
    failed(`${what[0].toUpperCase()}${what.slice(1)} ${name}`, error);
    return;
  }
  if (what === "reset") showSecret(name, answer.password);
  else notify("ok", `${name}: ${{ disable: "disabled", enable: "enabled", delete: "deleted" }[what]}.`);
  if (name === me && what !== "enable") {
    window.location.assign("/console/login");
    return;
  }
  await Promise.all([loadUsers(), load()]);
}

function userRow(user) {
  const buttons = [
    user.disabled ? ["enable", "Enable"] : ["disable", "Disable"],
    ["reset", "Reset password"], ["delete", "Delete"],
  ].map(([what, label]) => {
    const button = el("button", { type: "button", class: what === "delete" ? "danger" : null,
      "aria-label": `${label} ${user.username}` }, label);
    button.addEventListener("click", () => userAction(user, what));
    return button;
  });
  return el("tr", { "data-user": user.username },
    el("td", {}, user.username),
    el("td", {}, user.role),
    el("td", {}, user.disabled ? "disabled" : "enabled"),
    el("td", {}, timeCell(user.created_at)),
    el("td", { class: "actions" }, ...buttons));
}

async function loadUsers() {
  try {
    users.replaceChildren(...(await api("GET", "/api/v1/users")).map(userRow));
  } catch (error) {
    failed("Loading the users", error);
  }
}

const userForm = document.getElementById("form-user");
userForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  const problem = userForm.querySelector(".form-error");
  problem.hidden = true;
  const username = userForm.elements.username.value.trim();
  let made;
  try {
    made = await api("POST", "/api/v1/users", { username });
  } catch (error) {
    problem.textContent = error.message;
    problem.hidden = false;
    return;
  }
  userForm.reset();
  showSecret(made.username, made.password);
  await loadUsers();
});
  });
  return el("tr", { "data-session-id": session.id, class: session.current ? "current" : null },
    el("td", {}, session.username, session.current ? el("span", { class: "muted" }, " (this browser)") : null),
    el("td", {}, session.source),
    el("td", { class: "user-agent", title: session.user_agent }, session.user_agent || "—"),
    el("td", {}, timeCell(session.created_at)),
    el("td", {}, timeCell(session.last_seen)),
    el("td", {}, when(session.expires_at)),
    el("td", {}, end));
}

async function load() {
  try {
    const sessions = await api("GET", "/api/v1/sessions");
    table.replaceChildren(...sessions.map(row));
  } catch (error) {
    failed("Loading the sessions", error);
  }
}

const form = document.getElementById("form-password");
form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const problem = form.querySelector(".form-error");
  problem.hidden = true;
  const body = {
    current_password: form.elements.current_password.value,
    new_password: form.elements.new_password.value,
  };
  try {
    await api("POST", "/api/v1/account/password", body);
  } catch (error) {
    problem.textContent = error.message;
    problem.hidden = false;
    return;
  }
  // The session (and its CSRF token in this page) is new: load the page again.
  window.location.assign("/console/account?changed=1");
});

if (new URLSearchParams(window.location.search).get("changed")) {
  notify("ok", "Your password has changed; every other session of yours has ended.");
}
load();

// --- console users --------------------------------------------------------

const users = document.getElementById("users");
const me = document.querySelector(".top .who")?.textContent.trim();

function showSecret(name, password) {
  document.getElementById("user-secret-name").textContent = name;
  document.getElementById("user-secret-value").textContent = password;
  document.getElementById("user-secret").hidden = false;
}

async function userAction(user, what) {
  const name = user.username;
  const steps = {
    disable: { title: `Disable ${name}?`, confirm: "Disable",
      lines: [`${name} can no longer log in.`, "Every session of theirs ends now."],
      call: () => api("POST", `/api/v1/users/${encodeURIComponent(name)}/disable`) },
    enable: { call: () => api("POST", `/api/v1/users/${encodeURIComponent(name)}/enable`) },
    reset: { title: `Reset the password of ${name}?`, confirm: "Reset password",
      lines: ["A new password is made and shown once.", "Every session of theirs ends now."],
      call: () => api("POST", `/api/v1/users/${encodeURIComponent(name)}/password`, {}) },
    delete: { title: `Delete ${name}?`, confirm: "Delete",
      lines: [`${name} can no longer log in; the name can be used again.`,
        "Every session of theirs ends now.", "Their lines in the audit log stay."],
      call: () => api("DELETE", `/api/v1/users/${encodeURIComponent(name)}`) },
  }[what];
  if (steps.title && !(await confirmAction(steps))) return;
  let answer;
  try {
    answer = await steps.call();
  } catch (error) {
    failed(`${what[0].toUpperCase()}${what.slice(1)} ${name}`, error);
    return;
  }
  if (what === "reset") showSecret(name, answer.password);
  else notify("ok", `${name}: ${{ disable: "disabled", enable: "enabled", delete: "deleted" }[what]}.`);
  if (name === me && what !== "enable") {
    window.location.assign("/console/login");
    return;
  }
  await Promise.all([loadUsers(), load()]);
}

function userRow(user) {
  const buttons = [
    user.disabled ? ["enable", "Enable"] : ["disable", "Disable"],
    ["reset", "Reset password"], ["delete", "Delete"],
  ].map(([what, label]) => {
    const button = el("button", { type: "button", class: what === "delete" ? "danger" : null,
      "aria-label": `${label} ${user.username}` }, label);
    button.addEventListener("click", () => userAction(user, what));
    return button;
  });
  return el("tr", { "data-user": user.username },
    el("td", {}, user.username),
    el("td", {}, user.role),
    el("td", {}, user.disabled ? "disabled" : "enabled"),
    el("td", {}, timeCell(user.created_at)),
    el("td", { class: "actions" }, ...buttons));
}

async function loadUsers() {
  try {
    users.replaceChildren(...(await api("GET", "/api/v1/users")).map(userRow));
  } catch (error) {
    failed("Loading the users", error);
  }
}

const userForm = document.getElementById("form-user");
userForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  const problem = userForm.querySelector(".form-error");
  problem.hidden = true;
  const username = userForm.elements.username.value.trim();
  let made;
  try {
    made = await api("POST", "/api/v1/users", { username });
  } catch (error) {
    problem.textContent = error.message;
    problem.hidden = false;
    return;
  }
  userForm.reset();
  showSecret(made.username, made.password);
  await loadUsers();
});

loadUsers();
