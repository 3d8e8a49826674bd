// window.nexttdnn: the page's engine as a small Promise API, for the page
// itself, for tests and for other pages. Everything heavy runs in
// worker.js; here the audio is prepared (resampled when its rate is not
// the model's, which needs the main thread's OfflineAudioContext) and the
// calls are timed.

const params = new URLSearchParams(location.search);
const BUNDLED_MODEL = "models/demo.nexttdnn.safetensors";
// Recordings from the microphone stop after this many seconds, or earlier
// where the backend's limit is lower (see maxSeconds).
export const RECORDING_SECONDS = 120;

const worker = new Worker(new URL("./worker.js", import.meta.url), { type: "module" });
const pending = new Map();
const listeners = new Set();
let nextId = 1;

worker.onmessage = ({ data }) => {
  if ("progress" in data) {
    listeners.forEach((f) => f(data.progress));
    return;
  }
  const p = pending.get(data.id);
  pending.delete(data.id);
  if (data.ok) p.resolve(data.value);
  else p.reject(new Error(data.error));
};
worker.onerror = (e) => {
  const error = new Error(`the worker failed: ${e.message}`);
  pending.forEach((p) => p.reject(error));
  pending.clear();
};

function call(op, args, transfer = []) {
  const id = nextId++;
  return new Promise((resolve, reject) => {
    pending.set(id, { resolve, reject });
    worker.postMessage({ id, op, args }, transfer);
  });
}

let model = null;
let backend = null;

// --- Audio -----------------------------------------------------------------

const text4 = (view, at) => String.fromCharCode(...new Uint8Array(view.buffer, view.byteOffset + at, 4));

// The sample rate of a RIFF/WAVE file's fmt chunk, or null when the bytes
// are not a WAV file (the core then says what is wrong with them).
export function wavRate(buffer) {
  const v = new DataView(buffer);
  if (v.byteLength < 12 || !["RIFF", "RF64"].includes(text4(v, 0)) || text4(v, 8) !== "WAVE") return null;
  for (let at = 12; at + 8 <= v.byteLength; ) {
    const size = v.getUint32(at + 4, true);
    if (text4(v, at) === "fmt " && at + 16 <= v.byteLength) return v.getUint32(at + 12, true);
    at += 8 + size + (size & 1);
  }
  return null;
}

// Mono samples at `rate` from any audio the browser decodes.
async function resample(buffer, name, rate) {
  let decoded;
  try {
    decoded = await new OfflineAudioContext(1, 1, rate).decodeAudioData(buffer.slice(0));
  } catch {
    throw new Error(`${name}: the browser cannot decode this audio`);
  }
  const frames = Math.ceil(decoded.duration * rate);
  if (frames < 1) throw new Error(`${name}: the recording is empty`);
  const ctx = new OfflineAudioContext(1, frames, rate);
  const src = ctx.createBufferSource();
  src.buffer = decoded;
  src.connect(ctx.destination);
  src.start();
  return { samples: (await ctx.startRendering()).getChannelData(0), rate: decoded.sampleRate };
}

// What the worker embeds: a WAV at the model's rate as it is (the core
// decodes and checks it), anything else resampled here.
async function input(audio, name) {
  if (audio.samples) {
    if (audio.rate === model.sampleRate) return { name, samples: audio.samples, rate: audio.rate };
    return { name, ...(await resampleSamples(audio.samples, audio.rate, model.sampleRate)) };
  }
  const bytes = audio instanceof ArrayBuffer ? audio : audio.buffer.slice(audio.byteOffset, audio.byteOffset + audio.byteLength);
  const rate = wavRate(bytes);
  if (rate === null || rate === model.sampleRate) return { name, bytes };
  const { samples } = await resample(bytes, name, model.sampleRate);
  return { name, samples, rate };
}

