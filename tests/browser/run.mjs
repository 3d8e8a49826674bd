// The browser page in a real browser: Chromium, headless, driven by
// playwright-core, against the page that web/build.sh built, served by
// Python's http.server on 127.0.0.1.
//
//   node tests/browser/run.mjs --dist web/dist --bin target/release/nexttdnn [--out DIR] [--bench]
//
// Checks (each failure is listed, and the exit code is 1):
//  1. Parity: the four reference recordings of tests/fixtures, embedded in
//     the page with the bundled model and with the light C128 reference
//     checkpoint (imported by the native CLI; from ../shared/fixtures or
//     $NEXTTDNN_SHARED_FIXTURES), on the wasm CPU (within 1e-5 of the
//     native CPU embeddings) and on WebGPU forced onto Chromium's software
//     adapter (within 1e-4, cosine at least 0.99999).
//  2. The page end to end, through its buttons: verify two bundled
//     recordings (the shown score equals `nexttdnn verify` to 1e-4), enroll
//     two speakers, identify a third recording, reload and find the
//     speakers kept; the registry exported by the page identifies in the
//     CLI with the same score; a registry from the CLI imports into the
//     page, and one of another model is refused. A screenshot goes to
//     OUT/page.png.
//     Two seconds from Chromium's fake microphone are identified.
//  3. Bad input: not a WAV, too short, silent, and a WAV at 8 kHz
//     (resampled, with a notice).
//  4. The CPU fallback: a browser without WebGPU (its model given by
//     ?model=URL) still verifies, and backend() says cpu.
// --bench adds embedding times of a 4 s recording (bundled model, light
// C128 and C256) on both backends and the time to a ready page, written to
// OUT/bench.json.
//
// Chromium (/usr/bin/chromium or $CHROMIUM) and playwright-core (found from
// $NEXTTDNN_NODE_MODULES, else from here) are needed. Without them the run
// is skipped, unless NEXTTDNN_REQUIRE_BROWSER=1, which .ci/run sets: then
// a missing browser, module or WebGPU adapter fails it.

import { spawn, execFileSync } from "node:child_process";
import { createRequire } from "node:module";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, "../..");
const require_ = process.env.NEXTTDNN_REQUIRE_BROWSER === "1";

const args = process.argv.slice(2);
const opt = (name, fallback) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : fallback;
};
const dist = path.resolve(opt("--dist", path.join(root, "web/dist")));
const bin = path.resolve(opt("--bin", path.join(process.env.CARGO_TARGET_DIR ?? path.join(root, "target"), "release/nexttdnn")));
const out = path.resolve(opt("--out", fs.mkdtempSync(path.join(os.tmpdir(), "nexttdnn-browser-"))));
const bench = args.includes("--bench");
const chromiumPath = process.env.CHROMIUM ?? "/usr/bin/chromium";
fs.mkdirSync(out, { recursive: true });

function skip(why) {
  if (require_) {
    console.error(`FAIL: ${why} (NEXTTDNN_REQUIRE_BROWSER=1)`);
    process.exit(1);
  }
  console.log(`SKIPPED: ${why}`);
  process.exit(0);
}

let chromium;
try {
  const from = process.env.NEXTTDNN_NODE_MODULES ? path.join(process.env.NEXTTDNN_NODE_MODULES, "x.js") : import.meta.url;
  ({ chromium } = createRequire(from)("playwright-core"));
} catch (e) {
  skip(`playwright-core is not installed (npm install playwright-core): ${e.message}`);
}
if (!fs.existsSync(chromiumPath)) skip(`no Chromium at ${chromiumPath}`);
for (const f of [path.join(dist, "index.html"), path.join(dist, "pkg/nexttdnn_web_bg.wasm")]) {
  if (!fs.existsSync(f)) {
    console.error(`FAIL: ${f} is missing: build the page with web/build.sh first`);
    process.exit(1);
  }
}
if (!fs.existsSync(bin)) {
  console.error(`FAIL: no native binary at ${bin}: cargo build --release`);
  process.exit(1);
}

