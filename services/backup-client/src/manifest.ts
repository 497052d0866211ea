import { randomBytes } from 'node:crypto';
import { open, readFile, rename, rm } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { z } from 'zod';
import type { WrittenExtent } from './copy/copy-disk';
import { Manifest, manifestPath } from './protocol';

// Writes and reads the manifests beside a chain's files; their shape is the runner's too (protocol).

export function toWritten(extents: WrittenExtent[]): Manifest['written'] {
  return extents.map((e) => [e.offset, e.length, e.digest ?? null]);
}

/**
 * Writes the manifest of `image` durably: a temporary file, fsynced, renamed over the manifest,
 * the directory fsynced. A failure (a full disk) leaves no temporary file and the old manifest.
 */
export async function writeManifest(
  image: string,
  manifest: z.input<typeof Manifest>,
): Promise<void> {
  const path = manifestPath(image);
  const tmp = `${path}.${randomBytes(4).toString('hex')}.tmp`;
  try {
    const fh = await open(tmp, 'wx');
    try {
      await fh.writeFile(JSON.stringify(manifest));
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, path);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
  const dir = await open(dirname(path), 'r');
  try {
    await dir.sync();
  } finally {
    await dir.close();
  }
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
