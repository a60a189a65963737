// Administration helpers shared by the agent, API token and enrolment pages:
// a confirmation dialog that says what an action will do, and a copy button
// for a secret shown once.

import { el } from "./common.js";

/** Ask before an action that cannot be undone. ``title`` names the action
 *  and its object; ``lines`` say what will happen; resolves true when the
 *  admin confirms with the ``confirm`` button, false on Cancel or Escape. */
export function confirmAction({ title, lines, confirm, danger = true }) {
  const ok = el("button", { type: "submit", value: "ok", class: danger ? "danger" : "primary" },
    confirm);
  const cancel = el("button", { type: "submit", value: "cancel", autofocus: true }, "Cancel");
  const heading = el("h2", { id: "confirm-action-title" }, title);
  const dialog = el("dialog", { class: "confirm-action", "aria-labelledby": "confirm-action-title" },
    el("form", { method: "dialog" }, heading,
      el("ul", {}, ...lines.map((line) => el("li", {}, line))),
      el("p", { class: "actions" }, ok, cancel)));
  document.body.append(dialog);
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => {
      resolve(dialog.returnValue === "ok");
      dialog.remove();
    }, { once: true });
    dialog.showModal();
  });
}

/** A button that copies ``field``'s value (an input or textarea) to the
 *  clipboard, and says whether it could. */
export function copyButton(field, label = "Copy") {
  const button = el("button", { type: "button", class: "copy" }, label);
  button.addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(field.value);
      button.textContent = "Copied";
    } catch {
      // No clipboard (a page over plain HTTP, or permission refused): select
      // the text so Ctrl+C copies it.
      field.focus();
      field.select();
      button.textContent = "Selected: press Ctrl+C";
    }
    setTimeout(() => { button.textContent = label; }, 4000);
  });
  return button;
}
