/* Bundle upload with a progress bar (registry/portal/uploads.py).
 *
 * Sends the upload form with XMLHttpRequest so upload.onprogress can draw the
 * bytes sent in the <progress> element and in a live text, then puts the
 * server's answer (the digest and verification state, or the refusal) in
 * place of #upload-result. Without JavaScript the form is a plain multipart
 * POST and the server answers with the whole page. No inline script or style:
 * the CSP forbids them.
 */
(function () {
  "use strict";

  var form = document.getElementById("upload-form");
  if (!form || !window.XMLHttpRequest || !window.FormData) {
    return;
  }
  var box = document.getElementById("upload-progress");
  var bar = document.getElementById("upload-bar");
  var text = document.getElementById("upload-text");
  var lang = document.documentElement.lang || "en";
  var size = new Intl.NumberFormat(lang, {
    style: "unit", unit: "megabyte", maximumFractionDigits: 1
  });
  var percent = new Intl.NumberFormat(lang, { style: "percent" });

  function say(template, sent, total) {
    text.textContent = template
      .replace("{sent}", size.format(sent / 1e6))
      .replace("{total}", size.format(total / 1e6))
      .replace("{percent}", percent.format(total ? sent / total : 0));
  }

  function showResult(html) {
    var old = document.getElementById("upload-result");
    var holder = document.createElement("div");
    holder.innerHTML = html;
    var fresh = holder.querySelector("#upload-result");
    if (old && fresh) {
      old.replaceWith(fresh);
      if (window.htmx) {
        window.htmx.process(fresh);
      }
      var focus = fresh.querySelector("[role=alert], [role=status]");
      if (focus) {
        focus.setAttribute("tabindex", "-1");
        focus.focus();
      }
    }
  }

  form.addEventListener("submit", function (event) {
    var input = form.querySelector("input[type=file]");
    if (!input || !input.files.length) {
      return; // let the server say the file is missing
    }
    event.preventDefault();
    var file = input.files[0];
    var button = form.querySelector("button[type=submit]");
    var limit = Number(form.dataset.maxBytes || 0);
    box.hidden = false;
    bar.value = 0;
    if (limit && file.size > limit) {
      text.textContent = text.dataset.tooLarge;
      return;
    }
    var xhr = new XMLHttpRequest();
    xhr.open("POST", form.action);
    xhr.setRequestHeader("X-Requested-With", "XMLHttpRequest");
    var token = form.querySelector("input[name=csrfmiddlewaretoken]");
    if (token) {
      xhr.setRequestHeader("X-CSRFToken", token.value);
    }
    xhr.upload.onprogress = function (e) {
      var total = e.lengthComputable ? e.total : file.size;
      bar.max = total;
      bar.value = e.loaded;
      say(text.dataset.sent, e.loaded, total);
    };
    xhr.upload.onload = function () {
      bar.value = bar.max;
      text.textContent = text.dataset.done;
    };
    xhr.onload = function () {
      // Accepted: the version has its bundle now, a second one would be refused.
      var accepted = xhr.status >= 200 && xhr.status < 300;
      button.disabled = accepted;
      input.disabled = accepted;
      if (xhr.responseText && xhr.responseText.indexOf("upload-result") !== -1) {
        showResult(xhr.responseText);
        say(text.dataset.sent, bar.max, bar.max);
      } else {
        text.textContent = text.dataset.failed;
      }
    };
    xhr.onerror = function () {
      button.disabled = false;
      text.textContent = text.dataset.failed;
    };
    button.disabled = true;
    xhr.send(new FormData(form));
  });
})();
