// hoopgw console: the little script the pages use (no inline script: the CSP forbids it).
// - #reviews[data-live]: refreshed every few seconds with the server-rendered table, unless
//   someone is typing a reason in it;
// - .player[data-cast]: an asciinema player for a recorded terminal channel;
// - form.terminate: asks before ending someone's session.
"use strict";

const REFRESH_MS = 3000;

function refreshReviews(box) {
  const busy = box.contains(document.activeElement) &&
    document.activeElement.tagName === "INPUT" && document.activeElement.value !== "";
  if (busy) {
    return;
  }
  fetch(box.dataset.live, {
    credentials: "same-origin",
    headers: { "X-Requested-With": "hoopgw-console" },
  })
    .then((response) => {
      if (response.status === 401) {
        window.location.assign("/console/login?ended=idle");
        return null;
      }
      return response.ok ? response.text() : null;
    })
    .then((html) => {
      if (html !== null && !box.contains(document.activeElement)) {
        // Server-rendered and escaped by the template engine; no script runs from it.
        box.innerHTML = html;
      }
    })
    .catch(() => {});
}

document.addEventListener("DOMContentLoaded", () => {
  const box = document.getElementById("reviews");
  if (box && box.dataset.live) {
    window.setInterval(() => refreshReviews(box), REFRESH_MS);
  }
  for (const player of document.querySelectorAll(".player[data-cast]")) {
    if (window.AsciinemaPlayer) {
      window.AsciinemaPlayer.create(player.dataset.cast, player, { fit: "width" });
    }
  }
  for (const form of document.querySelectorAll("form.terminate")) {
    form.addEventListener("submit", (event) => {
      if (!window.confirm("End this session now?")) {
        event.preventDefault();
      }
    });
  }
});