const failures = [];
const check = (ok, what) => {
  console.log(`${ok ? "ok  " : "FAIL"} ${what}`);
  if (!ok) failures.push(what);
};

// --- The native side ---------------------------------------------------------

const native = (...a) => execFileSync(bin, ["--device", "cpu", ...a], { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });

// Rows of a float32 .npy file written by `nexttdnn embed`.
function readNpy(file) {
  const buf = fs.readFileSync(file);
  const headerLen = buf.readUInt16LE(8);
  const header = buf.subarray(10, 10 + headerLen).toString("latin1");
  if (!header.includes("'<f4'")) throw new Error(`${file}: not little-endian float32: ${header}`);
  const [rows, cols] = header.match(/\((\d+), (\d+),? ?\)/).slice(1).map(Number);
  const data = new Float32Array(buf.buffer.slice(buf.byteOffset + 10 + headerLen, buf.byteOffset + buf.length));
  return Array.from({ length: rows }, (_, r) => data.subarray(r * cols, (r + 1) * cols));
}

function nativeEmbeddings(model, wavs, tag) {
  const dir = path.join(out, `native-${tag}`);
  native("embed", "--model", model, "--batch-seconds", "0", "--out", dir, ...wavs);
  const rows = readNpy(path.join(dir, "embeddings.npy"));
  const index = fs.readFileSync(path.join(dir, "index.txt"), "utf8").trim().split("\n");
  return wavs.map((w) => rows[index.indexOf(w)]);
}

const nativeScore = (a, b) => Number(native("verify", a, b).match(/^score\s+(\S+)/m)[1]);

// The models: the bundled one, and the light C128 reference checkpoint
// imported (and C256, for --bench) where the shared fixtures are present.
function models() {
  const list = [{ tag: "bundled", file: path.join(root, "assets/model/demo.nexttdnn.safetensors") }];
  const shared = process.env.NEXTTDNN_SHARED_FIXTURES ?? path.join(root, "../shared/fixtures");
  const wanted = [["light_C128", "light_C128_B3_K65", "NeXt_TDNN_light_C128_B3_K65"]];
  if (bench) wanted.push(["C256", "C256_B3_K65_7", "NeXt_TDNN_C256_B3_K65_7"]);
  for (const [tag, ckpt, config] of wanted) {
    const pt = path.join(shared, `${ckpt}.pt`);
    if (!fs.existsSync(pt)) {
      const why = `${pt} is absent: the ${tag} parity check needs the shared fixtures`;
      if (process.env.NEXTTDNN_REQUIRE_SHARED === "1") check(false, why);
      else console.log(`skipped: ${why}`);
      continue;
    }
    const file = path.join(out, `${tag}.nexttdnn.safetensors`);
    native("import", pt, "--config", path.join(root, `configs/${config}.ron`), "--out", file);
    list.push({ tag, file });
  }
  return list;
}

// --- Serving and the browser ---------------------------------------------------

