// A running job's page: every two seconds, fetch its live fragment (progress, curves, log tail) with
// "X-Fragment: 1" and swap it in; stop once the fragment says the job finished, or on an error.
// The server renders the fragment (templates/ui/console/jobs_live.html); without this script the page
// is a snapshot with a reload link.
(function () {
  "use strict";
  const slot = document.getElementById("job-live");
  if (!slot || slot.dataset.finished === "true" || !slot.dataset.live) return;
  const url = slot.dataset.live;
  const note = document.getElementById("snapshot-note");
  let timer = null;

  function finished() {
    const live = slot.querySelector(".live");
    return !live || live.dataset.finished === "true";
  }

  function stop(message) {
    if (timer !== null) window.clearTimeout(timer);
    timer = null;
    slot.dataset.finished = "true";
    if (note) note.textContent = message;
  }

  async function poll() {
    timer = null;
    let reply;
    try {
      reply = await fetch(url, { headers: { "X-Fragment": "1" }, credentials: "same-origin", cache: "no-store" });
    } catch (err) {
      timer = window.setTimeout(poll, 5000);  // the server is away for a moment: try again a little later
      return;
    }
    if (!reply.ok) {
      stop("Stopped updating (" + reply.status + "); reload the page to try again.");
      return;
    }
    slot.innerHTML = await reply.text();
    if (finished()) {
      stop("The job finished; reload the page for all of it.");
      return;
    }
    timer = window.setTimeout(poll, 2000);
  }

  timer = window.setTimeout(poll, 2000);
})();
