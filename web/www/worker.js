// The page's Web Worker: it owns the WebAssembly module (pkg/, built by
// web/build.sh) and the registry kept in IndexedDB, so that the page stays
// responsive while a model loads or a recording is embedded.
//
// Messages in: {id, op, args}; out: {id, ok, value} or {id, ok: false,
// error}, and {progress: text} while an operation runs. Operations run one
// at a time, in the order they arrive.

import init, * as core from "./pkg/nexttdnn_web.js";

const progress = (text) => postMessage({ progress: text });

// --- IndexedDB: one registry per model, under the model's key ------------

const DB_NAME = "nexttdnn";
const STORE = "registries";

function openDb() {
  return new Promise((resolve, reject) => {
    const req = indexedDB.open(DB_NAME, 1);
    req.onupgradeneeded = () => req.result.createObjectStore(STORE);
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
}

async function stored(action, mode, ...args) {
  const db = await openDb();
  try {
    return await new Promise((resolve, reject) => {
      const tx = db.transaction(STORE, mode);
      const req = tx.objectStore(STORE)[action](...args);
      tx.oncomplete = () => resolve(req.result);
      tx.onerror = () => reject(tx.error);
      tx.onabort = () => reject(tx.error);
    });
  } finally {
    db.close();
  }
}

let model = null;

// Stores the registry under the model's key, with the key itself beside
// it, after every change.
async function save() {
  const registry = core.exportRegistry();
  await stored("put", "readwrite", { modelKey: model.key, model: model.name, registry }, model.key);
}

// --- The adapter, as the browser describes it -----------------------------

async function adapter() {
  if (!("gpu" in navigator)) return { available: false, reason: "this browser has no WebGPU" };
  const a = await navigator.gpu.requestAdapter({ powerPreference: "high-performance" });
  if (!a) return { available: false, reason: "the browser offers no WebGPU adapter" };
  const info = a.info ?? {};
  const fallback = Boolean(info.isFallbackAdapter ?? a.isFallbackAdapter);
  return {
    available: true,
    fallback,
    vendor: info.vendor ?? "",
    architecture: info.architecture ?? "",
    description: info.description ?? "",
    maxStorageBufferBindingSize: a.limits.maxStorageBufferBindingSize,
  };
}

// --- Operations -------------------------------------------------------------

async function fetchModel(url) {
  progress(`downloading the model from ${url}`);
  const res = await fetch(url);
  if (!res.ok) throw new Error(`${url}: HTTP ${res.status} ${res.statusText}`);
  const total = Number(res.headers.get("content-length")) || 0;
  const reader = res.body.getReader();
  const parts = [];
  let got = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    parts.push(value);
    got += value.length;
    if (total) progress(`downloading the model: ${Math.round((100 * got) / total)} %`);
  }
  const bytes = new Uint8Array(got);
  let at = 0;
  for (const p of parts) {
    bytes.set(p, at);
    at += p.length;
  }
  return bytes;
}

const embedded = (e) => ({ embedding: e.embedding, seconds: e.seconds, notice: e.notice ?? null });

const ops = {
  async adapter() {
    return adapter();
  },

  // {url} or {name, bytes}: loads the model on the CPU and brings back the
  // speakers this browser keeps for it.
  async loadModel({ url, name, bytes }) {
    const data = url ? await fetchModel(url) : new Uint8Array(bytes);
    const file = name ?? decodeURIComponent(new URL(url, location.href).pathname.split("/").pop());
    progress(`reading ${file}`);
    model = JSON.parse(core.loadModel(file, data));
    const kept = await stored("get", "readonly", model.key);
    if (kept) core.importRegistry(kept.registry, "the speakers kept in this browser");
    return model;
  },

  // On WebGPU the browser's own description of the adapter is shown where
  // wgpu has none (browsers give wgpu no name).
  async setBackend({ kind }) {
    progress(kind === "webgpu" ? "setting up WebGPU and checking the kernels" : "switching to the CPU");
    const info = JSON.parse(await core.setBackend(kind));
    if (info.backend === "webgpu" && !info.adapter) {
      const a = await adapter();
      info.adapter = [a.vendor, a.architecture, a.description].filter(Boolean).join(" ") || "an unnamed adapter";
      if (a.fallback) info.adapter += " (software fallback)";
    }
    return info;
  },

  async embed({ name, bytes, samples, rate }) {
    progress(`embedding ${name}`);
    return embedded(
      samples ? await core.embedSamples(name, samples, rate) : await core.embedWav(name, new Uint8Array(bytes)),
    );
  },

  async verify({ a, b }) {
    return JSON.parse(core.verify(a, b));
  },

  async enroll({ name, embeddings, sources, replace }) {
    const dim = model.dim;
    const flat = new Float32Array(embeddings.length * dim);
    embeddings.forEach((e, i) => flat.set(e, i * dim));
    core.enroll(name, flat, sources, Date.now() / 1000, Boolean(replace));
    await save();
    return JSON.parse(core.speakers());
  },

  async identify({ embedding, top }) {
    return JSON.parse(core.identify(embedding, top ?? 0));
  },

  async remove({ name }) {
    core.remove(name);
    await save();
    return JSON.parse(core.speakers());
  },

  async rename({ from, to }) {
    core.rename(from, to);
    await save();
    return JSON.parse(core.speakers());
  },

  async speakers() {
    return JSON.parse(core.speakers());
  },

  async exportRegistry() {
    return core.exportRegistry();
  },

  async importRegistry({ text, origin }) {
    core.importRegistry(text, origin ?? "the imported registry");
    await save();
    return JSON.parse(core.speakers());
  },
};

const started = init();
let queue = Promise.resolve();

async function handle({ id, op, args }) {
  try {
    await started;
    if (!(op in ops)) throw new Error(`unknown operation ${op}`);
    postMessage({ id, ok: true, value: await ops[op](args ?? {}) });
  } catch (e) {
    postMessage({ id, ok: false, error: String(e?.message ?? e) });
  }
}

onmessage = (event) => {
  queue = queue.then(() => handle(event.data));
};
