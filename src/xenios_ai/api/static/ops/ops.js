// Xenios AI operations dashboard: refresh the page's content in place every few seconds, confirm
// cancellations, and keep the URL free of one-off notices. No build step, no dependencies.
(function () {
  "use strict";
  const seconds = Number(document.body.dataset.refresh || "3");
  const pause = document.getElementById("pause");
  let paused = false;
  let busy = false;

  const url = new URL(window.location.href);
  if (url.searchParams.has("notice")) {
    url.searchParams.delete("notice");
    window.history.replaceState(null, "", url.toString());
  }

  function interacting() {
    const active = document.activeElement;
    return active !== null && active.closest("form.filters, select") !== null;
  }

  async function refresh() {
    if (paused || busy || document.hidden || interacting()) return;
    busy = true;
    try {
      const response = await fetch(window.location.href, { credentials: "same-origin", cache: "no-store" });
      if (!response.ok) throw new Error("HTTP " + response.status);
      const page = new DOMParser().parseFromString(await response.text(), "text/html");
      const fresh = page.getElementById("live");
      const live = document.getElementById("live");
      if (fresh && live) live.innerHTML = fresh.innerHTML;
      const updated = page.getElementById("updated");
      if (updated) document.getElementById("updated").textContent = updated.textContent;
    } catch (error) {
      document.getElementById("updated").textContent = "refresh failed (" + error.message + "), retrying";
    } finally {
      busy = false;
    }
  }

  pause.addEventListener("click", function () {
    paused = !paused;
    pause.textContent = paused ? "resume" : "pause";
    if (!paused) refresh();
  });

  document.addEventListener("submit", function (event) {
    const form = event.target;
    const question = form.dataset.confirm;
    if (question && !window.confirm(question)) {
      event.preventDefault();
      return;
    }
    for (const button of form.querySelectorAll("button")) button.disabled = true;
    paused = true;  // the page is about to be replaced by the action's answer
  });

  window.setInterval(refresh, Math.max(1, seconds) * 1000);
})();
