#!/usr/bin/env node
// One image, from command start to printed labels, in ONNX Runtime (node).
//
// usage: node bench/oneshot_ort.mjs MODEL.onnx INPUT.npy|IMAGE [--threads N] [--labels FILE]
//
// INPUT.npy is the image ALREADY decoded and preprocessed to a float32
// [1, 3, S, S] tensor, written once by
//     bench/oneshot_torch.py MODEL_DIR IMAGE --save-input INPUT.npy
// (node has no JPEG decoder or PIL-exact resizer without extra packages).
// Given an IMAGE instead, it uses the cached tensor MODEL.onnx.input.<name>.npy,
// and when that is missing or older than the image, first makes it by running
// the command above (MODEL_DIR from MODEL.onnx.check.json) — that first run is
// slower (python + torch); time the later ones.
// So, timed as a whole process, this INCLUDES: node start-up, loading
// onnxruntime-node, creating the session from MODEL.onnx (reading the weights,
// graph optimisation level 'all'), reading the .npy, one run, softmax, printing
// the top-5 "probability label (index)" lines. It EXCLUDES image decoding and
// resizing, which the other engines pay for: an advantage for ONNX Runtime
// (a few ms for a 224x224 crop of a typical photo).
//
// Labels: --labels FILE (one per line), else weights/imagenet1k_labels.txt for
// 1000 classes, else indices. Exit 3 if onnxruntime-node or a file is missing.
import { createRequire } from 'node:module';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { availableParallelism } from 'node:os';

const HERE = dirname(fileURLToPath(import.meta.url));
const die = (code, msg) => { process.stderr.write(`oneshot_ort: ${msg}\n`); process.exit(code); };

const args = process.argv.slice(2);
const pos = [];
let threads = availableParallelism();
let labelsFile = null;
for (let i = 0; i < args.length; i++) {
  if (args[i] === '--threads') threads = parseInt(args[++i], 10);
  else if (args[i] === '--labels') labelsFile = args[++i];
  else pos.push(args[i]);
}
if (pos.length !== 2) die(1, 'usage: node bench/oneshot_ort.mjs MODEL.onnx INPUT.npy|IMAGE [--threads N]');
const [modelPath, inputArg] = pos;
for (const p of pos) if (!existsSync(p)) die(3, `${p} not found`);

let inputPath = inputArg;
if (!inputArg.endsWith('.npy')) {
  inputPath = `${modelPath}.input.${basename(inputArg).replace(/[^\w.-]/g, '_')}.npy`;
  if (!existsSync(inputPath) || statSync(inputPath).mtimeMs < statSync(inputArg).mtimeMs) {
    let src;
    try {
      src = dirname(JSON.parse(readFileSync(`${modelPath}.check.json`, 'utf8')).source);
    } catch {
      die(3, `${inputArg}: not a .npy, and no ${modelPath}.check.json to find the model's preprocessing (bench/export_onnx.py)`);
    }
    process.stderr.write(`oneshot_ort: preprocessing ${inputArg} once with oneshot_torch.py -> ${inputPath}\n`);
    const r = spawnSync('/usr/bin/python3', [join(HERE, 'oneshot_torch.py'), src, inputArg, '--save-input', inputPath],
      { stdio: ['ignore', 'ignore', 'inherit'] });
    if (r.status !== 0) die(r.status === 3 ? 3 : 1, `preprocessing ${inputArg} failed`);
  }
}

let ort;
try {
  ort = createRequire(join(HERE, 'package.json'))('onnxruntime-node');
} catch (e) {
  die(3, 'onnxruntime-node not installed (run bench/setup_peers.sh)');
}

// minimal .npy reader: little-endian float32, C order
function readNpy(path) {
  const buf = readFileSync(path);
  if (buf.readUInt32BE(0) !== 0x934e554d) die(1, `${path}: not a .npy file`);
  const major = buf[6];
  const hlen = major === 1 ? buf.readUInt16LE(8) : buf.readUInt32LE(8);
  const hstart = major === 1 ? 10 : 12;
  const header = buf.toString('latin1', hstart, hstart + hlen);
  if (!/'descr':\s*'<f4'/.test(header) || /'fortran_order':\s*True/.test(header)) die(1, `${path}: need C-order <f4`);
  const shape = header.match(/'shape':\s*\(([^)]*)\)/)[1].split(',').filter((s) => s.trim()).map(Number);
  const off = hstart + hlen;
  const n = shape.reduce((a, b) => a * b, 1);
  const data = new Float32Array(n);
  new Uint8Array(data.buffer).set(buf.subarray(off, off + 4 * n));
  return { data, shape };
}

const session = await ort.InferenceSession.create(modelPath, {
  executionProviders: ['cpu'],
  graphOptimizationLevel: 'all',
  intraOpNumThreads: threads,
  interOpNumThreads: 1,
  executionMode: 'sequential',
});
const x = readNpy(inputPath);
const out = await session.run({ [session.inputNames[0]]: new ort.Tensor('float32', x.data, x.shape) });
const logits = out[session.outputNames[0]].data;
const n = logits.length / x.shape[0];

let max = -Infinity;
for (let i = 0; i < n; i++) max = Math.max(max, logits[i]);
let sum = 0;
const p = new Float64Array(n);
for (let i = 0; i < n; i++) { p[i] = Math.exp(logits[i] - max); sum += p[i]; }
const top = [...p.keys()].sort((a, b) => p[b] - p[a]).slice(0, 5);

let names = null;
const lf = labelsFile ?? join(HERE, '..', 'weights', 'imagenet1k_labels.txt');
if (existsSync(lf)) {
  const l = readFileSync(lf, 'utf8').split('\n');
  if (labelsFile || l.filter((s) => s).length === n) names = l;
}
for (const i of top) {
  process.stdout.write(`${(100 * p[i] / sum).toFixed(2).padStart(7)}%  ${names ? names[i] : i} (${i})\n`);
}
