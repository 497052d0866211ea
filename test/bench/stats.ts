import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';

export function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i];
}

export function summary(values: number[]): {
  p50: number;
  p99: number;
  max: number;
  count: number;
} {
  const sorted = [...values].sort((a, b) => a - b);
  const round = (n: number) => Math.round(n * 100) / 100;
  return {
    p50: round(percentile(sorted, 50)),
    p99: round(percentile(sorted, 99)),
    max: round(sorted[sorted.length - 1] ?? NaN),
    count: sorted.length,
  };
}

/** Writes test/bench/results/<name>.json and prints the same figures. */
export function writeResults(name: string, results: unknown): string {
  const dir = path.resolve(__dirname, '../../bench/results');
  mkdirSync(dir, { recursive: true });
  const file = path.join(dir, `${name}.json`);
  const text = JSON.stringify(results, null, 2);
  writeFileSync(file, `${text}\n`);
  console.log(text);
  console.log(`written to ${path.relative(process.cwd(), file)}`);
  return file;
}
