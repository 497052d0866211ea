import { open, rename, rm, type FileHandle } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { z } from 'zod';
import type { WrittenExtent } from './copy/copy-disk';
import { ManifestEncoder, manifestPath, partialPath, type ManifestHeader } from './protocol';
import { fsyncPath } from './target/qcow2-target';

// Writes the manifest beside a file of a chain as the copy goes (its format: protocol).

/** Text is written out once this much is held. */
const WRITE_AT = 64 * 1024;

/**
 * A manifest being written while its file is copied: the header when the copy starts, each
 * written extent as the copy reports it (in offset order), the end line when it is done. It is
 * written to `<manifest>.partial` and fsynced before the target is moved into place, and
 * itself moved into place after the target: a manifest beside a file always means the file is
 * complete, and a file whose manifest did not make it is not taken for a finished copy.
 */
export class ManifestWriter {
  private readonly encoder = new ManifestEncoder();
  private held = '';
  private position = 0;
  private closed = false;

  private constructor(
    private readonly image: string,
    private readonly partial: string,
    private readonly fh: FileHandle,
  ) {}

  /** Starts the manifest of `image` (whose directory exists) with its header. */
  static async create(
    image: string,
    header: Omit<z.input<typeof ManifestHeader>, 'format' | 'version'>,
  ): Promise<ManifestWriter> {
    const partial = partialPath(manifestPath(image));
    await rm(partial, { force: true }); // a leftover of an interrupted run of ours
    const writer = new ManifestWriter(image, partial, await open(partial, 'wx'));
    writer.held = ManifestEncoder.header({ format: 'tidemark-manifest', version: 2, ...header });
    return writer;
  }

  /** Records the next written extent; the copy calls it in offset order. */
  async add(extent: WrittenExtent): Promise<void> {
    this.held += this.encoder.add(extent);
    if (this.held.length >= WRITE_AT) await this.writeHeld();
  }

  /** Writes the end line and fsyncs; the manifest stays at its partial path until `commit`. */
  async finish(end: Parameters<ManifestEncoder['finish']>[0]): Promise<void> {
    this.held += this.encoder.finish(end);
    await this.writeHeld();
    await this.fh.sync();
    await this.close();
  }

  /** Moves the finished manifest into place (after its file), fsyncing the directory. */
  async commit(): Promise<void> {
    const path = manifestPath(this.image);
    await rename(this.partial, path);
    await fsyncPath(dirname(path));
  }

  /** Stops and removes the partial manifest. */
  async abort(): Promise<void> {
    await this.close().catch(() => undefined);
    await rm(this.partial, { force: true });
  }

  private async writeHeld(): Promise<void> {
    const data = Buffer.from(this.held, 'utf8');
    this.held = '';
    for (let at = 0; at < data.length;) {
      const { bytesWritten } = await this.fh.write(data, at, data.length - at, this.position);
      at += bytesWritten;
      this.position += bytesWritten;
    }
  }

  private async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.fh.close();
  }
}
