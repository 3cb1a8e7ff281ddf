// clawbox dashboard: keeps the live parts of a page current. An element with `data-sse` opens
// that event stream; `reset` replaces its content, `append` adds to it (the HTML is rendered
// and escaped by the host). `data-follow` keeps the page scrolled to the newest entry while
// the reader is at the bottom. Forms with `data-confirm` ask first; forms with `data-once`
// send once (an answer's second click would only be told it was answered already).
"use strict";

document.querySelectorAll("[data-sse]").forEach(function (el) {
  var source = new EventSource(el.getAttribute("data-sse"));
  var atBottom = function () {
    return window.innerHeight + window.scrollY >= document.body.scrollHeight - 40;
  };
  var update = function (change) {
    var follow = el.hasAttribute("data-follow") && atBottom();
    change();
    document.body.classList.remove("stale");
    if (follow) {
      window.scrollTo(0, document.body.scrollHeight);
    }
  };
  source.addEventListener("reset", function (e) {
    update(function () { el.innerHTML = e.data; });
  });
  source.addEventListener("append", function (e) {
    update(function () { el.insertAdjacentHTML("beforeend", e.data); });
  });
  source.addEventListener("error", function () {
    document.body.classList.add("stale");
  });
});

document.querySelectorAll("form[data-confirm]").forEach(function (form) {
  form.addEventListener("submit", function (e) {
    if (!window.confirm(form.getAttribute("data-confirm"))) {
      e.preventDefault();
    }
  });
});

document.addEventListener("submit", function (e) {
  var form = e.target;
  if (form.hasAttribute && form.hasAttribute("data-once")) {
    if (form.getAttribute("data-sent")) {
      e.preventDefault();
    }
    form.setAttribute("data-sent", "1");
  }
});
