// Confirm dialogs: the server renders a confirm step as an open <dialog> (which works without
// JavaScript); this upgrades it to a modal one (showModal: a backdrop, focus inside, the rest of
// the page inert, Escape closes). Closing it (Escape or its Cancel link) leaves the page as it
// was, without the change.
(function () {
  "use strict";
  var dialogs = document.querySelectorAll("dialog[data-modal][open]");
  Array.prototype.forEach.call(dialogs, function (dialog) {
    if (typeof dialog.showModal !== "function") return;
    dialog.close();
    dialog.showModal();
    var cancel = dialog.querySelector("[data-close]");
    if (cancel) {
      cancel.addEventListener("click", function (event) {
        event.preventDefault();
        dialog.close();
      });
    }
  });
})();
