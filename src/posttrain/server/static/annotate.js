// The annotator's workspace: keyboard first, and the next item swapped in without a page reload.
// The server renders every item (templates/ui/item.html); this script only posts the page's own
// forms with "X-Fragment: 1", swaps the answered fragment in, and keeps the timers.
(function () {
  "use strict";
  const ws = document.getElementById("workspace");
  if (!ws) return;
  const slot = document.getElementById("item-slot");
  const help = document.getElementById("help");
  let started = performance.now();
  let deadline = null;
  let busy = false;

  const form = () => document.getElementById("label-form");
  const elapsed = () => (performance.now() - started) / 1000;

  function clock(seconds) {
    const s = Math.max(0, Math.floor(seconds));
    return Math.floor(s / 60) + ":" + String(s % 60).padStart(2, "0");
  }

  function startItem() {
    started = performance.now();
    const item = document.getElementById("item");
    const left = item ? parseFloat(item.dataset.leaseSeconds || "") : NaN;
    deadline = isNaN(left) ? null : started + left * 1000;
    if (document.activeElement && document.activeElement !== document.body) document.activeElement.blur();
    tick();
  }

  function tick() {
    const timer = document.getElementById("timer");
    if (timer) timer.textContent = clock(elapsed());
    const lease = document.getElementById("lease-left");
    if (!lease || deadline === null) return;
    const left = (deadline - performance.now()) / 1000;
    lease.textContent = left > 0 ? "lease ends in " + clock(left) : "";
    if (left <= 0) showExpired();
  }

  function showExpired() {
    const box = document.getElementById("expired");
    if (!box || !box.hidden) return;
    box.hidden = false;
    const f = form();
    if (f) f.classList.add("stale");
  }

  function showError(message) {
    const box = document.createElement("p");
    box.className = "alert alert-error";
    box.setAttribute("role", "alert");
    box.textContent = message;
    slot.prepend(box);
  }

  async function post(url, data) {
    if (busy) return;
    busy = true;
    data.set("csrf", ws.dataset.csrf);
    try {
      const reply = await fetch(url, {
        method: "POST",
        body: new URLSearchParams(data),
        headers: { "X-Fragment": "1", "X-CSRF-Token": ws.dataset.csrf },
        credentials: "same-origin",
      });
      if (reply.status === 401) {
        location.href = "/ui/login?next=" + encodeURIComponent(location.pathname);
        return;
      }
      slot.innerHTML = await reply.text(); // server-rendered and escaped; the CSP runs no inline script
      startItem();
    } catch (err) {
      showError("Could not reach the server (" + err.message + "); try again.");
    } finally {
      busy = false;
    }
  }

  function nextItem() {
    const data = new FormData();
    data.set("expired", "1");
    post("/ui/annotate/" + encodeURIComponent(ws.dataset.queue) + "/next", data);
  }

  document.addEventListener("submit", (event) => {
    const f = event.target;
    if (f.id !== "label-form") return;
    event.preventDefault();
    const submitter = event.submitter;
    const data = new FormData(f, submitter);
    data.set("seconds", elapsed().toFixed(2));
    post((submitter && submitter.getAttribute("formaction")) || f.getAttribute("action"), data);
  });

  document.addEventListener("click", (event) => {
    const t = event.target;
    if (t.closest("#next-button")) nextItem();
    else if (t.closest("#help-button")) help.hidden = !help.hidden;
    else if (t === help) help.hidden = true;
  });

  document.addEventListener("keydown", (event) => {
    const t = event.target;
    const typing = t.matches && t.matches("textarea, input[type=text], input[type=number], input[type=password]");
    const f = form();
    if (event.key === "Escape") {
      if (!help.hidden) help.hidden = true;
      else if (typing) t.blur();
      return;
    }
    if (typing) {
      if (event.key === "Enter" && (event.ctrlKey || event.metaKey) && f) {
        event.preventDefault();
        f.requestSubmit(f.querySelector("button.primary") || undefined);
      } else if (event.key === "Enter" && t.tagName === "INPUT") {
        event.preventDefault(); // Enter in the note must not pick the first button's label
        t.blur();
      }
      return;
    }
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    if (event.key === "?") {
      event.preventDefault();
      help.hidden = !help.hidden;
      return;
    }
    if (!help.hidden) return;
    const expired = document.getElementById("expired");
    if (expired && !expired.hidden && event.key === "Enter") {
      event.preventDefault();
      nextItem();
      return;
    }
    if (!f || ((event.key === "Enter" || event.key === " ") && t.matches("button, input"))) return;
    const field = { e: "textarea", c: "input.note" }[event.key];
    if (field) {
      const box = f.querySelector(field);
      if (box) {
        event.preventDefault();
        box.focus();
        if (box.setSelectionRange) box.setSelectionRange(box.value.length, box.value.length);
      }
      return;
    }
    const target = Array.from(f.querySelectorAll("[data-key]")).find((el) =>
      el.dataset.key.split(" ").includes(event.key)
    );
    if (!target) return;
    event.preventDefault();
    if (target.type === "checkbox") target.checked = !target.checked;
    else f.requestSubmit(target);
  });

  startItem();
  setInterval(tick, 250);
})();
