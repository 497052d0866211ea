import { isAbsolute } from 'node:path';
import { ClientError } from '../errors';

/**
 * How the drivers read a disk's `source`, in one place: the drivers take their `accepts` from
 * here, and the appliance-runner checks the paths a source opens (`sourcePaths`) against its
 * own source roots before the client ever starts, with this same reading of the string.
 */

const LIVE_PREFIX = 'qemu-live:';

/** `qemu-live:<QMP socket>?node=<node name>[&nbd=<NBD server socket>]`. */
export interface LiveSource {
  qmpSocket: string;
  node: string;
  /** Unix socket of the daemon's running NBD server; without it the driver starts its own. */
  nbdSocket: string | null;
}

/** The qemu-live driver's sources: a disk a running qemu-storage-daemon serves. */
export function isLiveSource(source: string): boolean {
  return source.startsWith(LIVE_PREFIX);
}

/** The qemu (image) driver's sources: an absolute image path (the live driver is asked first). */
export function isImageSource(source: string): boolean {
  return !isLiveSource(source) && isAbsolute(source);
}

export function parseLiveSource(source: string): LiveSource {
  const rest = source.slice(LIVE_PREFIX.length);
  const q = rest.indexOf('?');
  const qmpSocket = q < 0 ? rest : rest.slice(0, q);
  const params = new URLSearchParams(q < 0 ? '' : rest.slice(q + 1));
  const node = params.get('node');
  const bad = (why: string): ClientError =>
    new ClientError('SOURCE_UNAVAILABLE', `source "${source}": ${why}`, false);
  if (!isAbsolute(qmpSocket)) throw bad('the QMP socket must be an absolute path');
  if (!node || !/^[A-Za-z][A-Za-z0-9_.-]{0,127}$/.test(node))
    throw bad('node=<node name> is required (letters, digits, "_", ".", "-")');
  const nbd = params.get('nbd');
  if (nbd !== null && !isAbsolute(nbd)) throw bad('nbd= must be an absolute socket path');
  return { qmpSocket, node, nbdSocket: nbd };
}

/** A file or socket the client opens to read a source, and what it is to the source. */
export interface SourcePath {
  what: 'image' | 'QMP socket' | 'NBD socket';
  path: string;
}

/**
 * Every path the client opens for `source`, as its drivers read it: the image of an image
 * source; the QMP socket, and the NBD socket when one is named, of a live disk. (A live disk
 * without `nbd=` gets an NBD server the driver starts in the job's own work directory.) Throws
 * ClientError for a source no driver reads, or a live disk spelled wrong.
 */
export function sourcePaths(source: string): SourcePath[] {
  if (isLiveSource(source)) {
    const live = parseLiveSource(source);
    return [
      { what: 'QMP socket', path: live.qmpSocket },
      ...(live.nbdSocket === null ? [] : [{ what: 'NBD socket' as const, path: live.nbdSocket }]),
    ];
  }
  if (isImageSource(source)) return [{ what: 'image', path: source }];
  throw new ClientError(
    'SOURCE_UNAVAILABLE',
    `no source driver handles "${source}" (an absolute image path, or ${LIVE_PREFIX}<QMP socket>?node=<node>)`,
    false,
  );
}
