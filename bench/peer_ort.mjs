#!/usr/bin/env node
// ONNX Runtime peer for vitc's benchmark (onnxruntime-node, CPU).
//
// usage: node bench/peer_ort.mjs --model FILE.onnx --threads N [--batches 1,8,32]
//                                [--runs 20 | --runs 20,20,5] [--warmup 5] [--name NAME]
//
// FILE.onnx comes from bench/export_onnx.py (input "pixel_values", output
// "logits", dynamic batch). Session: graphOptimizationLevel 'all',
// intraOpNumThreads N, interOpNumThreads 1, executionMode 'sequential'
// (other options ORT's defaults, e.g. spinning worker threads, memory arena).
//
// Measures, on random input:
//   load_s        InferenceSession.create (reading the file, optimising the graph)
//   median_ms     median wall time of session.run over --runs timed runs after
//                 --warmup untimed ones, per batch size; images_per_s = batch / median
//   peak_rss_mib  process.resourceUsage().maxRSS right after that batch's runs
//                 (cumulative; the last line is the overall peak)
//   base_rss_mib  maxRSS after loading onnxruntime-node, before the session
//   check         "ok" / "failed" / "missing": the logits for the deterministic
//                 input of FILE.onnx.check.json against torch's (max abs diff <= 1e-3)
//
// One JSON object per batch size on stdout, nothing else; messages on stderr.
// Exit 3 if onnxruntime-node (bench/setup_peers.sh) or the model is missing.
import { createRequire } from 'node:module';
import { existsSync, readFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { availableParallelism } from 'node:os';

const HERE = dirname(fileURLToPath(import.meta.url));

function die(code, msg) {
  process.stderr.write(`peer_ort: ${msg}\n`);
  process.exit(code);
}

function parseArgs(argv) {
  const a = { threads: availableParallelism(), batches: '1,8,32', runs: '20', warmup: 5, model: null, name: null, seed: 1 };
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i];
    const v = argv[i + 1];
    const take = () => { if (v === undefined) die(1, `${k} needs a value`); i++; return v; };
    if (k === '--model') a.model = take();
    else if (k === '--threads') a.threads = parseInt(take(), 10);
    else if (k === '--batches') a.batches = take();
    else if (k === '--runs') a.runs = take();
    else if (k === '--warmup') a.warmup = parseInt(take(), 10);
    else if (k === '--name') a.name = take();
    else if (k === '--seed') a.seed = parseInt(take(), 10);
    else if (k === '-h' || k === '--help') {
      process.stderr.write('usage: node bench/peer_ort.mjs --model FILE.onnx --threads N [--batches 1,8,32] [--runs 20] [--warmup 5]\n');
      process.exit(0);
    } else die(1, `unknown argument ${k}`);
  }
  if (!a.model) die(1, '--model FILE.onnx is required');
  if (!(a.threads >= 1) || !(a.warmup >= 0)) die(1, 'bad --threads / --warmup');
  return a;
}

function intList(s, name) {
  const v = s.split(',').filter((x) => x.trim()).map((x) => Number(x));
  if (!v.length || v.some((x) => !Number.isInteger(x) || x < 1)) die(1, `bad --${name} ${s}`);
  return v;
}

const rssMiB = () => process.resourceUsage().maxRSS / 1024; // KiB on Linux

// the input of export_onnx.py's check: ((i*2654435761) mod 2^32)/2^32*4-2
function checkInput(n) {
  const x = new Float32Array(n);
  for (let i = 0; i < n; i++) x[i] = ((Math.imul(i, 2654435761) >>> 0) / 4294967296) * 4 - 2;
  return x;
}

// xorshift32 -> roughly N(0,1) (sum of 4 uniforms); values don't matter for speed
function randomInput(n, seed) {
  let s = (seed * 2654435761) >>> 0 || 1;
  const x = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    let u = 0;
    for (let j = 0; j < 4; j++) {
      s ^= s << 13; s >>>= 0; s ^= s >>> 17; s ^= s << 5; s >>>= 0;
      u += s / 4294967296;
    }
    x[i] = (u - 2) * 1.732;
  }
  return x;
}

const median = (v) => {
  const s = [...v].sort((p, q) => p - q);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};
const r = (x, d) => Math.round(x * 10 ** d) / 10 ** d;

