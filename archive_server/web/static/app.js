// Bildsluss archive: the little the pages do in the browser. No inline script
// anywhere (Content-Security-Policy: default-src 'self').
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  // Full view: a click on a photo toggles between fitted and actual size.
  for (const img of document.querySelectorAll("img.zoomable")) {
    img.addEventListener("click", () => img.classList.toggle("zoomed"));
  }
  // Forms that ask before they act (sign, revoke): the question is in data-confirm.
  for (const form of document.querySelectorAll("form[data-confirm]")) {
    form.addEventListener("submit", (event) => {
      if (!window.confirm(form.dataset.confirm)) event.preventDefault();
    });
  }
});
