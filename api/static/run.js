// A run's page: polls the run's API every second and moves its progress bars, until the run has
// ended and every email it queued is sent. Without JavaScript the page refreshes itself instead.
(function () {
  "use strict";
  var section = document.getElementById("run");
  if (!section || section.dataset.live !== "yes") return;
  var ENDED = ["completed", "cancelled", "failed"];
  var number = new Intl.NumberFormat("en-US");

  function set(id, text) {
    var node = document.getElementById(id);
    if (node) node.textContent = text;
  }

  function show(run) {
    var checked = run.removed + run.skipped;
    var bar = document.getElementById("checked");
    bar.max = Math.max(run.total, 1);
    bar.value = checked;
    var sent = document.getElementById("sent");
    sent.max = Math.max(run.emailsQueued, 1);
    sent.value = run.emailsSent;
    set("run-status", run.status);
    set("checked-text", number.format(checked));
    if (run.batchesTotal !== null) {
      set("total-text", number.format(run.total));
      document.getElementById("of-total").hidden = false;
    }
    document.getElementById("counting").hidden =
      run.batchesTotal !== null || ENDED.indexOf(run.status) >= 0;
    set("removed-text", number.format(run.removed));
    set("sent-text", number.format(run.emailsSent));
    set("queued-text", number.format(run.emailsQueued));
    if (run.finishedAt) set("finished", run.finishedAt.slice(0, 16).replace("T", " ") + " UTC");
    var cancel = document.getElementById("cancel-run");
    if (cancel && ENDED.indexOf(run.status) >= 0) cancel.hidden = true;
    return ENDED.indexOf(run.status) < 0 || run.emailsSent < run.emailsQueued;
  }

  function poll() {
    fetch(section.dataset.api, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) {
        if (!response.ok) throw new Error(String(response.status));
        return response.json();
      })
      .then(function (run) {
        if (show(run)) {
          window.setTimeout(poll, 1000);
        } else {
          document.getElementById("live-note").hidden = true;
        }
      })
      .catch(function () { window.setTimeout(poll, 5000); });
  }

  window.setTimeout(poll, 1000);
})();
