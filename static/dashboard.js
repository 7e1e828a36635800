// The dashboard's scripts: plain JavaScript, no libraries, no network but this server.
"use strict";

const sts = (() => {
  const root = document.body.dataset.root || "";
  const $ = (selector) => document.querySelector(selector);

  async function call(method, path, body, headers) {
    const started = performance.now();
    const response = await fetch(root + path, { method, body, headers });
    const text = await response.text();
    return { response, text, ms: performance.now() - started };
  }

  // "1 request", "2 requests", "0 errors".
  function plural(count, noun) {
    return `${count} ${noun}${count === 1 ? "" : "s"}`;
  }

  // Axis labels as plain numbers (120, 4.5, 0.25), never 1.2e+2.
  function plain(value) {
    if (value === 0) return "0";
    const digits = value >= 10 ? 0 : value >= 1 ? 1 : 2;
    return String(Number(value.toFixed(digits)));
  }

  function pretty(text) {
    try {
      return JSON.stringify(JSON.parse(text), null, 2);
    } catch {
      return text;
    }
  }

  function show(target, status, result) {
    target.textContent = pretty(result.text);
    target.classList.toggle("failed", !result.response.ok);
    status.textContent = `${result.response.status} ${result.response.statusText} · ${result.ms.toFixed(1)} ms`;
  }

  function modelPage() {
    const data = JSON.parse($("#model-data").textContent);
    const signature = $("#signature");
    if (!signature) return;
    const request = $("#request");
    const version = $("#version");

    // The version picker writes `model_version` into the request (absent: the latest).
    function chooseVersion() {
      let body;
      try {
        body = JSON.parse(request.value);
      } catch {
        return;  // the user's own text: left as it is
      }
      if (version.value === "") delete body.model_version;
      else body.model_version = /^\d+$/.test(version.value) ? Number(version.value) : version.value;
      request.value = JSON.stringify(body, null, 2);
    }

    function chooseSignature() {
      request.value = data.examples[signature.value] || "{}";
      chooseVersion();
      const images = data.images[signature.value] || [];
      $("#upload").hidden = images.length === 0;
      $("#upload-input").textContent = images[0] || "";
      loadClient();
    }

    $("#send").addEventListener("click", async () => {
      $("#request-status").textContent = "sending…";
      const result = await call("POST", "/", request.value, { "Content-Type": "application/json" });
      show($("#response"), $("#request-status"), result);
    });

    const file = $("#image-file");
    file.addEventListener("change", () => {
      const chosen = file.files[0];
      const preview = $("#preview");
      preview.hidden = !chosen;
      $("#send-image").disabled = !chosen;
      if (chosen) preview.src = URL.createObjectURL(chosen);
    });
    $("#send-image").addEventListener("click", async () => {
      const form = new FormData();
      form.append("model_name", data.name);
      form.append("signature_name", signature.value);
      if (version.value !== "") form.append("model_version", version.value);
      form.append("image", file.files[0]);
      $("#image-status").textContent = "sending…";
      const result = await call("POST", "/", form);
      show($("#image-response"), $("#image-status"), result);
    });

    // Generated clients, one tab per language.
    let language = document.querySelector(".tab").dataset.language;
    let filename = document.querySelector(".tab").dataset.filename;
    function clientPath(lang) {
      const query = new URLSearchParams({
        language: lang,
        protocol: $("#protocol").value,
        signature_name: signature.value,
      });
      return `/v1/models/${encodeURIComponent(data.name)}/gen_client?${query}`;
    }
    async function loadClient() {
      const result = await call("GET", clientPath(language));
      const code = $("#client-code");
      code.textContent = result.text;
      code.classList.toggle("failed", !result.response.ok);
      const run = {
        bash: `bash ${filename}`,
        python: `python3 ${filename}`,
        golang: `go run ${filename}`,
        javascript: `node ${filename}`,
        json: `curl -X POST ${location.origin}${root}/ -d @${filename}`,
      }[language];
      $("#curl-line").textContent =
        `curl '${location.origin}${root}${clientPath(language)}' > ${filename} && ${run}`;
    }
    for (const tab of document.querySelectorAll(".tab")) {
      tab.addEventListener("click", () => {
        for (const other of document.querySelectorAll(".tab")) other.removeAttribute("aria-selected");
        tab.setAttribute("aria-selected", "true");
        language = tab.dataset.language;
        filename = tab.dataset.filename;
        loadClient();
      });
    }
    $("#protocol").addEventListener("change", loadClient);
    signature.addEventListener("change", chooseSignature);
    version.addEventListener("change", chooseVersion);

    $("#copy").addEventListener("click", async () => {
      const text = $("#client-code").textContent;
      try {
        await navigator.clipboard.writeText(text);
      } catch {
        // Without a secure context (plain http off localhost): select it for Ctrl+C.
        const range = document.createRange();
        range.selectNodeContents($("#client-code"));
        getSelection().removeAllRanges();
        getSelection().addRange(range);
        document.execCommand("copy");
      }
      $("#copy-status").textContent = "copied";
      setTimeout(() => ($("#copy-status").textContent = ""), 1500);
    });
    $("#download").addEventListener("click", () => {
      const link = document.createElement("a");
      link.href = URL.createObjectURL(new Blob([$("#client-code").textContent]));
      link.download = filename;
      link.click();
    });
    chooseSignature();
  }

  // ---------------------------------------------------------------- metrics

  function chart(canvas, series, colors, unit) {
    const ratio = window.devicePixelRatio || 1;
    const width = canvas.clientWidth || canvas.width;
    const height = canvas.clientHeight || canvas.height;
    canvas.width = width * ratio;
    canvas.height = height * ratio;
    const g = canvas.getContext("2d");
    g.scale(ratio, ratio);
    g.clearRect(0, 0, width, height);
    const values = series.flat().filter((v) => v !== null);
    const top = Math.max(...values, unit === "ms" ? 1 : 0.1) * 1.1;
    const pad = 40;
    g.strokeStyle = "#d8dee4";
    g.fillStyle = "#5b6675";
    g.font = "11px system-ui, sans-serif";
    for (const fraction of [0, 0.5, 1]) {
      const y = height - pad / 2 - fraction * (height - pad);
      g.beginPath();
      g.moveTo(pad, y);
      g.lineTo(width, y);
      g.stroke();
      g.fillText(`${plain(top * fraction)}${unit ? " " + unit : ""}`, 0, y + 4);
    }
    series.forEach((points, index) => {
      g.strokeStyle = colors[index];
      g.lineWidth = 2;
      g.beginPath();
      let started = false;
      points.forEach((value, i) => {
        if (value === null) return;
        const x = pad + (i / Math.max(points.length - 1, 1)) * (width - pad);
        const y = height - pad / 2 - (value / top) * (height - pad);
        if (started) g.lineTo(x, y);
        else g.moveTo(x, y);
        started = true;
      });
      g.stroke();
      g.fillStyle = colors[index];
      points.forEach((value, i) => {  // dots too: a lone point draws no line
        if (value === null) return;
        const x = pad + (i / Math.max(points.length - 1, 1)) * (width - pad);
        const y = height - pad / 2 - (value / top) * (height - pad);
        g.beginPath();
        g.arc(x, y, 2.5, 0, 2 * Math.PI);
        g.fill();
      });
    });
  }

  async function refreshMetrics() {
    const result = await call("GET", "/metrics/summary?window=300&step=10");
    if (!result.response.ok) return;
    const summary = JSON.parse(result.text);
    for (const block of document.querySelectorAll(".chart-block")) {
      const points = summary.models[block.dataset.model] || [];
      const step = summary.step_seconds;
      const requests = points.reduce((sum, p) => sum + p.requests, 0);
      const errors = points.reduce((sum, p) => sum + p.errors, 0);
      block.querySelector(".totals").textContent = points.length
        ? `${plural(requests, "request")}, ${plural(errors, "error")} in the last ${summary.window_seconds} s`
        : "no requests in the last five minutes";
      chart(block.querySelector(".rate"), [points.map((p) => p.requests / step)], ["#0969da"]);
      chart(block.querySelector(".latency"), [points.map((p) => p.p50_ms), points.map((p) => p.p99_ms)], ["#1a7f37", "#9a6700"], "ms");
      chart(block.querySelector(".errors"), [points.map((p) => p.errors / step)], ["#cf222e"]);
    }
  }

  function metricsPage() {
    refreshMetrics();
    setInterval(refreshMetrics, 5000);
  }

  return { modelPage, metricsPage, plain, plural };
})();
