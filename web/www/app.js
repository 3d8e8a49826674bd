// The page: recordings in (files, drops or the microphone), results out.
// All the work goes through window.nexttdnn (api.js).

import { nexttdnn, RECORDING_SECONDS } from "./api.js";

const $ = (id) => document.getElementById(id);
const status = $("status");
const fmt = (x, d = 4) => (x === null || x === undefined ? "–" : Number(x).toFixed(d));
const escape = (s) => String(s).replace(/[&<>"]/g, (c) => `&#${c.charCodeAt(0)};`);

function say(text, error = false) {
  status.textContent = text;
  status.classList.toggle("error", error);
}
nexttdnn.onProgress((text) => say(`${text}…`));

// Runs one action with the buttons off, reporting its error in `out`.
let busy = false;
async function act(out, what, action) {
  if (busy) return;
  busy = true;
  document.querySelectorAll("button").forEach((b) => (b.disabled = true));
  say(`${what}…`);
  try {
    await action();
    say("ready");
  } catch (e) {
    if (out) out.innerHTML = `<p class="error">${escape(e.message)}</p>`;
    say(e.message, true);
  } finally {
    busy = false;
    document.querySelectorAll("button").forEach((b) => (b.disabled = false));
  }
}

// --- Recording slots -------------------------------------------------------

async function record(button, maxSeconds) {
  const stream = await navigator.mediaDevices.getUserMedia({
    audio: { channelCount: 1, echoCancellation: false, noiseSuppression: false, autoGainControl: false },
  });
  const ctx = new AudioContext();
  await ctx.audioWorklet.addModule(new URL("./recorder-worklet.js", import.meta.url));
  const node = new AudioWorkletNode(ctx, "nexttdnn-recorder");
  const mute = ctx.createGain();
  mute.gain.value = 0;
  ctx.createMediaStreamSource(stream).connect(node).connect(mute).connect(ctx.destination);
  const limit = Math.floor(maxSeconds * ctx.sampleRate);
  const chunks = [];
  let length = 0;
  return new Promise((resolve) => {
    const stop = (cut) => {
      node.port.onmessage = null;
      stream.getTracks().forEach((t) => t.stop());
      ctx.close();
      const samples = new Float32Array(length);
      let at = 0;
      for (const c of chunks) {
        samples.set(c, at);
        at += c.length;
      }
      resolve({ samples, rate: ctx.sampleRate, cut });
    };
    node.port.onmessage = ({ data }) => {
      const room = limit - length;
      chunks.push(data.length > room ? data.subarray(0, room) : data);
      length += Math.min(data.length, room);
      button.textContent = `Stop (${(length / ctx.sampleRate).toFixed(1)} s)`;
      if (length >= limit) stop(true);
    };
    button.onclick = () => stop(false);
  });
}

class Slot {
  constructor(el) {
    this.el = el;
    this.items = [];
    this.multiple = el.hasAttribute("data-multiple");
    el.innerHTML = `<div class="label">${escape(el.dataset.label)}</div>
      <input type="file" accept=".wav,audio/*" ${this.multiple ? "multiple" : ""}>
      <button class="small record" type="button">Record</button>
      <div class="chosen">drop a file here, pick one, or record</div>`;
    this.input = el.querySelector("input");
    this.chosen = el.querySelector(".chosen");
    this.input.onchange = () => this.addFiles(this.input.files);
    el.addEventListener("dragover", (e) => {
      e.preventDefault();
      el.classList.add("over");
    });
    el.addEventListener("dragleave", () => el.classList.remove("over"));
    el.addEventListener("drop", (e) => {
      e.preventDefault();
      el.classList.remove("over");
      this.addFiles(e.dataTransfer.files);
    });
    const rec = el.querySelector(".record");
    rec.onclick = () => this.record(rec);
  }

  async addFiles(files) {
    const read = await Promise.all([...files].map(async (f) => ({ name: f.name, audio: await f.arrayBuffer() })));
    this.items = this.multiple ? [...this.items, ...read] : read.slice(0, 1);
    this.show();
  }

  async record(button) {
    const max = Math.min(RECORDING_SECONDS, nexttdnn.backendInfo()?.maxSeconds ?? RECORDING_SECONDS);
    try {
      const { samples, rate, cut } = await record(button, max);
      const name = `recording ${new Date().toLocaleTimeString()}`;
      const item = { name, audio: { samples, rate } };
      this.items = this.multiple ? [...this.items, item] : [item];
      this.show(cut ? `stopped at the ${max.toFixed(0)} s limit` : null);
    } catch (e) {
      say(`the microphone: ${e.message}`, true);
    } finally {
      button.textContent = "Record";
      button.onclick = () => this.record(button);
    }
  }

  show(notice) {
    this.chosen.innerHTML =
      this.items.map((i) => escape(i.name)).join(", ") + (notice ? ` <span class="notice">(${escape(notice)})</span>` : "");
  }

  clear() {
    this.items = [];
    this.input.value = "";
    this.show();
  }
}

const slots = {
  a: new Slot($("slot-a")),
  b: new Slot($("slot-b")),
  enroll: new Slot($("slot-enroll")),
  identify: new Slot($("slot-identify")),
};

function need(slot, what) {
  if (!slot.items.length) throw new Error(`choose ${what} first`);
  return slot.items;
}

const notices = (list) =>
  list.filter(Boolean).map((n) => `<p class="notice">${escape(n)}</p>`).join("");

// --- Verify, enroll, identify -----------------------------------------------

$("verify-run").onclick = () =>
  act($("verify-result"), "comparing", async () => {
    const [a] = need(slots.a, "the first recording");
    const [b] = need(slots.b, "the second recording");
    const r = await nexttdnn.verify(a.audio, b.audio, [a.name, b.name]);
    $("verify-result").innerHTML = `<p class="decision">${escape(r.decision)}</p>
      <table>
        <tr><th>score</th><td id="verify-score">${fmt(r.score, 6)}</td><td>cosine similarity</td></tr>
        <tr><th>LLR</th><td>${fmt(r.llr)}</td><td>${r.llr === null ? "the model has no calibration" : "natural log"}</td></tr>
        <tr><th>rule</th><td colspan="2">${escape(r.rule)}</td></tr>
        <tr><th>time</th><td colspan="2">${fmt(r.ms, 0)} ms on ${escape(nexttdnn.backend())}</td></tr>
      </table>${notices(r.notices)}`;
  });

$("enroll-run").onclick = () =>
  act($("enroll-result"), "enrolling", async () => {
    const name = $("enroll-name").value.trim();
    if (!name) throw new Error("give the speaker a name");
    const items = need(slots.enroll, "one or more recordings");
    const list = await nexttdnn.enroll(
      name,
      items.map((i) => i.audio),
      { replace: $("enroll-replace").checked, names: items.map((i) => i.name) },
    );
    $("enroll-result").textContent = `${name} enrolled from ${items.length} recording(s)`;
    slots.enroll.clear();
    $("enroll-name").value = "";
    showSpeakers(list);
  });

$("identify-run").onclick = () =>
  act($("identify-result"), "identifying", async () => {
    const [q] = need(slots.identify, "a recording");
    const r = await nexttdnn.identify(q.audio, { name: q.name });
    const rows = r.ranked
      .map((s) => `<tr><td>${escape(s.name)}</td><td>${fmt(s.score)}</td><td>${fmt(s.llr)}</td></tr>`)
      .join("");
    $("identify-result").innerHTML = `<p class="decision" id="identify-decision">${escape(r.decision)}</p>
      <table><tr><th>speaker</th><th>score</th><th>LLR</th></tr>${rows}</table>`;
  });

// --- Speakers ------------------------------------------------------------------

function showSpeakers(list) {
  const ul = $("speaker-list");
  ul.innerHTML = list.length ? "" : "<li>nobody yet</li>";
  for (const s of list) {
    const li = document.createElement("li");
    li.innerHTML = `<span class="name">${escape(s.name)}</span> (${s.recordings} recording${s.recordings > 1 ? "s" : ""})
      <button class="small" data-do="rename">rename</button> <button class="small" data-do="remove">remove</button>`;
    li.querySelector('[data-do="rename"]').onclick = () => {
      const to = prompt(`New name for ${s.name}`, s.name);
      if (to && to !== s.name) act(null, "renaming", async () => showSpeakers(await nexttdnn.rename(s.name, to)));
    };
    li.querySelector('[data-do="remove"]').onclick = () =>
      act(null, "removing", async () => showSpeakers(await nexttdnn.remove(s.name)));
    ul.appendChild(li);
  }
}

$("registry-export").onclick = () =>
  act(null, "exporting", async () => {
    const blob = new Blob([await nexttdnn.exportRegistry()], { type: "application/json" });
    const a = document.createElement("a");
    a.href = URL.createObjectURL(blob);
    a.download = "registry.json";
    a.click();
    URL.revokeObjectURL(a.href);
  });

$("registry-import").onchange = (e) =>
  act(null, "importing", async () => {
    const f = e.target.files[0];
    showSpeakers(await nexttdnn.importRegistry(await f.text(), f.name));
  });

// --- Model and backend ----------------------------------------------------------

function showModel(m) {
  const mb = (m.bytes / 1e6).toFixed(1);
  const params = m.parameters ? `${(m.parameters / 1e6).toFixed(2)} M values, ` : "";
  $("model-info").innerHTML = `${escape(m.name)} <small>(${escape(m.file)}, ${mb} MB, ${params}key <code title="${escape(
    m.key,
  )}">${escape(m.key.slice(0, 12))}</code>)</small>`;
}

function showBackend(why) {
  const b = nexttdnn.backendInfo();
  const name = b.backend === "webgpu" ? "WebGPU" : "CPU (WebAssembly)";
  $("backend-info").textContent = `${name}${b.adapter ? ` on ${b.adapter}` : ""}, up to ${Math.floor(b.maxSeconds)} s per recording${why ? `; ${why}` : ""}`;
  $("backend").value = b.backend;
}

$("backend").onchange = (e) =>
  act(null, "switching the backend", async () => {
    try {
      await nexttdnn.setBackend(e.target.value);
      showBackend();
    } catch (err) {
      showBackend();
      throw err;
    }
  });

$("model-file").onchange = (e) =>
  act(null, "loading the model", async () => {
    const f = e.target.files[0];
    const kind = nexttdnn.backend();
    showModel(await nexttdnn.loadModel(await f.arrayBuffer(), f.name));
    await nexttdnn.setBackend(kind);
    showBackend();
    showSpeakers(await nexttdnn.speakers());
  });

nexttdnn.ready.then(
  async ({ model, adapter, why }) => {
    showModel(model);
    const gpu = adapter.available
      ? `adapter: ${[adapter.vendor, adapter.architecture, adapter.description].filter(Boolean).join(" ") || "unnamed"}${adapter.fallback ? " (software fallback)" : ""}`
      : adapter.reason;
    showBackend(`${why}; ${gpu}`);
    $("backend").disabled = false;
    showSpeakers(await nexttdnn.speakers());
    document.querySelectorAll("button").forEach((b) => (b.disabled = false));
    say("ready");
    document.body.dataset.ready = "true";
  },
  (e) => say(`the model could not be loaded: ${e.message}`, true),
);
