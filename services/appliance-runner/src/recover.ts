import { stat } from 'node:fs/promises';
import type { CompletedDiskData, StartData } from '@tidemark/shared';
import { readManifest, type Manifest } from '@tidemark/backup-client/protocol';

/**
 * The result of an earlier attempt of this backup job whose copy finished on every disk (each
 * target renamed into place with this job's manifest beside it) but whose runner died before
 * the start was acknowledged — perhaps even before the result reached the bus. Its files are a
 * complete backup with recorded change tracking on the sources: they are reported again, never
 * removed and copied anew. Null when any disk lacks a finished copy of this job.
 */
export async function finishedCopy(
  jobId: string,
  start: StartData,
): Promise<CompletedDiskData[] | null> {
  const disks: CompletedDiskData[] = [];
  for (const d of start.disks) {
    const target = await stat(d.targetPath).catch(() => null);
    if (!target?.isFile()) return null;
    let manifest: Manifest;
    try {
      // Read as a stream and checked to its end line (bounded memory, any disk size).
      manifest = await readManifest(d.targetPath);
    } catch {
      return null;
    }
    if (manifest.jobId !== jobId || manifest.diskKey !== d.diskKey) return null;
    disks.push({
      diskKey: d.diskKey,
      changeId: manifest.changeId,
      // Zeroed ranges were not copied.
      bytesTransferred: manifest.dataBytes,
      targetPath: d.targetPath,
      bytesTotal: manifest.size,
      fullReason: manifest.fullReason,
      canary: manifest.canary,
    });
  }
  return disks;
}
