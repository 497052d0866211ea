import { randomBytes } from 'node:crypto';
import { readFile, rename, writeFile } from 'node:fs/promises';
import { z } from 'zod';
import type { WrittenExtent } from './copy/copy-disk';

/**
 * What one job wrote into one file of a chain: every data extent with its digest, and every
 * range written as zeroes. Kept beside the image as `<image>.tidemark.json`; verify re-reads
 * the chain against it.
 */
export const Manifest = z.object({
  format: z.literal('tidemark-manifest'),
  version: z.literal(1),
  jobId: z.string(),
  jobType: z.enum(['backup', 'replication']),
  diskKey: z.string(),
  changeId: z.string(),
  baseChangeId: z.string().nullable(),
  size: z.number().int().min(0),
  backingPath: z.string().nullable(),
  /** Why this disk of an incremental was copied in full; null when it continued its chain. */
  fullReason: z.string().nullable().default(null),
  /** The CBT canary's figures for a disk that continued its chain; null when not run. */
  canary: z
    .object({ sampledBytes: z.number().int().min(0), mismatchedBytes: z.number().int().min(0) })
    .nullable()
    .default(null),
  createdAt: z.string(),
  /** How `written` digests were made. */
  digest: z.literal('xxh128'),
  /** `[offset, length, hex digest | null]`; null = zeroes. */
  written: z.array(z.tuple([z.number().int(), z.number().int(), z.string().nullable()])),
});
export type Manifest = z.output<typeof Manifest>;

export function manifestPath(image: string): string {
  return `${image}.tidemark.json`;
}

export function toWritten(extents: WrittenExtent[]): Manifest['written'] {
  return extents.map((e) => [e.offset, e.length, e.digest ?? null]);
}

export async function writeManifest(
  image: string,
  manifest: z.input<typeof Manifest>,
): Promise<void> {
  const path = manifestPath(image);
  const tmp = `${path}.${randomBytes(4).toString('hex')}.tmp`;
  await writeFile(tmp, JSON.stringify(manifest), { flag: 'wx' });
  await rename(tmp, path);
}

export async function readManifest(image: string): Promise<Manifest | string> {
  let text: string;
  try {
    text = await readFile(manifestPath(image), 'utf8');
  } catch {
    return `no manifest ${manifestPath(image)}`;
  }
  try {
    const parsed = Manifest.safeParse(JSON.parse(text));
    if (!parsed.success)
      return `manifest ${manifestPath(image)} is malformed: ${parsed.error.issues[0]?.path.join('.')}: ${parsed.error.issues[0]?.message}`;
    return parsed.data;
  } catch {
    return `manifest ${manifestPath(image)} is not JSON`;
  }
}