async function resampleSamples(samples, from, to) {
  const ctx = new OfflineAudioContext(1, Math.ceil((samples.length * to) / from), to);
  const buf = ctx.createBuffer(1, samples.length, from);
  buf.copyToChannel(samples, 0);
  const src = ctx.createBufferSource();
  src.buffer = buf;
  src.connect(ctx.destination);
  src.start();
  return { samples: (await ctx.startRendering()).getChannelData(0), rate: from };
}

// --- The API -----------------------------------------------------------------

async function embedDetailed(audio, name = "recording") {
  const t0 = performance.now();
  const result = await call("embed", await input(audio, name));
  return { ...result, ms: performance.now() - t0 };
}

async function setBackend(kind) {
  backend = await call("setBackend", { kind });
  return backend;
}

// Loads a model (a URL, or the bytes of a model file with its name) and
// returns its description: {name, file, bytes, parameters, key, dim, ...}.
async function loadModel(source, name) {
  model =
    typeof source === "string"
      ? await call("loadModel", { url: source })
      : await call("loadModel", { name: name ?? "model.safetensors", bytes: source });
  backend = null;
  return model;
}

// WebGPU on a hardware adapter; the CPU on a fallback adapter (a software
// rasteriser such as SwiftShader), without one, or if the kernel check
// refuses the device. `?backend=webgpu|cpu` forces one.
async function chooseBackend(adapter) {
  const forced = params.get("backend");
  const want = forced ?? (adapter.available && !adapter.fallback ? "webgpu" : "cpu");
  let why = forced ? "chosen in the address" : adapter.available ? (adapter.fallback ? "the WebGPU adapter is a software fallback" : "a WebGPU adapter") : adapter.reason;
  try {
    await setBackend(want);
  } catch (e) {
    if (want === "cpu") throw e;
    why = e.message;
    await setBackend("cpu");
  }
  return { adapter, why };
}

// The steps to a ready page, timed from the page's start: the module
// (download and compile; the worker answers once it is instantiated), the
// model (download and build) and the backend (with WebGPU, its set-up and
// the kernel check).
async function start() {
  const timings = {};
  const timed = async (name, f) => {
    const t0 = performance.now();
    const r = await f();
    timings[name] = performance.now() - t0;
    return r;
  };
  const adapter = await timed("moduleMs", () => call("adapter"));
  await timed("modelMs", () => loadModel(params.get("model") ?? BUNDLED_MODEL));
  const chosen = await timed("backendMs", () => chooseBackend(adapter));
  timings.readyMs = performance.now();
  return { model, backend, timings, ...chosen };
}

const ready = start();

export const nexttdnn = {
  ready,
  onProgress: (f) => listeners.add(f),
  model: () => model,
  backend: () => backend?.backend ?? null,
  backendInfo: () => backend,
  setBackend,
  loadModel,
  adapter: () => call("adapter"),
  embedDetailed,
  async embed(audio, name) {
    return (await embedDetailed(audio, name)).embedding;
  },
  async verify(a, b, names = ["first", "second"]) {
    const t0 = performance.now();
    const ea = await embedDetailed(a, names[0]);
    const eb = await embedDetailed(b, names[1]);
    const result = await call("verify", { a: ea.embedding, b: eb.embedding });
    return { ...result, ms: performance.now() - t0, notices: [ea.notice, eb.notice].filter(Boolean) };
  },
  async enroll(name, recordings, { replace = false, names } = {}) {
    const embeddings = [];
    const sources = [];
    for (const [i, r] of recordings.entries()) {
      const source = names?.[i] ?? `${name} ${i + 1}`;
      embeddings.push((await embedDetailed(r, source)).embedding);
      sources.push(source);
    }
    return call("enroll", { name, embeddings, sources, replace });
  },
  async identify(audio, { top = 0, name } = {}) {
    const e = await embedDetailed(audio, name);
    return call("identify", { embedding: e.embedding, top });
  },
  speakers: () => call("speakers"),
  remove: (name) => call("remove", { name }),
  rename: (from, to) => call("rename", { from, to }),
  exportRegistry: () => call("exportRegistry"),
  importRegistry: (text, origin) => call("importRegistry", { text, origin }),
};

window.nexttdnn = nexttdnn;
