#!/usr/bin/env node
// Top-1 (and top-5) classes of preprocessed images under ONNX Runtime, for
// bench/int8_agreement.py.
//
// usage: node bench/ort_top1.mjs --model MODEL.onnx --input IMAGES.f32 --size S
//                                [--threads N] [--batch 10]
//
// IMAGES.f32 holds N images as raw little-endian float32 [N, 3, S, S] (C
// order), preprocessed by the caller. Prints one JSON line:
//   {"model": ..., "images": N, "top1": [...], "top5": [[...], ...]}
// Same session settings as bench/peer_ort.mjs (CPU EP, graph optimisation
// 'all', sequential). Exit 3 if onnxruntime-node or a file is missing.
import { createRequire } from 'node:module';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { availableParallelism } from 'node:os';

const HERE = dirname(fileURLToPath(import.meta.url));
const die = (code, msg) => { process.stderr.write(`ort_top1: ${msg}\n`); process.exit(code); };

const opts = { threads: availableParallelism(), batch: 10 };
const args = process.argv.slice(2);
for (let i = 0; i < args.length; i += 2) {
  const key = args[i].replace(/^--/, '');
  if (!['model', 'input', 'size', 'threads', 'batch'].includes(key) || i + 1 >= args.length)
    die(1, 'usage: node bench/ort_top1.mjs --model MODEL.onnx --input IMAGES.f32 --size S [--threads N] [--batch B]');
  opts[key] = ['model', 'input'].includes(key) ? args[i + 1] : parseInt(args[i + 1], 10);
}
if (!opts.model || !opts.input || !opts.size) die(1, '--model, --input and --size are required');
for (const p of [opts.model, opts.input]) if (!existsSync(p)) die(3, `${p} not found`);

let ort;
try {
  ort = createRequire(join(HERE, 'package.json'))('onnxruntime-node');
} catch (e) {
  die(3, 'onnxruntime-node not installed (run bench/setup_peers.sh)');
}

const buf = readFileSync(opts.input);
const per = 3 * opts.size * opts.size;
if (buf.length % (4 * per) !== 0) die(1, `${opts.input}: ${buf.length} bytes is not a whole number of ${per}-float images`);
const all = new Float32Array(buf.buffer, buf.byteOffset, buf.length / 4);
const n = all.length / per;

const session = await ort.InferenceSession.create(opts.model, {
  executionProviders: ['cpu'],
  graphOptimizationLevel: 'all',
  intraOpNumThreads: opts.threads,
  interOpNumThreads: 1,
  executionMode: 'sequential',
});
const inputName = session.inputNames[0], outputName = session.outputNames[0];
const top1 = [], top5 = [];
for (let first = 0; first < n; first += opts.batch) {
  const count = Math.min(opts.batch, n - first);
  const data = all.slice(first * per, (first + count) * per);
  const out = await session.run({ [inputName]: new ort.Tensor('float32', data, [count, 3, opts.size, opts.size]) });
  const logits = out[outputName].data, classes = logits.length / count;
  for (let b = 0; b < count; b++) {
    const row = Array.from(logits.subarray(b * classes, (b + 1) * classes));
    // highest first, the lower index first among ties (as vit_top_k)
    const order = row.map((v, i) => i).sort((i, j) => row[j] - row[i] || i - j);
    top1.push(order[0]);
    top5.push(order.slice(0, 5));
  }
}
process.stdout.write(JSON.stringify({ model: opts.model, images: n, top1, top5 }) + '\n');
