// The account page: change one's own password (every session of the user
// ends; the answer's cookie keeps this browser logged in), and the console
// sessions an admin may end.

import { api, el, failed, notify, timeCell, when } from "./common.js";

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
