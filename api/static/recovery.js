// Recovery codes, shown once: Copy puts them on the clipboard (one a line), Print prints them.
// Without JavaScript the buttons stay hidden; Download still works.
(function () {
  "use strict";
  var copy = document.querySelector("[data-copy]");
  var print = document.querySelector("[data-print]");
  if (copy && navigator.clipboard) {
    copy.hidden = false;
    copy.addEventListener("click", function () {
      var list = document.getElementById(copy.dataset.copy);
      var codes = Array.prototype.map.call(list.querySelectorAll("li"), function (item) {
        return item.textContent.trim();
      });
      navigator.clipboard.writeText(codes.join("\n") + "\n").then(function () {
        var said = document.querySelector("[data-copied]");
        if (said) said.hidden = false;
      });
    });
  }
  if (print) {
    print.hidden = false;
    print.addEventListener("click", function () { window.print(); });
  }
})();
