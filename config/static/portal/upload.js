/* Bundle upload with a progress bar (registry/portal/uploads.py).
 *
 * Uses the API's resumable upload (docs/artifacts.md): the file is cut with
 * File.slice into the form's data-part-size parts, each hashed with Web
 * Crypto and PUT with its Content-Digest, three in flight; upload.onprogress
 * of each part adds to the bytes drawn in the <progress> element and in a
 * live text. The session id is kept in localStorage under the version's
 * uploads URL, so choosing the same file again after a reload sends only
 * the parts the server lacks. Once completed, the server's answer (the
 * digest and verification state, or the refusal) replaces #upload-result.
 * Without fetch or Web Crypto the form goes as one XMLHttpRequest; without
 * JavaScript it is a plain multipart POST and the server answers with the
 * whole page. No inline script or style: the CSP forbids them.
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

  var token = form.querySelector("input[name=csrfmiddlewaretoken]");
  var resumable = Boolean(
    window.fetch && window.crypto && window.crypto.subtle && form.dataset.uploads
  );
  var IN_FLIGHT = 3;

  function api(method, url, body) {
    var headers = { "X-CSRFToken": token ? token.value : "" };
    if (body) {
      headers["Content-Type"] = "application/json";
    }
    return fetch(url, {
      method: method, headers: headers, credentials: "same-origin",
      body: body ? JSON.stringify(body) : undefined
    }).then(function (response) {
      return response.json().catch(function () { return {}; }).then(function (data) {
        return { status: response.status, data: data };
      });
    });
  }

  function b64(buffer) {
    var bytes = new Uint8Array(buffer);
    var binary = "";
    for (var i = 0; i < bytes.length; i++) {
      binary += String.fromCharCode(bytes[i]);
    }
    return window.btoa(binary);
  }

  function putPart(url, blob, onProgress) {
    return blob.arrayBuffer().then(function (buffer) {
      return window.crypto.subtle.digest("SHA-256", buffer).then(function (digest) {
        return new Promise(function (resolve, reject) {
          var xhr = new XMLHttpRequest();
          xhr.open("PUT", url);
          xhr.setRequestHeader("Content-Type", "application/octet-stream");
          xhr.setRequestHeader("Content-Digest", "sha-256=:" + b64(digest) + ":");
          xhr.setRequestHeader("X-CSRFToken", token ? token.value : "");
          xhr.upload.onprogress = function (e) { onProgress(e.loaded); };
          xhr.onload = function () {
            if (xhr.status === 200) {
              onProgress(blob.size);
              resolve();
            } else {
              reject(new Error(xhr.responseText));
            }
          };
          xhr.onerror = function () { reject(new Error("network")); };
          xhr.send(buffer);
        });
      });
    });
  }

  function session(file) {
    // The stored session, if it is this file's and still open; else a new one.
    var key = "civitas-upload:" + form.dataset.uploads;
    var mark = [file.name, file.size, file.lastModified].join("|");
    var saved = null;
    try {
      saved = JSON.parse(window.localStorage.getItem(key) || "null");
    } catch (e) {
      saved = null;
    }
    var fresh = function () {
      return api("POST", form.dataset.uploads, {
        size: file.size, part_size: Number(form.dataset.partSize), filename: file.name
      }).then(function (answer) {
        if (answer.status !== 201) {
          throw new Error(answer.data.message || "refused");
        }
        window.localStorage.setItem(key, JSON.stringify({ mark: mark, id: answer.data.id }));
        return answer.data;
      });
    };
    if (!saved || saved.mark !== mark) {
      return fresh();
    }
    return api("GET", form.dataset.uploads + saved.id + "/").then(function (answer) {
      return answer.status === 200 && answer.data.state === "open" ? answer.data : fresh();
    });
  }

  function sendResumable(file, done, failed) {
    var sent = {};
    var total = file.size;
    bar.max = total;
    function progress(number, loaded) {
      sent[number] = loaded;
      var sum = 0;
      Object.keys(sent).forEach(function (k) { sum += sent[k]; });
      bar.value = sum;
      say(text.dataset.sent, sum, total);
    }
    session(file).then(function (upload) {
      var base = form.dataset.uploads + upload.id + "/";
      var have = {};
      upload.parts.forEach(function (p) { have[p.number] = true; progress(p.number, p.size); });
      var queue = [];
      for (var n = 1; n <= upload.part_count; n++) {
        if (!have[n]) {
          queue.push(n);
        }
      }
      function worker() {
        var number = queue.shift();
        if (number === undefined) {
          return Promise.resolve();
        }
        var start = (number - 1) * upload.part_size;
        var blob = file.slice(start, Math.min(start + upload.part_size, file.size));
        return putPart(base + "parts/" + number + "/", blob, function (loaded) {
          progress(number, loaded);
        }).then(worker);
      }
      var workers = [];
      for (var i = 0; i < IN_FLIGHT; i++) {
        workers.push(worker());
      }
      return Promise.all(workers).then(function () {
        text.textContent = text.dataset.done;
        return api("POST", base + "complete/");
      }).then(function (answer) {
        if (answer.status !== 202 && answer.status !== 409) {
          window.localStorage.removeItem("civitas-upload:" + form.dataset.uploads);
        }
        return fetch(form.action + "?result=1", {
          headers: { "X-Requested-With": "XMLHttpRequest" }, credentials: "same-origin"
        }).then(function (page) {
          return page.text();
        }).then(function (html) {
          done(answer.status === 202, html, answer.data);
        });
      });
    }).catch(function () {
      failed();
    });
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
    if (resumable) {
      button.disabled = true;
      sendResumable(file, function (accepted, html, answer) {
        button.disabled = accepted;
        input.disabled = accepted;
        if (accepted) {
          window.localStorage.removeItem("civitas-upload:" + form.dataset.uploads);
          showResult(html);
          say(text.dataset.sent, bar.max, bar.max);
        } else {
          text.textContent = text.dataset.failed + " " + (answer.message || "");
        }
      }, function () {
        button.disabled = false;
        text.textContent = text.dataset.failed;
      });
      return;
    }
    var xhr = new XMLHttpRequest();
    xhr.open("POST", form.action);
    xhr.setRequestHeader("X-Requested-With", "XMLHttpRequest");
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
