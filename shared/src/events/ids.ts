import { z } from 'zod';

// Names that end up in file paths (VM names, disk keys, job ids) are held to a strict pattern:
// no separators, no "..", no leading dot or dash.
const safeName = (max: number) =>
  z
    .string()
    .min(1, 'must not be empty')
    .max(max, `must be at most ${max} characters`)
    .regex(/^[A-Za-z0-9][A-Za-z0-9._-]*$/, {
      message: 'must start with a letter or digit and hold only letters, digits, ".", "_" and "-"',
      abort: true,
    })
    .refine((s) => !s.includes('..'), 'must not contain ".."');

/** A job id: chosen by the hub (or another trusted publisher), unique across job types. */
export const JobId = safeName(128);
/** A VM's name as registered with the hub. */
export const VmName = safeName(128);
/** A disk's key within its VM (for example `disk-2000` or `scsi0-0`). */
export const DiskKey = safeName(64);
/** Id of a repository or policy row. */
export const RecordId = safeName(64);

/**
 * A changed-block-tracking position, VMware's shape `<disk uuid>/<sequence>`; opaque to the
 * ledger. Printable characters only, at most 255.
 */
export const ChangeId = z
  .string()
  .min(1, 'must not be empty')
  .max(255, 'must be at most 255 characters')
  .regex(/^[\x20-\x7e]+$/, 'must hold printable ASCII characters only');

/** A byte count: a whole number from 0 up to 2^53-1. */
export const ByteCount = z
  .number()
  .int('must be a whole number')
  .min(0, 'must not be negative')
  .max(Number.MAX_SAFE_INTEGER);

/** An absolute file path inside a repository (checked against the repository root by the runner). */
export const FilePath = z
  .string()
  .min(1, 'must not be empty')
  .max(4096)
  .regex(/^\//, 'must be an absolute path');

/**
 * A directory that paths are built under (a repository's root): absolute and already normal —
 * no `.` or `..` segment, no empty segment, no trailing slash — so nothing built from it can
 * climb out of it by its spelling. (Symlinks are checked where files are written: the runner.)
 */
export const DirPath = z
  .string()
  .min(1, 'must not be empty')
  .max(1024)
  .regex(/^\//, 'must be an absolute path')
  .refine((p) => !p.includes('\0'), 'must not contain a NUL byte')
  .refine(
    (p) =>
      p === '/' ||
      p
        .slice(1)
        .split('/')
        .every((seg) => seg !== '' && seg !== '.' && seg !== '..'),
    'must be a normal path: no ".", ".." or empty segment, no trailing "/"',
  );

/**
 * Where the qemu driver reads a disk: an image's absolute path (read offline), or a disk a
 * running qemu-storage-daemon serves, `qemu-live:<QMP socket>?node=<node name>[&nbd=<NBD socket>]`
 * with absolute socket paths.
 */
export const DiskSource = z
  .string()
  .min(1, 'must not be empty')
  .max(4096)
  .regex(
    /^(\/[^?]*|qemu-live:\/[^?&]*\?node=[A-Za-z][A-Za-z0-9_.-]{0,127}(&nbd=\/[^?&]*)?)$/,
    'must be an absolute image path or qemu-live:<absolute QMP socket>?node=<node>[&nbd=<absolute NBD socket>]',
  );
