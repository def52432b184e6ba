// Confirm dialogs: the server renders a confirm step as an open <dialog> (which works without
// JavaScript); this upgrades it to a modal one (showModal: a backdrop, focus inside, the rest of
// the page inert, Escape closes), and shows a "when" step's date field only for "On a date".
// Closing it (Escape or its Cancel link) leaves the page as it was, without the change.
(function () {
  "use strict";
  var dialogs = document.querySelectorAll("dialog[data-modal][open]");
  Array.prototype.forEach.call(dialogs, function (dialog) {
    if (typeof dialog.showModal !== "function") return;
    dialog.close();
    dialog.showModal();
    // "Now" or "On a date": the date's field only when it is asked for.
    var date = dialog.querySelector("[data-when-date]");
    var onDate = dialog.querySelector("input[name=when][value=date]");
    if (date && onDate) {
      var sync = function () { date.hidden = !onDate.checked; };
      Array.prototype.forEach.call(dialog.querySelectorAll("input[name=when]"), function (radio) {
        radio.addEventListener("change", sync);
      });
      sync();
    }
    var cancel = dialog.querySelector("[data-close]");
    if (cancel) {
      cancel.addEventListener("click", function (event) {
        event.preventDefault();
        dialog.close();
      });
    }
  });
})();