async function main() {
  const a = parseArgs(process.argv.slice(2));
  const batches = intList(a.batches, 'batches');
  let runs = intList(a.runs, 'runs');
  if (runs.length === 1) runs = batches.map(() => runs[0]);
  if (runs.length !== batches.length) die(1, '--runs needs one count or one per batch');
  if (!existsSync(a.model)) die(3, `no model at ${a.model} (run bench/export_onnx.py)`);

  let ort;
  try {
    ort = createRequire(join(HERE, 'package.json'))('onnxruntime-node');
  } catch (e) {
    die(3, `onnxruntime-node not installed (run bench/setup_peers.sh): ${String(e.message).split('\n')[0]}`);
  }
  const version = `onnxruntime-node ${ort.env.versions.node ?? ort.env.versions.common}`;
  // model*.onnx -> its directory's name + the rest (bench/models/deit_small/model.onnx ->
  // deit_small, .../model-int8.onnx -> deit_small-int8); other names: the file's name
  const stem = basename(a.model, '.onnx');
  const name = a.name ?? (stem.startsWith('model') ? basename(dirname(a.model)) + stem.slice(5) : stem);
  const baseRss = rssMiB();

  const opts = {
    executionProviders: ['cpu'],
    graphOptimizationLevel: 'all',
    intraOpNumThreads: a.threads,
    interOpNumThreads: 1,
    executionMode: 'sequential',
  };
  const t0 = process.hrtime.bigint();
  const session = await ort.InferenceSession.create(a.model, opts);
  const loadS = Number(process.hrtime.bigint() - t0) / 1e9;
  const inName = session.inputNames[0];
  const outName = session.outputNames[0];

  // verify against torch (also serves as a first warm-up)
  let check = 'missing';
  let checkDiff = null;
  const checkPath = a.model + '.check.json';
  let S = 224;
  if (existsSync(checkPath)) {
    const c = JSON.parse(readFileSync(checkPath, 'utf8'));
    const shape = c.input.shape;
    S = shape[2];
    const n = shape.reduce((p, q) => p * q, 1);
    const out = await session.run({ [inName]: new ort.Tensor('float32', checkInput(n), shape) });
    const y = out[outName].data;
    const ref = c.logits.flat();
    checkDiff = 0;
    if (y.length !== ref.length) checkDiff = Infinity;
    else for (let i = 0; i < y.length; i++) checkDiff = Math.max(checkDiff, Math.abs(y[i] - ref[i]) || (y[i] === ref[i] ? 0 : Infinity));
    check = checkDiff <= (c.tolerance ?? 1e-3) ? 'ok' : 'failed';
    if (c.logits_int8_emulation) {
      const e = c.logits_int8_emulation.flat();
      let d = 0;
      for (let i = 0; i < y.length; i++) d = Math.max(d, Math.abs(y[i] - e[i]));
      let de = 0;
      for (let i = 0; i < y.length; i++) de = Math.max(de, Math.abs(e[i] - ref[i]));
      process.stderr.write(`peer_ort: int8: max |ort - fp32| = ${checkDiff.toExponential(2)}, |emulation - fp32| = ${de.toExponential(2)}, |ort - emulation| = ${d.toExponential(2)}\n`);
    }
    if (check === 'failed') process.stderr.write(`peer_ort: WARNING: ${a.model}: logits differ from torch's by ${checkDiff} (> ${c.tolerance ?? 1e-3})\n`);
  } else {
    process.stderr.write(`peer_ort: no ${checkPath}: output not verified\n`);
    const dims = session.inputMetadata?.[0]?.shape;
    if (Array.isArray(dims) && typeof dims[2] === 'number') S = dims[2];
  }
  process.stderr.write(`peer_ort: ${name}: ${version}, session in ${loadS.toFixed(3)} s, ${a.threads} threads, check ${check}` +
    (checkDiff !== null ? ` (max |ort - torch| = ${checkDiff.toExponential(2)})` : '') + '\n');

  for (let bi = 0; bi < batches.length; bi++) {
    const b = batches[bi];
    const shape = [b, 3, S, S];
    const feeds = { [inName]: new ort.Tensor('float32', randomInput(b * 3 * S * S, a.seed + b), shape) };
    for (let i = 0; i < a.warmup; i++) await session.run(feeds);
    const times = [];
    let out;
    for (let i = 0; i < runs[bi]; i++) {
      const t = process.hrtime.bigint();
      out = await session.run(feeds);
      times.push(Number(process.hrtime.bigint() - t) / 1e6);
    }
    const y = out[outName];
    if (y.dims[0] !== b || !y.data.every(Number.isFinite)) die(1, `bad output at batch ${b}`);
    const med = median(times);
    const rec = {
      engine: 'onnxruntime', model: name, batch: b,
      median_ms: r(med, 3), min_ms: r(Math.min(...times), 3),
      images_per_s: r((b * 1000) / med, 2),
      load_s: r(loadS, 4),
      peak_rss_mib: r(rssMiB(), 1), base_rss_mib: r(baseRss, 1),
      threads: a.threads, runs: runs[bi], warmup: a.warmup,
      check, check_max_abs_diff: checkDiff === null ? null : Number(checkDiff.toExponential(3)),
      version,
    };
    process.stdout.write(JSON.stringify(rec) + '\n');
  }
  await session.release?.();
}

main().catch((e) => die(1, e?.stack ?? String(e)));
