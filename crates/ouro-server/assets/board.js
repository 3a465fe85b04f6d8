// Board drag and drop: dropping a card on a column posts the transition; dropping it on
// another card in the same column re-ranks it (before that card). Refusals show the server's
// message (with the allowed states) above the board. Without script, each card's form works.
(function () {
  "use strict";
  var board = document.getElementById("board");
  if (!board) { return; }
  var url = board.getAttribute("data-move");
  var csrf = board.getAttribute("data-csrf");
  var errorBox = document.getElementById("board-error");
  var dragged = null;

  function showError(msg) {
    errorBox.textContent = msg;
    errorBox.hidden = false;
  }

  function send(fields) {
    var body = new URLSearchParams();
    body.set("_csrf", csrf);
    Object.keys(fields).forEach(function (k) { body.set(k, fields[k]); });
    return fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "content-type": "application/x-www-form-urlencoded", "x-board-js": "1" },
      body: body.toString()
    }).then(function (res) {
      return res.json().then(function (data) {
        if (!res.ok || !data.ok) {
          var allowed = (data.allowed && data.allowed.length) ? " Allowed: " + data.allowed.join(", ") + "." : "";
          showError((data.message || "The move was refused.") + allowed);
          return;
        }
        window.location.reload();
      });
    }).catch(function () { showError("The move could not be saved; check your connection."); });
  }

  board.addEventListener("dragstart", function (ev) {
    var card = ev.target.closest && ev.target.closest(".card");
    if (!card) { return; }
    dragged = card;
    ev.dataTransfer.effectAllowed = "move";
    ev.dataTransfer.setData("text/plain", card.getAttribute("data-key"));
    card.classList.add("dragging");
  });
  board.addEventListener("dragend", function () {
    if (dragged) { dragged.classList.remove("dragging"); }
    dragged = null;
  });
  board.addEventListener("dragover", function (ev) {
    if (dragged && ev.target.closest && ev.target.closest(".board-col")) { ev.preventDefault(); }
  });
  board.addEventListener("drop", function (ev) {
    var col = ev.target.closest && ev.target.closest(".board-col");
    if (!dragged || !col) { return; }
    ev.preventDefault();
    var key = dragged.getAttribute("data-key");
    var from = dragged.closest(".board-col").getAttribute("data-state");
    var to = col.getAttribute("data-state");
    var target = ev.target.closest(".card");
    var fields = { key: key };
    if (to !== from) { fields.to = to; }
    if (target && target !== dragged) { fields.before = target.getAttribute("data-key"); }
    if (!fields.to && !fields.before) { return; }
    errorBox.hidden = true;
    send(fields);
  });
})();