async function freePort() {
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

async function serve(dir) {
  const port = await freePort();
  const server = spawn("python3", ["-m", "http.server", String(port), "--bind", "127.0.0.1", "--directory", dir], {
    stdio: "ignore",
  });
  const url = `http://127.0.0.1:${port}/`;
  for (let i = 0; i < 100; i++) {
    try {
      if ((await fetch(url)).ok) return { url, server };
    } catch {
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  server.kill();
  throw new Error(`the page server on ${url} did not start`);
}

const quiet = ["--no-sandbox", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"];

async function launch(webgpu) {
  return chromium.launch({
    executablePath: chromiumPath,
    headless: true,
    // Chromium's fake microphone (a tone with a beep each second) stands
    // in for a real one, granted without asking.
    args: [
      ...quiet,
      "--use-fake-device-for-media-stream",
      "--use-fake-ui-for-media-stream",
      ...(webgpu ? ["--enable-unsafe-webgpu"] : ["--disable-features=WebGPU"]),
    ],
  });
}

async function open(browser, url) {
  const page = await browser.newPage({ viewport: { width: 1100, height: 900 } });
  page.on("console", (m) => {
    if (m.type() === "error" || m.type() === "warning") console.log(`  [page ${m.type()}] ${m.text()}`);
  });
  page.on("pageerror", (e) => console.log(`  [page error] ${e.message}`));
  await page.goto(url);
  const ready = await page.evaluate(async () => {
    const r = await window.nexttdnn.ready;
    return { model: r.model, backend: r.backend, adapter: r.adapter, why: r.why, timings: r.timings, ms: performance.now() };
  });
  return { page, ready };
}

const b64 = (file) => fs.readFileSync(file).toString("base64");

// In the page: base64 → ArrayBuffer.
const BYTES = "(s) => Uint8Array.from(atob(s), (c) => c.charCodeAt(0)).buffer";

async function embedInPage(page, wavs) {
  return page.evaluate(
    async ({ list, bytes }) => {
      const toBuffer = eval(bytes);
      const outs = [];
      for (const [name, data] of list) outs.push(Array.from(await window.nexttdnn.embed(toBuffer(data), name)));
      return outs;
    },
    { list: wavs.map((w) => [path.basename(w), b64(w)]), bytes: BYTES },
  );
}

async function loadModelInPage(page, file) {
  return page.evaluate(
    async ({ data, name, bytes }) => window.nexttdnn.loadModel(eval(bytes)(data), name),
    { data: b64(file), name: path.basename(file), bytes: BYTES },
  );
}

function compare(ours, theirs) {
  let worst = 0;
  let dot = 0;
  let na = 0;
  let nb = 0;
  for (let i = 0; i < theirs.length; i++) {
    const d = Math.abs(ours[i] - theirs[i]);
    worst = Number.isNaN(d) ? Infinity : Math.max(worst, d);
    dot += ours[i] * theirs[i];
    na += ours[i] * ours[i];
    nb += theirs[i] * theirs[i];
  }
  return { worst, cosine: dot / Math.sqrt(na * nb), sameLength: ours.length === theirs.length };
}

// --- 1. Parity ---------------------------------------------------------------------

const fixtures = ["utt_0p500s", "utt_1p370s", "utt_3p015s", "utt_7p900s"].map((n) => path.join(root, `tests/fixtures/${n}.wav`));
const asset = (n) => path.join(dist, "audio", n);

async function parity(page, modelList) {
  const bounds = { cpu: { worst: 1e-5, cosine: 0.99999 }, webgpu: { worst: 1e-4, cosine: 0.99999 } };
  for (const m of modelList) {
    const reference = nativeEmbeddings(m.file, fixtures, m.tag);
    const info = await loadModelInPage(page, m.file);
    for (const backend of ["cpu", "webgpu"]) {
      await page.evaluate((b) => window.nexttdnn.setBackend(b), backend);
      const ours = await embedInPage(page, fixtures);
      fixtures.forEach((f, i) => {
        const c = compare(ours[i], reference[i]);
        const b = bounds[backend];
        check(
          c.sameLength && c.worst <= b.worst && c.cosine >= b.cosine,
          `parity ${m.tag} (${info.name}) ${backend} ${path.basename(f)}: max |Δ| ${c.worst.toExponential(2)} (bound ${b.worst}), cosine ${c.cosine.toFixed(7)}`,
        );
      });
    }
  }
}

// --- 2. The page end to end ----------------------------------------------------------

async function endToEnd(browser, url) {
  const { page, ready } = await open(browser, `${url}?backend=webgpu`);
  check(ready.backend.backend === "webgpu", `the page starts on WebGPU when asked (${ready.backend.adapter}; set-up and kernel check ${ready.timings.backendMs.toFixed(0)} ms)`);
  const input = (slot) => page.locator(`#${slot} input[type=file]`);

  await input("slot-a").setInputFiles(asset("spk1_a.wav"));
  await input("slot-b").setInputFiles(asset("spk1_b.wav"));
  await page.click("#verify-run");
  const shown = Number(await page.locator("#verify-score").textContent());
  const expected = nativeScore(path.join(root, "assets/audio/spk1_a.wav"), path.join(root, "assets/audio/spk1_b.wav"));
  check(Math.abs(shown - expected) <= 1e-4, `the shown score ${shown} equals nexttdnn verify's ${expected} to 1e-4`);

  for (const [name, files] of [["Speaker one", ["spk1_a.wav", "spk1_b.wav"]], ["Speaker two", ["spk2_a.wav", "spk2_b.wav"]]]) {
    await page.fill("#enroll-name", name);
    await input("slot-enroll").setInputFiles(files.map(asset));
    await page.click("#enroll-run");
    await page.locator("#speaker-list", { hasText: name }).waitFor();
  }
  await input("slot-identify").setInputFiles(asset("spk1_c.wav"));
  await page.click("#identify-run");
  const decision = await page.locator("#identify-decision").textContent();
  check(decision === "Speaker one", `spk1_c is identified as Speaker one (page says ${decision})`);
  await page.screenshot({ path: path.join(out, "page.png"), fullPage: true });

  // The microphone: two seconds recorded through the page's button.
  const record = page.locator("#slot-identify button.record");
  await record.click();
  await page.locator("#slot-identify button.record", { hasText: "Stop (2." }).waitFor();
  await record.click();
  await page.locator("#slot-identify .chosen", { hasText: "recording" }).waitFor();
  await page.click("#identify-run");
  await page.locator("#identify-result table").waitFor();
  const heard = await page.locator("#identify-result").textContent();
  check(/Speaker (one|two)/.test(heard), `a recording from the (fake) microphone is ranked (decision: ${await page.locator("#identify-decision").textContent()})`);

  // The registry survives a reload (IndexedDB), and the CLI reads it.
  await page.reload();
  await page.evaluate(() => window.nexttdnn.ready);
  const kept = await page.evaluate(() => window.nexttdnn.speakers());
  check(kept.map((s) => s.name).join(",") === "Speaker one,Speaker two", `the speakers are kept across a reload (${JSON.stringify(kept)})`);
  const exported = await page.evaluate(() => window.nexttdnn.exportRegistry());
  const json = path.join(out, "registry.json");
  const reg = path.join(out, "registry.nexttdnn.safetensors");
  fs.writeFileSync(json, exported);
  native("registry", "import", "--replace", json, reg);
  const query = path.join(root, "assets/audio/spk2_c.wav");
  const cli = JSON.parse(native("identify", "--registry", reg, "--json", "--top", "0", query).trim());
  const web = await page.evaluate(
    async ({ data, bytes }) => window.nexttdnn.identify(eval(bytes)(data)),
    { data: b64(query), bytes: BYTES },
  );
  check(
    cli.decision === web.decision && Math.abs(cli.ranked[0].score - web.ranked[0].score) <= 1e-4,
    `the page's registry identifies spk2_c in the CLI as in the page (${cli.decision} ${cli.ranked[0].score} / ${web.decision} ${web.ranked[0].score})`,
  );

  // And back: a registry enrolled and exported by the CLI imports into the
  // page; one of another model is refused.
  const cliReg = path.join(out, "cli-registry.nexttdnn.safetensors");
  const cliJson = path.join(out, "cli-registry.json");
  fs.rmSync(cliReg, { force: true });
  native("enroll", "--registry", cliReg, "Speaker three", path.join(root, "assets/audio/spk3_a.wav"), path.join(root, "assets/audio/spk3_b.wav"));
  native("registry", "export", cliReg, cliJson);
  const text = fs.readFileSync(cliJson, "utf8");
  const imported = await page.evaluate(async (t) => {
    await window.nexttdnn.importRegistry(t, "cli-registry.json");
    return window.nexttdnn.identify(await (await fetch("audio/spk3_c.wav")).arrayBuffer());
  }, text);
  check(imported.decision === "Speaker three", `a registry from the CLI imports into the page and identifies spk3_c (${imported.decision})`);
  const foreign = text.replace(/"model_key":\s*"([0-9a-f])/, (m, c) => m.slice(0, -1) + (c === "0" ? "1" : "0"));
  const refused = await page.evaluate(
    (t) => window.nexttdnn.importRegistry(t, "foreign.json").then(() => "accepted", (e) => e.message),
    foreign,
  );
  check(foreign !== text && /another model/.test(refused), `a registry of another model is refused: ${refused}`);
  await badInput(page);
  await page.close();
}

// --- 3. Bad input ----------------------------------------------------------------------

function wav(samples, rate) {
  const b = Buffer.alloc(44 + samples.length * 2);
  b.write("RIFF", 0);
  b.writeUInt32LE(36 + samples.length * 2, 4);
  b.write("WAVEfmt ", 8);
  b.writeUInt32LE(16, 16);
  b.writeUInt16LE(1, 20);
  b.writeUInt16LE(1, 22);
  b.writeUInt32LE(rate, 24);
  b.writeUInt32LE(rate * 2, 28);
  b.writeUInt16LE(2, 32);
  b.writeUInt16LE(16, 34);
  b.write("data", 36);
  b.writeUInt32LE(samples.length * 2, 40);
  samples.forEach((s, i) => b.writeInt16LE(Math.round(Math.max(-1, Math.min(1, s)) * 32767), 44 + 2 * i));
  return b.toString("base64");
}

async function badInput(page) {
  const tone = (n, rate) => Array.from({ length: n }, (_, i) => 0.3 * Math.sin((2 * Math.PI * 220 * i) / rate) + 0.05 * Math.sin(i * 1.7));
  const cases = [
    ["notes.txt", Buffer.from("these are not samples").toString("base64"), /not a WAV|RIFF/i],
    ["short.wav", wav(tone(200, 16000), 16000), /too short/],
    ["silent.wav", wav(new Array(32000).fill(0), 16000), /silent/],
  ];
  for (const [name, data, expect] of cases) {
    const r = await page.evaluate(
      async ({ name, data, bytes }) => {
        try {
          const e = await window.nexttdnn.embedDetailed(eval(bytes)(data), name);
          return { ok: true, finite: Array.from(e.embedding).every(Number.isFinite) };
        } catch (e) {
          return { ok: false, message: e.message };
        }
      },
      { name, data, bytes: BYTES },
    );
    check(!r.ok && expect.test(r.message) && r.message.includes(name), `${name} is refused: ${r.message ?? JSON.stringify(r)}`);
  }
  const r = await page.evaluate(
    async ({ data, bytes }) => window.nexttdnn.embedDetailed(eval(bytes)(data), "tone-8k.wav"),
    { data: wav(tone(24000, 8000), 8000), bytes: BYTES },
  );
  check(/resampled from 8000 Hz/.test(r.notice ?? "") && Array.from(Object.values(r.embedding)).every(Number.isFinite), `an 8 kHz WAV is resampled, with a notice (${r.notice})`);
}

// --- 4. The CPU fallback --------------------------------------------------------------------

async function cpuFallback(url) {
  const browser = await launch(false);
  try {
    // The model comes from ?model=URL here.
    const { page, ready } = await open(browser, `${url}?model=models/demo.nexttdnn.safetensors`);
    check(!ready.adapter.available && ready.backend.backend === "cpu", `without WebGPU the page runs on the CPU (${ready.why})`);
    check(ready.model.file === "demo.nexttdnn.safetensors", `?model=URL loads that model (${ready.model.file})`);
    const r = await page.evaluate(
      async ({ a, b, bytes }) => {
        const toBuffer = eval(bytes);
        return { backend: window.nexttdnn.backend(), ...(await window.nexttdnn.verify(toBuffer(a), toBuffer(b))) };
      },
      { a: b64(asset("spk1_a.wav")), b: b64(asset("spk1_b.wav")), bytes: BYTES },
    );
    const expected = nativeScore(path.join(root, "assets/audio/spk1_a.wav"), path.join(root, "assets/audio/spk1_b.wav"));
    check(r.backend === "cpu" && Math.abs(r.score - expected) <= 1e-4, `it verifies there: ${r.score} (native ${expected}), backend() = ${r.backend}`);
  } finally {
    await browser.close();
  }
}

// --- Benchmark ----------------------------------------------------------------------------------

async function benchmark(page, modelList, timings) {
  // A 4.00 s recording: a bundled one, repeated as needed and cut.
  const src = fs.readFileSync(path.join(root, "assets/audio/spk1_a.wav"));
  const pcm = [];
  for (let i = 44; i + 1 < src.length; i += 2) pcm.push(src.readInt16LE(i) / 32768);
  const four = [];
  while (four.length < 64000) four.push(...pcm.slice(0, 64000 - four.length));
  const data = wav(four, 16000);
  const report = { ready: timings, runs: [] };
  console.log(`bench ready: ${JSON.stringify(timings)}`);
  for (const m of modelList) {
    await loadModelInPage(page, m.file);
    for (const backend of ["cpu", "webgpu"]) {
      const times = await page.evaluate(
        async ({ backend, data, bytes }) => {
          await window.nexttdnn.setBackend(backend);
          const buf = eval(bytes)(data);
          const t = [];
          for (let i = 0; i < 8; i++) {
            const t0 = performance.now();
            await window.nexttdnn.embed(buf, "four-seconds.wav");
            t.push(performance.now() - t0);
          }
          return t;
        },
        { backend, data, bytes: BYTES },
      );
      const warm = times.slice(2).sort((a, b) => a - b);
      const median = warm[Math.floor(warm.length / 2)];
      report.runs.push({ model: m.tag, backend, firstMs: times[0], medianMs: median });
      console.log(`bench ${m.tag} ${backend}: 4 s recording in ${median.toFixed(1)} ms (median of ${warm.length}; first ${times[0].toFixed(0)} ms)`);
    }
  }
  fs.writeFileSync(path.join(out, "bench.json"), JSON.stringify(report, null, 1));
}

// --- Main -------------------------------------------------------------------------------------------

const { url, server } = await serve(dist);
let browser;
try {
  const modelList = models();
  browser = await launch(true);
  const { page, ready } = await open(browser, url);
  console.log(`page ready in ${ready.ms.toFixed(0)} ms on ${ready.backend.backend}; adapter ${JSON.stringify(ready.adapter)}`);
  if (!ready.adapter.available) skip(`Chromium offers no WebGPU adapter here (${ready.adapter.reason})`);
  check(ready.model.name && ready.model.key.length === 64, `the bundled model loads (${ready.model.name}, key ${ready.model.key.slice(0, 12)})`);
  check(
    ready.backend.backend === (ready.adapter.fallback ? "cpu" : "webgpu"),
    `the default backend is ${ready.backend.backend} on ${ready.adapter.fallback ? "a fallback" : "a hardware"} adapter`,
  );
  await parity(page, modelList);
  if (bench) await benchmark(page, modelList, ready.timings);
  await page.close();
  await endToEnd(browser, url);
  await cpuFallback(url);
} catch (e) {
  check(false, `the run stopped: ${e.stack ?? e}`);
} finally {
  await browser?.close();
  server.kill();
}
console.log(`screenshot and outputs in ${out}`);
if (failures.length) {
  console.error(`${failures.length} browser check(s) failed`);
  process.exit(1);
}
console.log("all browser checks passed");
